package h1

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/accesslog"
	"github.com/mesh-dev/mesh/proxy/trace"
	"github.com/mesh-dev/mesh/proxy/trace/tracetest"
)

const (
	testTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	testSpanID  = "00f067aa0ba902b7"
)

func newTracer(t testing.TB, collector string) *trace.Tracer {
	t.Helper()
	tr, err := trace.New(trace.Config{Collector: collector, SampleRate: 1, ServiceName: "web-1.demo"})
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

// TestTrace: a request with a sampled traceparent reaches its target with
// a child of it, the proxy's span is exported as that child, and the
// access log names the trace.
func TestTrace(t *testing.T) {
	got := make(chan string, 1)
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
	}))
	col := tracetest.Start(t)
	tr := newTracer(t, col.Addr)
	l, out := newAccessLog(t, accesslog.JSON)
	p := startTestProxy(t, backend, func(c *Config) { c.Tracer, c.AccessLog = tr, l })
	req, _ := http.NewRequest("GET", "http://"+p.addr+"/x", nil)
	req.Header.Set("Traceparent", "00-"+testTraceID+"-"+testSpanID+"-01")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	tp := <-got
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || parts[1] != testTraceID || parts[2] == testSpanID || parts[3] != "01" {
		t.Fatalf("target got traceparent %q: want trace %s, a new span, sampled", tp, testTraceID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr.Shutdown(ctx) // exports what is queued
	spans := col.Wait(t, 1, 5*time.Second)
	s := spans[0]
	if s.TraceID != testTraceID || s.SpanID != parts[2] || s.ParentSpanID != testSpanID || s.Kind != "server" ||
		s.Service != "web-1.demo" || s.Attributes["http.response.status_code"] != "200" {
		t.Errorf("span %+v: want the child of %s with ID %s, a 200 server span of web-1.demo", s, testSpanID, parts[2])
	}
	if line := out.lines(t, 1)[0]; !strings.Contains(line, `"trace_id":"`+testTraceID+`"`) {
		t.Errorf("access log line %s has no trace_id %s", line, testTraceID)
	}
}

// TestTraceCollectorDown: with the collector unreachable, requests go as
// they would, and as fast.
func TestTraceCollectorDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	p := startTestProxy(t, backend, func(c *Config) { c.Tracer = newTracer(t, dead) })
	start := time.Now()
	for range 200 {
		res, err := http.Get("http://" + p.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("got %d %q, want 200 ok", res.StatusCode, b)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("200 requests took %s with the collector down", d)
	}
}
