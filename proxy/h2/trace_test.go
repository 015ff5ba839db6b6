package h2

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/trace"
	"github.com/mesh-dev/mesh/proxy/trace/tracetest"
)

// TestTrace: an outbound gRPC-like request with B3 headers reaches its
// target with this proxy's span as the parent in both traceparent and b3,
// and the span is exported as a client span.
func TestTrace(t *testing.T) {
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	got := make(chan http.Header, 1)
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
	}))
	col := tracetest.Start(t)
	tr, err := trace.New(trace.Config{Collector: col.Addr, SampleRate: 0, ServiceName: "web-1.demo"})
	if err != nil {
		t.Fatal(err)
	}
	p := startTestProxy(t, backend, func(c *Config, _ *httpproxy.ConnInfo) { c.Tracer, c.Direction = tr, metrics.Outbound })
	req, _ := http.NewRequest("GET", "http://"+p.addr+"/pkg.Svc/Get", nil)
	req.Header.Set("b3", traceID+"-"+spanID+"-1")
	res, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	h := <-got
	parts := strings.Split(h.Get("Traceparent"), "-")
	if len(parts) != 4 || parts[1] != traceID || parts[2] == spanID || parts[3] != "01" {
		t.Fatalf("target got traceparent %q: want trace %s, a new span, sampled", h.Get("Traceparent"), traceID)
	}
	if b3 := h.Get("B3"); b3 != traceID+"-"+parts[2]+"-1" {
		t.Errorf("target got b3 %q, want %s-%s-1", b3, traceID, parts[2])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr.Shutdown(ctx)
	s := col.Wait(t, 1, 5*time.Second)[0]
	if s.TraceID != traceID || s.SpanID != parts[2] || s.ParentSpanID != spanID || s.Kind != "client" || s.Name != "outbound GET" {
		t.Errorf("span %+v: want client span %s, child of %s", s, parts[2], spanID)
	}
}
