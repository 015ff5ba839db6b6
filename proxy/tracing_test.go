package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/trace/tracetest"
)

func TestTracingConfig(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		err    string
	}{
		{name: "default", mutate: func(*Config) {}},
		{name: "collector", mutate: func(c *Config) { c.TracingCollector = "jaeger.tracing:4317" }},
		{name: "collector without port", mutate: func(c *Config) { c.TracingCollector = "jaeger" }, err: "tracing-collector"},
		{name: "rate above 1", mutate: func(c *Config) { c.TracingSampleRate = 1.5 }, err: "tracing-sample-rate"},
		{name: "negative rate", mutate: func(c *Config) { c.TracingSampleRate = -0.1 }, err: "tracing-sample-rate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mutate(&c)
			err := c.Validate()
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("Validate() = %v, want an error naming %q", err, tc.err)
			}
		})
	}
	if c := DefaultConfig(); c.TracingSampleRate != 1 {
		t.Errorf("default tracing-sample-rate %v, want 1", c.TracingSampleRate)
	}
}

// TestTracingInbound: with --tracing-collector a request through the
// inbound side is exported as a server span of "<pod>.<namespace>".
func TestTracingInbound(t *testing.T) {
	col := tracetest.Start(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("Traceparent"))
	}))
	t.Cleanup(srv.Close)
	p := startProxy(t, srv.Listener.Addr().String(), func(c *Config) {
		c.TracingCollector, c.PodName, c.Namespace = col.Addr, "web-1", "demo"
	})
	res, err := http.Get("http://" + p.inbound + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	tp, _ := io.ReadAll(res.Body)
	res.Body.Close()
	spans := col.Wait(t, 1, 10*time.Second) // exported within the batch wait
	s := spans[0]
	if s.Service != "web-1.demo" || s.Kind != "server" || s.ParentSpanID != "" || !strings.Contains(string(tp), s.TraceID+"-"+s.SpanID) {
		t.Errorf("span %+v, app got traceparent %q: want a root server span of web-1.demo, passed on", s, tp)
	}
}
