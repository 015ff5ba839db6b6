package trace

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/proxy/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTracer(t testing.TB, cfg Config) *Tracer {
	t.Helper()
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tr.Shutdown(ctx)
	})
	return tr
}

func flush(t testing.TB, tr *Tracer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.tp.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSpanAndPropagation(t *testing.T) {
	tests := []struct {
		name    string
		rate    float64
		in      headers
		sampled bool
		// want are the fields passed on, "<span>" standing for the new
		// span's ID and "<trace>" for its trace's.
		want    headers
		sameTID bool
	}{
		{name: "w3c sampled", rate: 0, in: headers{"traceparent": "00-" + tid + "-" + sid + "-01", "tracestate": "a=b"}, sampled: true, sameTID: true,
			want: headers{"traceparent": "00-" + tid + "-<span>-01", "tracestate": "a=b"}},
		{name: "w3c not sampled, rate 1", rate: 1, in: headers{"traceparent": "00-" + tid + "-" + sid + "-00"}, sampled: false, sameTID: true,
			want: headers{"traceparent": "00-" + tid + "-<span>-00"}},
		{name: "no context, rate 1", rate: 1, in: headers{}, sampled: true,
			want: headers{"traceparent": "00-<trace>-<span>-01"}},
		{name: "no context, rate 0", rate: 0, in: headers{}, sampled: false,
			want: headers{"traceparent": "00-<trace>-<span>-00"}},
		{name: "b3 single deferred, rate 1", rate: 1, in: headers{"b3": tid + "-" + sid}, sampled: true, sameTID: true,
			want: headers{"traceparent": "00-" + tid + "-<span>-01", "b3": tid + "-<span>-1"}},
		{name: "b3 multi", rate: 0, in: headers{"x-b3-traceid": tid, "x-b3-spanid": sid, "x-b3-sampled": "1", "x-b3-flags": "1"}, sampled: true, sameTID: true,
			want: headers{"traceparent": "00-" + tid + "-<span>-01", "x-b3-traceid": tid, "x-b3-spanid": "<span>",
				"x-b3-parentspanid": sid, "x-b3-sampled": "1"}},
		{name: "invalid traceparent starts a trace", rate: 1, in: headers{"traceparent": "00-" + strings.ToUpper(tid) + "-" + sid + "-01", "tracestate": "a=b"}, sampled: true,
			want: headers{"traceparent": "00-<trace>-<span>-01"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			tr := newTracer(t, Config{SampleRate: tc.rate, ServiceName: "web-1.demo", Exporter: exp})
			h := headers{}
			for k, v := range tc.in {
				h[k] = v
			}
			s := tr.Start(metrics.Outbound, "GET", time.Now(), h)
			s.Inject(h)
			s.End(&Outcome{Direction: metrics.Outbound, Status: 200, GRPCStatus: -1, PeerID: "spiffe://x/ns/a/sa/b", Retries: 1})
			if s.Sampled() != tc.sampled {
				t.Errorf("sampled = %v, want %v", s.Sampled(), tc.sampled)
			}
			if tc.sameTID && s.TraceID() != tid {
				t.Errorf("trace ID %s, want the caller's %s", s.TraceID(), tid)
			}
			want := headers{}
			for k, v := range tc.want {
				v = strings.ReplaceAll(v, "<span>", s.sc.SpanID().String())
				want[k] = strings.ReplaceAll(v, "<trace>", s.TraceID())
			}
			if len(h) != len(want) {
				t.Errorf("fields %v, want %v", h, want)
			}
			for k, v := range want {
				if h[k] != v {
					t.Errorf("%s: %q, want %q", k, h[k], v)
				}
			}
			flush(t, tr)
			spans := exp.GetSpans()
			if !tc.sampled {
				if len(spans) != 0 {
					t.Errorf("exported %d spans of an unsampled request", len(spans))
				}
				return
			}
			if len(spans) != 1 {
				t.Fatalf("exported %d spans, want 1", len(spans))
			}
			got := spans[0]
			if got.Name != "outbound GET" || got.SpanKind.String() != "client" {
				t.Errorf("span %q kind %v, want \"outbound GET\" client", got.Name, got.SpanKind)
			}
			if tc.sameTID && got.Parent.SpanID().String() != sid {
				t.Errorf("parent %s, want the caller's span %s", got.Parent.SpanID(), sid)
			}
			if !tc.sameTID && got.Parent.IsValid() {
				t.Errorf("a new trace's span has parent %v", got.Parent)
			}
			attrs := map[string]string{}
			for _, kv := range got.Attributes {
				attrs[string(kv.Key)] = kv.Value.String()
			}
			if attrs["mesh.peer.identity"] != "spiffe://x/ns/a/sa/b" || attrs["http.response.status_code"] != "200" || attrs["mesh.retries"] != "1" {
				t.Errorf("attributes %v", attrs)
			}
		})
	}
}

// TestNilTracer: tracing off touches no header.
func TestNilTracer(t *testing.T) {
	var tr *Tracer
	h := headers{"traceparent": "00-" + tid + "-" + sid + "-01"}
	s := tr.Start(metrics.Inbound, "GET", time.Now(), h)
	s.Inject(h)
	s.End(&Outcome{})
	if s != nil || h["traceparent"] != "00-"+tid+"-"+sid+"-01" || len(h) != 1 || s.TraceID() != "" {
		t.Errorf("nil tracer changed something: %v %v", s, h)
	}
}

// stuckExporter holds every export until released.
type stuckExporter struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (e *stuckExporter) ExportSpans(ctx context.Context, _ []sdktrace.ReadOnlySpan) error {
	e.once.Do(func() { close(e.entered) })
	select {
	case <-e.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *stuckExporter) Shutdown(context.Context) error { return nil }

func TestDropsWhenFull(t *testing.T) {
	exp := &stuckExporter{entered: make(chan struct{}), release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	tr := newTracer(t, Config{SampleRate: 1, Exporter: exp, Queue: 4, Registry: reg})
	defer close(exp.release)
	end := func(n int) {
		for range n {
			tr.Start(metrics.Inbound, "GET", time.Now(), headers{}).End(&Outcome{GRPCStatus: -1})
		}
	}
	end(1)
	go tr.tp.ForceFlush(context.Background()) // sends the one span: the exporter holds it
	<-exp.entered
	start := time.Now()
	end(4 + 10) // 4 fill the queue, 10 are dropped
	if d := time.Since(start); d > time.Second {
		t.Errorf("ending spans took %s while the exporter was stuck", d)
	}
	if got := tr.Dropped(); got != 10 {
		t.Errorf("dropped %d, want 10", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "mesh_proxy_trace_spans_dropped_total" {
			found = mf.GetMetric()[0].GetCounter().GetValue() == 10
		}
	}
	if !found {
		t.Error("mesh_proxy_trace_spans_dropped_total is not 10")
	}
}

// TestUnreachableCollector: with the OTLP exporter pointed at a port
// nobody listens on, starting and ending spans takes no longer, and
// Shutdown returns within its context.
func TestUnreachableCollector(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	tr, err := New(Config{Collector: addr, SampleRate: 1, ServiceName: "t"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 5000 {
		tr.Start(metrics.Inbound, "GET", time.Now(), headers{}).End(&Outcome{GRPCStatus: -1})
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("5000 spans took %s with the collector down", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	tr.Shutdown(ctx)
	if ctx.Err() != nil {
		t.Errorf("Shutdown outlived its context")
	}
	if tr.Dropped() == 0 {
		t.Errorf("no span counted as dropped with the collector down")
	}
}
