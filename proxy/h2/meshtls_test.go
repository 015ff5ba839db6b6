package h2

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/identity/meshtls"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// TestHTTP2InsideMeshTLS: gRPC from a client through an outbound proxy,
// HTTP/2 inside mesh TLS to an inbound proxy, and on to its application,
// as between two pods: each side counts the request under the identity
// the other proved.
func TestHTTP2InsideMeshTLS(t *testing.T) {
	ca := identitytest.NewCA(t)
	webID, apiID := ca.ID("shop", "web"), ca.ID("shop", "api")
	webSVID, apiSVID := ca.IssueSVID(t, webID), ca.IssueSVID(t, apiID)
	app, _ := startGRPC(t)

	// The inbound proxy: mesh TLS terminated, then its HTTP/2 served.
	inMetrics := metrics.New()
	in := New(Config{Direction: metrics.Inbound, Metrics: inMetrics})
	t.Cleanup(func() { in.Shutdown(context.Background()) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	serverTLS := meshtls.ServerConfig(apiSVID, ca.Bundle(), nil)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(c, serverTLS)
				if err := tc.Handshake(); err != nil {
					c.Close()
					return
				}
				peer, _ := meshtls.PeerID(tc.ConnectionState())
				in.Serve(tc, httpproxy.ConnInfo{Target: netip.MustParseAddrPort(app), ClientID: peer.String()})
			}()
		}
	}()

	inbound := netip.MustParseAddrPort(ln.Addr().String())
	out := startTestProxy(t, "127.0.0.1:1", func(c *Config, _ *httpproxy.ConnInfo) {
		c.Direction = metrics.Outbound
		c.Pick = func(context.Context, netip.AddrPort, string) (httpproxy.Endpoint, error) {
			return httpproxy.Endpoint{Addr: inbound, Identity: apiID.String()}, nil
		}
		c.MeshTLS = func(ctx context.Context, c net.Conn, identity string) (net.Conn, error) {
			tc := tls.Client(c, meshtls.ClientConfig(webSVID, ca.Bundle(), spiffeid.RequireFromString(identity)))
			return tc, tc.HandshakeContext(ctx)
		}
	})
	client := grpcClient(t, out.addr)
	body := bytes.Repeat([]byte("m"), 100<<10)
	for range 3 {
		res, err := client.UnaryCall(context.Background(), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(res.GetPayload().GetBody(), body) {
			t.Fatal("the echo differs")
		}
	}
	count := func(m *metrics.Metrics, labels ...string) float64 {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		fams, err := metricstest.Parse(bytes.NewReader(rec.Body.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		return fams.Sum("mesh_proxy_http_requests_total", labels...)
	}
	if n := count(out.m, "server_id", apiID.String()); n != 3 {
		t.Errorf("outbound counted %v requests to %s, want 3", n, apiID)
	}
	if n := count(inMetrics, "client_id", webID.String()); n != 3 {
		t.Errorf("inbound counted %v requests from %s, want 3", n, webID)
	}
}
