// Package tracetest is an in-process OTLP/gRPC trace collector for tests:
// it keeps the spans proxies export to it.
package tracetest

import (
	"context"
	"encoding/hex"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	collectorv1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
)

// Span is an exported span as the collector received it.
type Span struct {
	Service      string // the resource's service.name
	Name         string
	TraceID      string // hex
	SpanID       string
	ParentSpanID string // "" for a root span
	Kind         string // "server", "client"
	Attributes   map[string]string
}

// Collector serves the OTLP TraceService on loopback.
type Collector struct {
	collectorv1.UnimplementedTraceServiceServer
	Addr string

	mu    sync.Mutex
	spans []Span
}

// Start serves a Collector until the test ends.
func Start(t testing.TB) *Collector {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &Collector{Addr: ln.Addr().String()}
	srv := grpc.NewServer()
	collectorv1.RegisterTraceServiceServer(srv, c)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return c
}

// Export keeps the request's spans.
func (c *Collector) Export(_ context.Context, req *collectorv1.ExportTraceServiceRequest) (*collectorv1.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := attrs(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{Service: service, Name: s.GetName(), TraceID: hex.EncodeToString(s.GetTraceId()),
					SpanID: hex.EncodeToString(s.GetSpanId()), Attributes: attrs(s.GetAttributes())}
				if p := s.GetParentSpanId(); len(p) > 0 {
					sp.ParentSpanID = hex.EncodeToString(p)
				}
				switch s.GetKind().String() {
				case "SPAN_KIND_SERVER":
					sp.Kind = "server"
				case "SPAN_KIND_CLIENT":
					sp.Kind = "client"
				default:
					sp.Kind = s.GetKind().String()
				}
				c.spans = append(c.spans, sp)
			}
		}
	}
	return &collectorv1.ExportTraceServiceResponse{}, nil
}

// attrs renders attributes as strings: ints in decimal.
func attrs(kvs []*commonv1.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch v.GetValue().(type) {
		case *commonv1.AnyValue_IntValue:
			m[kv.GetKey()] = strconv.FormatInt(v.GetIntValue(), 10)
		default:
			m[kv.GetKey()] = v.GetStringValue()
		}
	}
	return m
}

// Spans returns the spans received so far.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Span(nil), c.spans...)
}

// Wait returns the spans once there are at least n, failing the test
// past timeout.
func (c *Collector) Wait(t testing.TB, n int, timeout time.Duration) []Span {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if s := c.Spans(); len(s) >= n {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector has %d spans after %s, want %d", len(c.Spans()), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
