package proxy

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	tapv1 "github.com/mesh-dev/mesh/api/tap/v1"
	"github.com/mesh-dev/mesh/proxy/tap"
	"github.com/mesh-dev/mesh/proxy/trace/tracetest"
)

// tapClient connects to p's tap server proving identity as, and checking
// the proxy is proxyID.
func tapClient(t *testing.T, pki *meshPKI, p *testProxy, as, proxyID spiffeid.ID) tapv1.TapClient {
	t.Helper()
	addr := p.TapAddr()
	if addr == nil {
		t.Fatal("proxy serves no tap")
	}
	cfg := tlsconfig.MTLSClientConfig(pki.ca.IssueSVID(t, as), pki.ca.Bundle(), tlsconfig.AuthorizeID(proxyID))
	conn, err := grpc.NewClient("passthrough:///"+addr.String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return tapv1.NewTapClient(conn)
}

// TestTap: the controller taps a meshed proxy's requests over mutual TLS;
// another workload of the mesh cannot.
func TestTap(t *testing.T) {
	pki := startPKI(t)
	app := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	controller := pki.ca.ID("mesh-system", "mesh-controller")
	proxyID := pki.ca.ID("shop", "api")
	p := startProxy(t, app, pki.withIdentity(t, "shop", "api"), func(c *Config) {
		c.TapAddr, c.TapClientID = "127.0.0.1:0", controller.String()
	})
	waitReady(t, p)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := tapClient(t, pki, p, controller, proxyID).Watch(ctx, &tapv1.WatchRequest{PathPrefix: "/tapped"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.tapHub.Watchers() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the controller's watch never reached the hub")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p.sides[0].tap != p.tapHub || p.sides[1].tap != p.tapHub {
		t.Fatal("the sides do not publish to the proxy's tap hub")
	}
	hc := h1Client(t)
	for _, path := range []string{"/other", "/tapped/1"} {
		res, err := hc.Get("http://" + p.inbound + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	closeIdle(t, hc.Transport.(*http.Transport))
	// A marker published straight to the hub ends the wait: every event
	// of the requests above is queued before it.
	p.tapHub.Request(tap.Request{Direction: "inbound", Method: "GET", Path: "/tapped/end"}).
		Response(tap.Response{Status: 200, GRPCStatus: -1, Success: true})
	var got []string
	for len(got) == 0 || got[len(got)-1] != "inbound GET /tapped/end RESPONSE" {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv after %q: %v", got, err)
		}
		got = append(got, strings.Join([]string{ev.GetDirection(), ev.GetMethod(), ev.GetPath(), ev.GetType().String()}, " "))
	}
	if got[0] != "inbound GET /tapped/1 REQUEST" {
		t.Errorf("first event %q, want the request to /tapped/1 (all: %q)", got[0], got)
	}
	for _, ev := range got {
		if !strings.Contains(ev, " /tapped/") {
			t.Errorf("event %q: outside the watch's filter", ev)
		}
	}

	// Another workload of the mesh is refused.
	other, err := tapClient(t, pki, p, pki.ca.ID("shop", "web"), proxyID).Watch(ctx, &tapv1.WatchRequest{})
	if err == nil {
		_, err = other.Recv()
	}
	if c := status.Code(err); c != codes.Unavailable && c != codes.PermissionDenied {
		t.Errorf("tap as shop/web: %v, want refused", err)
	}
}

// TestTapOff: without an identity or a client ID there is no tap
// listener, and a client ID that is not a SPIFFE ID of the trust domain is
// a configuration error.
func TestTapOff(t *testing.T) {
	pki := startPKI(t)
	app := backend(t, http.NotFoundHandler())
	controller := pki.ca.ID("mesh-system", "mesh-controller").String()
	tapAt := func(id string) func(*Config) {
		return func(c *Config) { c.TapAddr, c.TapClientID = "127.0.0.1:0", id }
	}
	t.Run("no identity", func(t *testing.T) {
		if addr := startProxy(t, app, tapAt(controller)).TapAddr(); addr != nil {
			t.Errorf("TapAddr() = %v, want no tap listener", addr)
		}
	})
	t.Run("no client id", func(t *testing.T) {
		p := startProxy(t, app, pki.withIdentity(t, "shop", "api"), tapAt(""))
		if addr := p.TapAddr(); addr != nil {
			t.Errorf("TapAddr() = %v, want no tap listener", addr)
		}
		if p.tapHub == nil {
			t.Error("no hub: the sides need one regardless")
		}
	})
	for _, bad := range []string{"mesh-controller", "spiffe://cluster.local/ns/a b", "spiffe://other.domain/ns/mesh-system/sa/mesh-controller"} {
		t.Run("bad id "+bad, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.InboundAddr, cfg.OutboundAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
			pki.withIdentity(t, "shop", "api")(&cfg)
			tapAt(bad)(&cfg)
			_, err := New(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), "tap-client-id") {
				t.Errorf("New with tap-client-id %q: %v, want an error naming tap-client-id", bad, err)
			}
		})
	}
}

// TestTapTraceID: a tapped request carries the trace ID of the proxy's
// span when that span is exported, over HTTP/1.1 and h2c alike; a request
// whose context says "not sampled" carries none, whatever trace ID its
// header names.
func TestTapTraceID(t *testing.T) {
	const clientTrace = "0af7651916cd43dd8448eb211c80319c"
	for _, mode := range []struct {
		name   string
		client func(testing.TB) *http.Client
	}{{"http1", h1Client}, {"h2c", h2cClient}} {
		t.Run(mode.name, func(t *testing.T) {
			pki := startPKI(t)
			col := tracetest.Start(t)
			app := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, r.Header.Get("Traceparent"))
			}))
			controller := pki.ca.ID("mesh-system", "mesh-controller")
			p := startProxy(t, app, pki.withIdentity(t, "shop", "api"), func(c *Config) {
				c.TapAddr, c.TapClientID = "127.0.0.1:0", controller.String()
				c.TracingCollector, c.PodName, c.Namespace = col.Addr, "api-1", "shop"
			})
			waitReady(t, p)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			stream, err := tapClient(t, pki, p, controller, pki.ca.ID("shop", "api")).Watch(ctx, &tapv1.WatchRequest{})
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for p.tapHub.Watchers() != 1 {
				if time.Now().After(deadline) {
					t.Fatal("the controller's watch never reached the hub")
				}
				time.Sleep(5 * time.Millisecond)
			}

			hc := mode.client(t)
			send := func(path, traceparent string) string {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.inbound+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				if traceparent != "" {
					req.Header.Set("Traceparent", traceparent)
				}
				res, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				got, _ := io.ReadAll(res.Body)
				return string(got)
			}
			sentOn := send("/fresh", "")                                        // the proxy starts the trace, sampled at rate 1
			send("/unsampled", "00-"+clientTrace+"-b7ad6b7169203331-00")        // the client decided: not sampled
			childOn := send("/child", "00-"+clientTrace+"-b7ad6b7169203331-01") // the proxy's span joins the client's trace
			p.tapHub.Request(tap.Request{Path: "/end"}).Response(tap.Response{GRPCStatus: -1})

			got := map[string][]string{} // path: trace IDs of its request and response
			for {
				ev, err := stream.Recv()
				if err != nil {
					t.Fatalf("Recv after %v: %v", got, err)
				}
				if ev.GetPath() == "/end" && ev.GetType() == tapv1.Event_RESPONSE {
					break
				}
				got[ev.GetPath()] = append(got[ev.GetPath()], ev.GetTraceId())
			}
			fresh := traceIDIn(t, sentOn)
			want := map[string][]string{
				"/fresh":     {fresh, fresh},
				"/unsampled": {"", ""},
				"/child":     {clientTrace, clientTrace},
				"/end":       {""},
			}
			if traceIDIn(t, childOn) != clientTrace {
				t.Errorf("traceparent sent on %q, want the client's trace %s", childOn, clientTrace)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("trace IDs per tapped path (-want +got):\n%s", diff)
			}
			// The linked traces exist: the proxy exported their spans.
			exported := map[string]bool{}
			for _, s := range col.Wait(t, 2, 10*time.Second) {
				exported[s.TraceID] = true
			}
			if !exported[fresh] || !exported[clientTrace] {
				t.Errorf("exported traces %v, want %s and %s", exported, fresh, clientTrace)
			}
		})
	}
}

// traceIDIn returns the trace ID of a W3C traceparent.
func traceIDIn(t testing.TB, traceparent string) string {
	t.Helper()
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		t.Fatalf("traceparent %q: want version-traceid-spanid-flags", traceparent)
	}
	return parts[1]
}
