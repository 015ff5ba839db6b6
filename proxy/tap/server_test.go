package tap_test

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	tapv1 "github.com/mesh-dev/mesh/api/tap/v1"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/proxy/tap"
)

// rotatingSVID is an x509svid.Source whose SVID a test can replace, as
// the identity client does on renewal.
type rotatingSVID struct{ p atomic.Pointer[x509svid.SVID] }

func (r *rotatingSVID) GetX509SVID() (*x509svid.SVID, error) { return r.p.Load(), nil }

// tapServer is a tap server on loopback for the proxy shop/web, admitting
// the controller mesh-system/mesh-controller.
type tapServer struct {
	ca         *identitytest.CA
	hub        *tap.Hub
	addr       string
	svid       *rotatingSVID
	proxyID    spiffeid.ID
	controller spiffeid.ID
}

func startServer(t *testing.T) *tapServer {
	t.Helper()
	ca := identitytest.NewCA(t)
	s := &tapServer{
		ca: ca, hub: tap.NewHub(), svid: &rotatingSVID{},
		proxyID: ca.ID("shop", "web"), controller: ca.ID("mesh-system", "mesh-controller"),
	}
	s.svid.p.Store(ca.IssueSVID(t, s.proxyID))
	srv, err := tap.NewServer(tap.ServerConfig{Hub: s.hub, SVID: s.svid, Bundle: ca.Bundle(), ClientID: s.controller})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// dial connects with cfg, which must check the server as the proxy.
func dial(t *testing.T, addr string, cfg *tls.Config) tapv1.TapClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return tapv1.NewTapClient(conn)
}

// clientAs is mutual TLS as svid, accepting the server only as the proxy.
func (s *tapServer) clientAs(svid *x509svid.SVID) *tls.Config {
	return tlsconfig.MTLSClientConfig(svid, s.ca.Bundle(), tlsconfig.AuthorizeID(s.proxyID))
}

// waitWatchers waits until the hub has n watchers: a client's Watch
// returns before the server has registered it.
func waitWatchers(t *testing.T, h *tap.Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.Watchers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("hub has %d watchers after 5s, want %d", h.Watchers(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWatchAuthorized: the controller receives the requests and responses
// published on the hub, as the API describes them.
func TestWatchAuthorized(t *testing.T) {
	s := startServer(t)
	client := dial(t, s.addr, s.clientAs(s.ca.IssueSVID(t, s.controller)))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := client.Watch(ctx, &tapv1.WatchRequest{PathPrefix: "/api/"})
	if err != nil {
		t.Fatal(err)
	}
	waitWatchers(t, s.hub, 1)

	if p := s.hub.Request(tap.Request{Method: "GET", Path: "/health"}); p != nil {
		t.Fatal("a request outside the filter was taken")
	}
	req := tap.Request{
		Direction: "outbound", Src: "10.0.0.1:40000", Dst: "10.0.0.2:8080",
		DstWorkload: "deployment/api", ServerID: "spiffe://cluster.local/ns/shop/sa/api",
		Method: "POST", Scheme: "http", Authority: "api.shop:8080", Path: "/api/orders",
		TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
	}
	p := s.hub.Request(req)
	p.Response(tap.Response{Status: 200, GRPCStatus: 14, Latency: 25 * time.Millisecond})
	untraced := req
	untraced.TraceID = ""
	s.hub.Request(untraced).Response(tap.Response{Status: 503, GRPCStatus: -1})

	common := func(typ tapv1.Event_Type) *tapv1.Event {
		return &tapv1.Event{
			Type: typ, Direction: "outbound", SrcAddr: "10.0.0.1:40000", DstAddr: "10.0.0.2:8080",
			DstWorkload: "deployment/api", ServerId: "spiffe://cluster.local/ns/shop/sa/api",
			Method: "POST", Scheme: "http", Authority: "api.shop:8080", Path: "/api/orders",
			TraceId: "4bf92f3577b34da6a3ce929d0e0e4736",
		}
	}
	grpcUnavailable := uint32(14)
	wantResp := common(tapv1.Event_RESPONSE)
	wantResp.HttpStatus, wantResp.GrpcStatus = 200, &grpcUnavailable
	wantResp.Latency = durationpb.New(25 * time.Millisecond)
	wantUntraced := common(tapv1.Event_REQUEST)
	wantUntraced.TraceId = ""
	wantFail := common(tapv1.Event_RESPONSE)
	wantFail.HttpStatus, wantFail.Latency, wantFail.TraceId = 503, durationpb.New(0), ""
	want := []*tapv1.Event{common(tapv1.Event_REQUEST), wantResp, wantUntraced, wantFail}

	var got []*tapv1.Event
	for range want {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv after %d events: %v", len(got), err)
		}
		if ev.GetTimestamp() == nil {
			t.Errorf("event %d has no timestamp", len(got))
		}
		got = append(got, ev)
	}
	if got[0].GetId() != got[1].GetId() || got[2].GetId() != got[3].GetId() || got[0].GetId() == got[2].GetId() {
		t.Errorf("ids %d %d %d %d: want pairs sharing an id", got[0].GetId(), got[1].GetId(), got[2].GetId(), got[3].GetId())
	}
	if diff := cmp.Diff(want, got, protocmp.Transform(),
		protocmp.IgnoreFields(&tapv1.Event{}, "id", "timestamp")); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	cancel()
	waitWatchers(t, s.hub, 0)
}

// TestWatchRefused: nobody but the controller, proven by a certificate of
// the proxy's trust anchors, gets a watch.
func TestWatchRefused(t *testing.T) {
	s := startServer(t)
	otherCA := identitytest.NewCA(t) // same trust domain, another root
	tests := []struct {
		name string
		cfg  func() *tls.Config
	}{
		{
			name: "another identity",
			cfg:  func() *tls.Config { return s.clientAs(s.ca.IssueSVID(t, s.ca.ID("shop", "web"))) },
		},
		{
			name: "controller name in another namespace",
			cfg:  func() *tls.Config { return s.clientAs(s.ca.IssueSVID(t, s.ca.ID("default", "mesh-controller"))) },
		},
		{
			name: "no client certificate",
			cfg: func() *tls.Config {
				return tlsconfig.TLSClientConfig(s.ca.Bundle(), tlsconfig.AuthorizeID(s.proxyID))
			},
		},
		{
			name: "controller ID from another CA",
			cfg:  func() *tls.Config { return s.clientAs(otherCA.IssueSVID(t, s.controller)) },
		},
		{
			name: "TLS 1.2",
			cfg: func() *tls.Config {
				cfg := s.clientAs(s.ca.IssueSVID(t, s.controller))
				cfg.MaxVersion = tls.VersionTLS12
				return cfg
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := dial(t, s.addr, tc.cfg())
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			stream, err := client.Watch(ctx, &tapv1.WatchRequest{})
			if err == nil {
				var ev *tapv1.Event
				ev, err = stream.Recv()
				if err == nil {
					t.Fatalf("refused client received %v", ev)
				}
			}
			t.Logf("refused: %v", err)
			if c := status.Code(err); c != codes.Unavailable && c != codes.PermissionDenied {
				t.Errorf("Watch error %v, want the handshake to fail (Unavailable) or PermissionDenied", err)
			}
			if n := s.hub.Watchers(); n != 0 {
				t.Errorf("hub has %d watchers for a refused client", n)
			}
		})
	}
}

// TestServerRotatesCertificate: the server presents the SVID current at
// each handshake.
func TestServerRotatesCertificate(t *testing.T) {
	s := startServer(t)
	controller := s.ca.IssueSVID(t, s.controller)
	serial := func() string {
		t.Helper()
		cfg := s.clientAs(controller)
		cfg.NextProtos = []string{"h2"}
		c, err := tls.Dial("tcp", s.addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	next := s.ca.RotateIssuer(t).IssueSVID(t, s.proxyID)
	s.svid.p.Store(next)
	if got, want := serial(), next.Certificates[0].SerialNumber.String(); got != want || got == before {
		t.Errorf("server certificate serial %s after rotation, want %s (was %s)", got, want, before)
	}
}

// TestWatchBadRequest: filters the hub cannot use are INVALID_ARGUMENT.
func TestWatchBadRequest(t *testing.T) {
	s := startServer(t)
	client := dial(t, s.addr, s.clientAs(s.ca.IssueSVID(t, s.controller)))
	for _, req := range []*tapv1.WatchRequest{
		{MaxRps: tap.MaxRPS + 1},
		{Method: "GET /"},
	} {
		stream, err := client.Watch(t.Context(), req)
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Watch(%v) error %v, want InvalidArgument", req, err)
		}
	}
}

// TestWatchNeedsMutualTLS: registered on a server without TLS, Watch
// still refuses.
func TestWatchNeedsMutualTLS(t *testing.T) {
	ca := identitytest.NewCA(t)
	hub := tap.NewHub()
	srv, err := tap.NewServer(tap.ServerConfig{
		Hub: hub, SVID: ca.IssueSVID(t, ca.ID("shop", "web")), Bundle: ca.Bundle(),
		ClientID: ca.ID("mesh-system", "mesh-controller"),
	})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	tapv1.RegisterTapServer(gs, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { gs.Serve(ln); close(done) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := tapv1.NewTapClient(conn).Watch(t.Context(), &tapv1.WatchRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("Watch over plain text: %v, want PermissionDenied", err)
	}
}

func TestNewServerNeedsConfig(t *testing.T) {
	ca := identitytest.NewCA(t)
	full := tap.ServerConfig{
		Hub: tap.NewHub(), SVID: ca.IssueSVID(t, ca.ID("shop", "web")), Bundle: ca.Bundle(),
		ClientID: ca.ID("mesh-system", "mesh-controller"),
	}
	if _, err := tap.NewServer(full); err != nil {
		t.Fatalf("NewServer(complete config) = %v", err)
	}
	for name, mutate := range map[string]func(*tap.ServerConfig){
		"no hub":       func(c *tap.ServerConfig) { c.Hub = nil },
		"no svid":      func(c *tap.ServerConfig) { c.SVID = nil },
		"no bundle":    func(c *tap.ServerConfig) { c.Bundle = nil },
		"no client id": func(c *tap.ServerConfig) { c.ClientID = spiffeid.ID{} },
	} {
		cfg := full
		mutate(&cfg)
		if _, err := tap.NewServer(cfg); err == nil {
			t.Errorf("NewServer with %s: no error", name)
		}
	}
}
