package certify_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

// callerRecorder is a gRPC server whose every call records what
// certify.CallerOf says of its caller.
type callerRecorder struct {
	addr string
	mu   sync.Mutex
	got  []callerResult // guarded by mu
}

type callerResult struct {
	caller certify.Caller
	err    error
}

// serveRecorder serves the gRPC health service with creds on loopback
// until the test ends.
func serveRecorder(t *testing.T, creds credentials.TransportCredentials) *callerRecorder {
	t.Helper()
	r := &callerRecorder{}
	gs := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			c, err := certify.CallerOf(ctx)
			r.mu.Lock()
			r.got = append(r.got, callerResult{c, err})
			r.mu.Unlock()
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	r.addr = lis.Addr().String()
	return r
}

// last returns what the last call recorded.
func (r *callerRecorder) last(t *testing.T) callerResult {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		t.Fatal("no call reached the server")
	}
	return r.got[len(r.got)-1]
}

// check makes one health check over creds.
func check(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	return err
}

// TestMTLSServerConfig: a listener configured with MTLSServerConfig
// presents the given ID, admits workloads of the trust domain whose
// certificate chains to the anchors, and refuses at the handshake a client
// without a certificate, with one of another CA, or in plain text.
// CallerOf gives the method the caller's namespace and ServiceAccount.
func TestMTLSServerConfig(t *testing.T) {
	e := newEnv(t, envOptions{})
	self := e.pki.ID("mesh-system", "mesh-controller")
	srv := serveRecorder(t, credentials.NewTLS(e.server.MTLSServerConfig(self)))
	clientOf := func(svid *x509svid.SVID) credentials.TransportCredentials {
		return credentials.NewTLS(tlsconfig.MTLSClientConfig(svid, e.pki.Bundle(), tlsconfig.AuthorizeID(self)))
	}

	web := e.pki.ID("shop", "web")
	if err := check(t, srv.addr, clientOf(e.pki.IssueSVID(t, web))); err != nil {
		t.Fatalf("a workload of the trust domain: %v", err)
	}
	if got := srv.last(t); got.err != nil || got.caller != (certify.Caller{ID: web, Namespace: "shop", ServiceAccount: "web"}) {
		t.Errorf("CallerOf = %+v, %v; want shop/web", got.caller, got.err)
	}

	odd := spiffeid.RequireFromSegments(e.pki.TrustDomain, "node", "n1")
	if err := check(t, srv.addr, clientOf(e.pki.IssueSVID(t, odd))); err != nil {
		t.Fatalf("an ID of the trust domain that names no ServiceAccount: %v", err)
	}
	if got := srv.last(t); !errors.Is(got.err, certify.ErrNotWorkload) {
		t.Errorf("CallerOf of %s = %+v, %v; want ErrNotWorkload", odd, got.caller, got.err)
	}

	other := identitytest.NewCA(t) // the same trust domain, another root
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{name: "a certificate of another CA", creds: credentials.NewTLS(
			tlsconfig.MTLSClientConfig(other.IssueSVID(t, web), e.pki.Bundle(), tlsconfig.AuthorizeID(self)))},
		{name: "no certificate", creds: credentials.NewTLS(tlsconfig.TLSClientConfig(e.pki.Bundle(), tlsconfig.AuthorizeID(self)))},
		{name: "plain text", creds: insecure.NewCredentials()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := check(t, srv.addr, tc.creds); status.Code(err) != codes.Unavailable {
				t.Errorf("got %v, want the connection refused (Unavailable)", err)
			}
		})
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.got) != 2 {
		t.Errorf("%d calls reached the server, want only the 2 with a certificate of the CA", len(srv.got))
	}
}

// TestCallerOfWithoutTLS: on a plain-text listener (the controller's
// loopback one) no caller is proven.
func TestCallerOfWithoutTLS(t *testing.T) {
	srv := serveRecorder(t, insecure.NewCredentials())
	if err := check(t, srv.addr, insecure.NewCredentials()); err != nil {
		t.Fatal(err)
	}
	if got := srv.last(t); !errors.Is(got.err, certify.ErrNoCaller) {
		t.Errorf("CallerOf = %+v, %v; want ErrNoCaller", got.caller, got.err)
	}
	if _, err := certify.CallerOf(t.Context()); !errors.Is(err, certify.ErrNoCaller) {
		t.Errorf("CallerOf outside a call: %v, want ErrNoCaller", err)
	}
}
