package httpproxy_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/tap"
)

// TestTap: a watcher of the proxy's Hub sees each request as it arrives
// and its response with status, gRPC status and success, and the query
// string is not published.
func TestTap(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/grpc" {
			w.Header().Set("Grpc-Status", "14")
		}
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(backend.Close)
	hub := tap.NewHub()
	p := httpproxy.New(httpproxy.Config{Direction: metrics.Inbound, Metrics: metrics.New(), Log: slog.New(&panicLog{}), Tap: hub})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	w, err := hub.Watch(tap.Filter{PathPrefix: "/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	ln := loopback(t)
	to := netip.MustParseAddrPort(backend.Listener.Addr().String())
	exchange(t, p, ln, to, []byte("GET /ok?secret=1 HTTP/1.1\r\nHost: web\r\n\r\n"+
		"POST /fail HTTP/1.1\r\nHost: web\r\nContent-Length: 0\r\n\r\n"+
		"GET /grpc HTTP/1.1\r\nHost: web\r\n\r\n"))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	want := []struct {
		path, method string
		status, grpc int
		success      bool
	}{{"/ok", "GET", 200, -1, true}, {"/fail", "POST", 500, -1, false}, {"/grpc", "GET", 200, 14, false}}
	for _, wt := range want {
		req, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		res, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if req.Response != nil || res.Response == nil || req.ID != res.ID {
			t.Fatalf("want a request then its response, got %+v then %+v", req, res)
		}
		r := req.Request
		if r.Path != wt.path || r.Method != wt.method || r.Authority != "web" || r.Direction != "inbound" || r.Dst != to.String() {
			t.Errorf("request event %+v, want %s %s to web at %s", r, wt.method, wt.path, to)
		}
		got := res.Response
		if got.Status != wt.status || got.GRPCStatus != wt.grpc || got.Success != wt.success || got.Latency <= 0 {
			t.Errorf("%s: response event %+v, want status %d grpc %d success %v", wt.path, got, wt.status, wt.grpc, wt.success)
		}
	}
}
