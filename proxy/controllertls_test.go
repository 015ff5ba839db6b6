package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/proxy/policy/policytest"
)

// The tests below check how a proxy with an identity reaches the
// controller's destination and policy API (issue 12): over mesh TLS only,
// presenting its own certificate, and only to a server proving the
// controller's SPIFFE ID, since the answers decide where traffic goes and
// which identity each destination must prove.

// meshController stands in for mesh-controller's proxies' API as proxies
// meet it: a real gRPC server over mesh TLS presenting an SVID of the test
// PKI and requiring a client certificate of its CA, serving a fake
// destination service and a policytest server, and recording who called.
type meshController struct {
	addr   string
	policy *policytest.Server
	hellos atomic.Int64 // TLS ClientHellos received

	mu      sync.Mutex
	callers []string // guarded by mu: the client ID of each call
}

// startController serves dst and a new policytest server as id until the
// test ends.
func (k *meshPKI) startController(t testing.TB, id spiffeid.ID, dst *fakeDestination) *meshController {
	t.Helper()
	c := &meshController{policy: policytest.New()}
	cfg := tlsconfig.MTLSServerConfig(k.ca.IssueSVID(t, id), k.ca.Bundle(), tlsconfig.AuthorizeMemberOf(k.ca.TrustDomain))
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c.hellos.Add(1)
		return nil, nil // the config itself
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)),
		grpc.StreamInterceptor(func(s any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			caller, err := certify.CallerOf(ss.Context())
			c.mu.Lock()
			if err != nil {
				c.callers = append(c.callers, err.Error())
			} else {
				c.callers = append(c.callers, caller.ID.String())
			}
			c.mu.Unlock()
			return h(s, ss)
		}))
	destinationv1.RegisterDestinationServer(srv, dst)
	c.policy.Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	c.addr = ln.Addr().String()
	return c
}

// startDestination serves f over mesh TLS as the controller: the fake
// destination service for proxies with an identity, which dial no other.
func (k *meshPKI) startDestination(t testing.TB, f *fakeDestination) string {
	t.Helper()
	return k.startController(t, spiffeid.RequireFromString(k.serverID), f).addr
}

// startPolicy is policytest.Start over mesh TLS as the controller.
func (k *meshPKI) startPolicy(t testing.TB) (*policytest.Server, string) {
	t.Helper()
	c := k.startController(t, spiffeid.RequireFromString(k.serverID), &fakeDestination{})
	return c.policy, c.addr
}

// calledBy returns the distinct client IDs of the calls so far.
func (c *meshController) calledBy() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Compact(slices.Sorted(slices.Values(c.callers)))
}

// TestControllerOverMeshTLS: proxies with an identity get their policy and
// their endpoints over mesh TLS from a server proving the controller's ID,
// the identity server's by default or destination-server-id, and present
// their own certificates to it; a request then goes end to end.
func TestControllerOverMeshTLS(t *testing.T) {
	pki := startPKI(t)
	app := backend(t, named("hello from api", 0))
	web, api := pki.ca.ID("shop", "web"), pki.ca.ID("shop", "api")

	// The server proxy's policy comes from a controller proving the
	// identity server's ID, the default.
	policyCtl := pki.startController(t, spiffeid.RequireFromString(pki.serverID), &fakeDestination{})
	policyCtl.policy.Set(serverPolicy(portOf(t, app), inboundv1.ProxyProtocol_PROXY_PROTOCOL_UNKNOWN, web.String()))
	server := startProxy(t, app, pki.withIdentity(t, "shop", "api"), withPolicy(policyCtl.addr, 10*time.Second))
	waitReady(t, server) // it holds a policy

	// The client proxy's endpoints come from one proving the ID it is
	// told to expect.
	service := "127.0.0.1:1" // the address the client app dialled; never reached
	dstID := pki.ca.ID("mesh-system", "mesh-destination")
	dstCtl := pki.startController(t, dstID, &fakeDestination{sets: map[string][]string{service: {server.inbound}},
		identities: map[string]string{server.inbound: api.String()}})
	client := startProxy(t, service, pki.withIdentity(t, "shop", "web"), func(c *Config) {
		c.DestinationAddr, c.DestinationServerID = dstCtl.addr, dstID.String()
	})
	waitReady(t, client)
	_, out, _ := client.Addrs()
	if code, body := get(t, h1Client(t), "http://"+out.String()+"/"); code != http.StatusOK || body != "hello from api" {
		t.Errorf("got %d %q, want the application's answer", code, body)
	}
	if got := policyCtl.calledBy(); !slices.Equal(got, []string{api.String()}) {
		t.Errorf("the policy was watched by %q, want only the server proxy, %s", got, api)
	}
	if got := dstCtl.calledBy(); !slices.Equal(got, []string{web.String()}) {
		t.Errorf("destinations were asked by %q, want only the client proxy, %s", got, web)
	}
}

// TestRogueDestinationIsRefused (issue 12, test 2): a rogue destination
// server holding a valid certificate of the mesh's CA, but an attacker's
// identity, answers with an endpoint of its own, in whatever protocol the
// proxy speaks (plain text or TLS). The client proxy refuses it at the
// handshake, before asking anything: its application's request never
// reaches the attacker's endpoint. Inside the cluster networks it fails
// rather than go out in plain text; outside it goes to its original
// address, as with a controller that is down.
func TestRogueDestinationIsRefused(t *testing.T) {
	pki := startPKI(t)
	var stolen atomic.Int64
	evil := backend(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		stolen.Add(1)
		io.WriteString(w, "the attacker's")
	}))
	service := backend(t, named("the real service", 0))
	attacker := pki.ca.ID("evil", "attacker")
	rogue := startRogue(t, pki.ca.IssueSVID(t, attacker), &fakeDestination{sets: map[string][]string{service: {evil}}})
	for _, tc := range []struct {
		name     string
		cluster  []netip.Prefix
		wantCode int
		wantBody string
	}{
		{name: "in the cluster networks", cluster: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			wantCode: http.StatusServiceUnavailable, wantBody: "never sent in plain text"},
		{name: "outside them", wantCode: http.StatusOK, wantBody: "the real service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := startProxy(t, service, pki.withIdentity(t, "shop", "web"), func(c *Config) {
				c.DestinationAddr, c.ClusterNetworks = rogue.addr, tc.cluster
			})
			waitReady(t, client)
			_, out, _ := client.Addrs()
			if code, body := get(t, h1Client(t), "http://"+out.String()+"/"); code != tc.wantCode || !strings.Contains(body, tc.wantBody) {
				t.Errorf("got %d %q, want %d with %q", code, body, tc.wantCode, tc.wantBody)
			}
		})
	}
	if n := stolen.Load(); n != 0 {
		t.Errorf("the attacker's endpoint got %d requests", n)
	}
	if n := rogue.calls.Load(); n != 0 {
		t.Errorf("the rogue server was asked %d times", n)
	}
	if rogue.tlsHellos.Load() == 0 {
		t.Error("the proxy never tried mesh TLS with the rogue server")
	}
}

// rogueServer is a destination server an attacker runs: it presents its
// own SVID to a client that speaks TLS, and answers one that speaks plain
// text, whichever a proxy tries.
type rogueServer struct {
	addr      string
	calls     atomic.Int64 // RPCs that reached it
	tlsHellos atomic.Int64 // connections that began with a TLS handshake
}

func startRogue(t testing.TB, svid *x509svid.SVID, dst *fakeDestination) *rogueServer {
	t.Helper()
	r := &rogueServer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// TLS is terminated by the listener, so the gRPC server is the same
	// for both kinds of client.
	srv := grpc.NewServer(grpc.StreamInterceptor(func(s any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		r.calls.Add(1)
		return h(s, ss)
	}))
	destinationv1.RegisterDestinationServer(srv, dst)
	go srv.Serve(&sniffListener{Listener: ln, tls: tlsconfig.TLSServerConfig(svid), hellos: &r.tlsHellos})
	t.Cleanup(srv.Stop)
	r.addr = ln.Addr().String()
	return r
}

// sniffListener hands out TLS server connections to clients whose first
// byte starts a TLS handshake record, and the connection as it is to the
// others.
type sniffListener struct {
	net.Listener
	tls    *tls.Config
	hellos *atomic.Int64
}

func (l *sniffListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		first, err := br.Peek(1)
		c.SetReadDeadline(time.Time{})
		if err != nil {
			c.Close()
			continue
		}
		conn := &peekedConn{Conn: c, r: br}
		if first[0] != 0x16 { // a TLS handshake record, RFC 8446 section 5.1
			return conn, nil
		}
		l.hellos.Add(1)
		return tls.Server(conn, l.tls), nil
	}
}

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// TestFirstControllerDialWaitsForCertificate: a proxy starting while the
// identity service has not yet answered does not try the controller
// without a certificate (a handshake it would fail); it dials once it
// holds one, and then gets its policy.
func TestFirstControllerDialWaitsForCertificate(t *testing.T) {
	pki, release := startGatedPKI(t)
	app := backend(t, named("hello from api", 0))
	ctl := pki.startController(t, spiffeid.RequireFromString(pki.serverID), &fakeDestination{})
	ctl.policy.Set(serverPolicy(portOf(t, app), inboundv1.ProxyProtocol_PROXY_PROTOCOL_UNKNOWN))
	p := startProxy(t, app, pki.withIdentity(t, "shop", "api"), withPolicy(ctl.addr, 10*time.Second))
	// The policy watch starts with Serve; give a dial that would not wait
	// time to reach the controller.
	time.Sleep(500 * time.Millisecond)
	if n := ctl.hellos.Load(); n != 0 {
		t.Errorf("the proxy began %d TLS handshakes with the controller before it had a certificate", n)
	}
	release()
	waitReady(t, p)
	if got := ctl.calledBy(); !slices.Equal(got, []string{pki.ca.ID("shop", "api").String()}) {
		t.Errorf("the policy was watched by %q, want the proxy", got)
	}
}

// startGatedPKI is startPKI whose identity service issues no certificate
// until release is called.
func startGatedPKI(t testing.TB) (pki *meshPKI, release func()) {
	t.Helper()
	gate := make(chan struct{})
	release = sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release)
	pki, _ = startPKIReviewing(t, certify.TokenReviewerFunc(func(ctx context.Context, token, _ string) (certify.TokenInfo, error) {
		select {
		case <-gate:
		case <-ctx.Done():
			return certify.TokenInfo{}, ctx.Err()
		}
		return certify.TokenInfo{Username: "system:serviceaccount:" + token}, nil
	}))
	return pki, release
}

// TestDestinationServerIDIsChecked: a destination-server-id that is no
// SPIFFE ID, or one of another trust domain (which could never connect),
// is refused at start.
func TestDestinationServerIDIsChecked(t *testing.T) {
	pki := startPKI(t)
	for _, tc := range []struct {
		name, id, wantErr string
	}{
		{name: "not a SPIFFE ID", id: "mesh-controller", wantErr: `destination-server-id "mesh-controller": want a SPIFFE ID`},
		{name: "another trust domain", id: "spiffe://example.org/ns/mesh-system/sa/mesh-controller",
			wantErr: `destination-server-id "spiffe://example.org/ns/mesh-system/sa/mesh-controller" is not in the proxy's trust domain "cluster.local"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			pki.withIdentity(t, "shop", "web")(&cfg)
			cfg.DestinationAddr, cfg.DestinationServerID = "127.0.0.1:1", tc.id
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Validate: %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// startPKIReviewing is startPKIWith with tokens reviewed by reviewer.
func startPKIReviewing(t testing.TB, reviewer certify.TokenReviewer) (pki *meshPKI, stop func()) {
	t.Helper()
	ca := identitytest.NewCA(t)
	dir := identitytest.NewSecretDir(t)
	ca.WriteSecret(t, dir)
	ids, err := certify.New(certify.Config{IssuerDir: dir.Path, TrustDomain: ca.TrustDomain, Reviewer: reviewer})
	if err != nil {
		t.Fatal(err)
	}
	controller := ca.ID("mesh-system", "mesh-controller")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ids.TLSConfig(controller))))
	ids.Register(srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ids.Run(ctx); close(done) }()
	go srv.Serve(ln)
	stop = sync.OnceFunc(func() { cancel(); <-done; srv.Stop() })
	t.Cleanup(stop)
	anchors := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw})
	return &meshPKI{ca: ca, addr: ln.Addr().String(), serverID: controller.String(), anchors: string(anchors)}, stop
}
