package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/identity/meshtls"
)

// meshPKI runs the real identity service (identity/certify) on loopback
// over TLS, as mesh-controller does. Only the TokenReview is a stand-in:
// a token here is "<namespace>:<serviceaccount>"; the end-to-end suite
// reviews real tokens with the real API server.
type meshPKI struct {
	ca       *identitytest.CA
	addr     string
	serverID string
	anchors  string
}

func startPKI(t testing.TB) *meshPKI {
	pki, _ := startPKIWith(t)
	return pki
}

// startPKIWith is startPKI with options for its CA, and a stop function
// that takes the identity service down as a crashed controller would.
func startPKIWith(t testing.TB, opts ...identitytest.Option) (pki *meshPKI, stop func()) {
	t.Helper()
	ca := identitytest.NewCA(t, opts...)
	addr, stop := serveIdentity(t, ca, "127.0.0.1:0")
	controller := ca.ID("mesh-system", "mesh-controller")
	anchors := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw})
	return &meshPKI{ca: ca, addr: addr, serverID: controller.String(), anchors: string(anchors)}, stop
}

// serveIdentity runs the identity service signing with ca's issuer on
// addr, as the controller's ServiceAccount, until stop or the test's end;
// it returns the bound address.
func serveIdentity(t testing.TB, ca *identitytest.CA, addr string) (bound string, stop func()) {
	t.Helper()
	dir := identitytest.NewSecretDir(t)
	ca.WriteSecret(t, dir)
	ids, err := certify.New(certify.Config{
		IssuerDir: dir.Path, TrustDomain: ca.TrustDomain,
		Reviewer: certify.TokenReviewerFunc(func(_ context.Context, token, _ string) (certify.TokenInfo, error) {
			return certify.TokenInfo{Username: "system:serviceaccount:" + token}, nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ids.TLSConfig(ca.ID("mesh-system", "mesh-controller")))))
	ids.Register(srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ids.Run(ctx); close(done) }()
	go srv.Serve(ln)
	stop = sync.OnceFunc(func() { cancel(); <-done; srv.Stop() })
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// withIdentity gives a test proxy the identity ns/sa.
func (k *meshPKI) withIdentity(t testing.TB, ns, sa string) func(*Config) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(ns+":"+sa), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *Config) {
		c.IdentityAddr, c.IdentityServerID, c.TrustAnchors = k.addr, k.serverID, k.anchors
		c.Namespace, c.ServiceAccount, c.IdentityTokenFile = ns, sa, token
	}
}

// waitReady polls the proxy's /ready: with an identity, it is ready only
// once it holds a certificate.
func waitReady(t testing.TB, p *testProxy) {
	t.Helper()
	_, _, admin := p.Addrs()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get("http://" + admin.String() + "/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy not ready after 10s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMeshTLSBetweenProxies: a client proxy sends to a meshed endpoint in
// mesh TLS, proving its own identity and checking the server's against the
// one discovery named; the server proxy terminates it and forwards in plain
// text to its application. HTTP and opaque TCP both ride the tunnel; a
// server that is not who discovery said is refused.
func TestMeshTLSBetweenProxies(t *testing.T) {
	pki := startPKI(t)
	app := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 1 || r.Header.Get("Mesh-Orig-Proto") != "" {
			http.Error(w, "the application got "+r.Proto+" with the mesh's mark", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "hello from api")
	}))
	server := startProxy(t, app, pki.withIdentity(t, "shop", "api"))
	waitReady(t, server)
	checkIdentityEndpoint(t, server, pki.ca.ID("shop", "api").String())
	inbound := server.inbound
	tests := []struct {
		name     string
		identity string
		// service is the address the client app dialled: a Service's,
		// never reached, or (a headless Service, a StatefulSet peer) the
		// endpoint's own, which must get mesh TLS all the same.
		service string
		wantOK  bool
	}{
		{name: "right identity", identity: pki.ca.ID("shop", "api").String(), service: "127.0.0.1:1", wantOK: true},
		{name: "another identity", identity: pki.ca.ID("shop", "payments").String(), service: "127.0.0.1:1"},
		{name: "pod address dialled", identity: pki.ca.ID("shop", "api").String(), service: inbound, wantOK: true},
		{name: "pod address dialled, another identity", identity: pki.ca.ID("shop", "payments").String(), service: inbound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			service := tc.service
			controller := pki.startDestination(t, &fakeDestination{
				sets: map[string][]string{service: {inbound}}, identities: map[string]string{inbound: tc.identity}})
			client := startProxy(t, service, func(c *Config) { c.DestinationAddr = controller }, pki.withIdentity(t, "shop", "web"))
			waitReady(t, client)
			_, out, _ := client.Addrs()
			before := server.counter(t, "mesh_proxy_protocol_detections_total", "protocol", "mesh-tls")
			res, err := h1Client(t).Get("http://" + out.String() + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			got := res.StatusCode == http.StatusOK && string(body) == "hello from api"
			if got != tc.wantOK {
				t.Fatalf("got %d %q; want success %v", res.StatusCode, body, tc.wantOK)
			}
			tunnels := server.counter(t, "mesh_proxy_protocol_detections_total", "protocol", "mesh-tls") - before
			if tc.wantOK && tunnels < 1 {
				t.Errorf("the server proxy terminated no mesh TLS connection: the request went in plain text")
			}
			if tc.wantOK {
				web, api := pki.ca.ID("shop", "web").String(), pki.ca.ID("shop", "api").String()
				if n := server.counter(t, "mesh_proxy_http_requests_total", "direction", "inbound", "client_id", web); n < 1 {
					t.Errorf("the server proxy counted no inbound request with client_id %s", web)
				}
				if n := client.counter(t, "mesh_proxy_http_requests_total", "direction", "outbound", "server_id", api); n < 1 {
					t.Errorf("the client proxy counted no outbound request with server_id %s", api)
				}
			}
			if !tc.wantOK && !strings.Contains(string(body), "unreachable") {
				t.Errorf("refusal %q does not say the endpoint was unreachable", body)
			}
		})
	}
}

// checkIdentityEndpoint reads GET /identity, what `mesh identity` shows.
func checkIdentityEndpoint(t *testing.T, p *testProxy, want string) {
	t.Helper()
	_, _, admin := p.Addrs()
	res, err := http.Get("http://" + admin.String() + "/identity")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var got struct {
		SPIFFEID     string                    `json:"spiffe_id"`
		NotAfter     time.Time                 `json:"not_after"`
		Chain        string                    `json:"chain_pem"`
		TrustAnchors []struct{ SHA256 string } `json:"trust_anchors"`
	}
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.SPIFFEID != want || !strings.Contains(got.Chain, "BEGIN CERTIFICATE") || len(got.TrustAnchors) != 1 || time.Until(got.NotAfter) < time.Hour {
		t.Errorf("/identity = %+v, want %s with its chain, valid for hours, and one trust anchor", got, want)
	}
}

// TestHTTP1RidesPooledMeshTLS: HTTP/1.1 requests on several client
// connections, one after another, reach the server proxy over one pooled
// HTTP/1.1 connection in mesh TLS: a handshake is paid once, not per
// client connection. The application gets HTTP/1.1, and a mark a client
// sent in the mesh's own header does not reach it.
func TestHTTP1RidesPooledMeshTLS(t *testing.T) {
	pki := startPKI(t)
	app := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto+" "+r.Header.Get("Mesh-Orig-Proto"))
	}))
	server := startProxy(t, app, pki.withIdentity(t, "shop", "api"))
	service := "127.0.0.1:1"
	controller := pki.startDestination(t, &fakeDestination{sets: map[string][]string{service: {server.inbound}},
		identities: map[string]string{server.inbound: pki.ca.ID("shop", "api").String()}})
	client := startProxy(t, service, func(c *Config) { c.DestinationAddr = controller }, pki.withIdentity(t, "shop", "web"))
	waitReady(t, server)
	waitReady(t, client)
	_, out, _ := client.Addrs()
	before := server.counter(t, "mesh_proxy_tcp_open_total", "direction", "inbound")
	for range 8 {
		// A fresh HTTP/1.1 connection each time, with a spoofed mark.
		req, _ := http.NewRequest(http.MethodGet, "http://"+out.String()+"/", nil)
		req.Header.Set("Mesh-Orig-Proto", "HTTP/2.0")
		req.Close = true
		res, err := h1Client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(body) != "HTTP/1.1 " {
			t.Errorf("the application saw %q, want HTTP/1.1 and no mark", body)
		}
	}
	if n := server.counter(t, "mesh_proxy_tcp_open_total", "direction", "inbound") - before; n != 1 {
		t.Errorf("8 HTTP/1.1 requests took %.0f connections between the proxies, want 1 pooled connection", n)
	}
	if n := server.counter(t, "mesh_proxy_protocol_detections_total", "direction", "inbound", "protocol", "http/1"); n < 1 {
		t.Errorf("the server proxy saw no HTTP/1 inside mesh TLS")
	}
	if n := server.counter(t, "mesh_proxy_http_requests_total", "direction", "inbound", "client_id", pki.ca.ID("shop", "web").String()); n != 8 {
		t.Errorf("the server proxy counted %v requests from the client proxy's identity, want 8", n)
	}
}

// TestSpiffeTLSClientReachesMeshedServer: any SPIFFE client, here
// go-spiffe's spiffetls with a certificate of the trust domain, reaches a
// meshed server through its proxy when it authorizes the server's SPIFFE
// ID, and is refused when it expects another one. It offers the mesh ALPN,
// as a peer proxy does, so the proxy terminates the TLS.
func TestSpiffeTLSClientReachesMeshedServer(t *testing.T) {
	pki := startPKI(t)
	app := backend(t, named("hello from api", 0))
	server := startProxy(t, app, pki.withIdentity(t, "shop", "api"))
	waitReady(t, server)
	svid := pki.ca.IssueSVID(t, pki.ca.ID("shop", "web"))
	for _, tc := range []struct {
		name   string
		expect spiffeid.ID
		wantOK bool
	}{
		{name: "right ID", expect: pki.ca.ID("shop", "api"), wantOK: true},
		{name: "wrong ID", expect: pki.ca.ID("shop", "payments")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := spiffetls.DialWithMode(t.Context(), "tcp", server.inbound,
				spiffetls.MTLSClientWithRawConfig(tlsconfig.AuthorizeID(tc.expect), svid, pki.ca.Bundle()),
				spiffetls.WithDialTLSConfigBase(&tls.Config{NextProtos: []string{meshtls.ALPN}}))
			if !tc.wantOK {
				if err == nil {
					conn.Close()
					t.Fatal("spiffetls connected to a server that is not the one it authorized")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(conn, "GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
			b, _ := io.ReadAll(conn)
			if !strings.Contains(string(b), "200 OK") || !strings.HasSuffix(string(b), "hello from api") {
				t.Errorf("through the proxy: %q", b)
			}
		})
	}
}
