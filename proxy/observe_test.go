package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/accesslog"
	"github.com/mesh-dev/mesh/proxy/trace/tracetest"
)

// TestObserveMeshHop: a request from one meshed pod to another over mesh
// TLS gives one trace of two spans, the server proxy's the child of the
// client proxy's, and one access log line on each side naming the peer's
// identity.
func TestObserveMeshHop(t *testing.T) {
	col := tracetest.Start(t)
	out := &lockedBuffer{}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("Traceparent"))
	}))
	t.Cleanup(app.Close)
	pair := startMeshPair(t, app.Listener.Addr().String(), true, func(c *Config) {
		c.AccessLog, c.AccessLogOut, c.TracingCollector = accesslog.JSON, out, col.Addr
	})
	res, err := http.Get("http://" + pair.outbound + "/orders")
	if err != nil {
		t.Fatal(err)
	}
	tp, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}

	spans := col.Wait(t, 2, 10*time.Second)
	var client, server tracetest.Span
	for _, s := range spans {
		switch s.Kind {
		case "client":
			client = s
		case "server":
			server = s
		}
	}
	if client.TraceID == "" || server.TraceID != client.TraceID || server.ParentSpanID != client.SpanID || client.ParentSpanID != "" {
		t.Fatalf("spans %+v: want a root client span and a server span, its child, in one trace", spans)
	}
	if want := "00-" + server.TraceID + "-" + server.SpanID + "-01"; string(tp) != want {
		t.Errorf("the application got traceparent %q, want %q", tp, want)
	}
	if got := server.Attributes["mesh.peer.identity"]; !strings.HasSuffix(got, "/ns/shop/sa/web") {
		t.Errorf("server span's peer identity %q, want web's", got)
	}
	if got := client.Attributes["mesh.peer.identity"]; !strings.HasSuffix(got, "/ns/shop/sa/api") {
		t.Errorf("client span's peer identity %q, want api's", got)
	}

	waitFor(t, func() bool { return strings.Count(out.String(), "\n") == 2 })
	recs := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		recs[r["direction"].(string)] = r
	}
	in, outb := recs["inbound"], recs["outbound"]
	if in == nil || outb == nil {
		t.Fatalf("want an inbound and an outbound line, got %v", recs)
	}
	if id, _ := in["client_identity"].(string); !strings.HasSuffix(id, "/ns/shop/sa/web") {
		t.Errorf("inbound client_identity %q, want web's", id)
	}
	if id, _ := outb["server_identity"].(string); !strings.HasSuffix(id, "/ns/shop/sa/api") {
		t.Errorf("outbound server_identity %q, want api's", id)
	}
	if in["trace_id"] != client.TraceID || outb["trace_id"] != client.TraceID {
		t.Errorf("trace_id %v and %v, want %s on both", in["trace_id"], outb["trace_id"], client.TraceID)
	}
}
