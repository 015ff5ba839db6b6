package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/proxy/authz"
	at "github.com/mesh-dev/mesh/proxy/authz/authztest"
	"github.com/mesh-dev/mesh/proxy/policy/policytest"
)

// The tests below run the inbound authorization policy end to end: a real
// InboundPolicy gRPC server (policytest) whose answers each test sets, the
// proxy watching it for pod shop/api-0, real clients in plain text, over
// mesh TLS through a client proxy, and over gRPC.

// withPolicy makes a test proxy watch its pod's policy at addr.
func withPolicy(addr string, grace time.Duration) func(*Config) {
	return func(c *Config) {
		c.DestinationAddr, c.PodName, c.PolicyGrace = addr, "api-0", grace
		if c.Namespace == "" {
			c.Namespace = "shop"
		}
	}
}

// portOf returns the port of an ip:port: the test proxies' fixed target
// is the application, so its port is the one the policy names.
func portOf(t testing.TB, addr string) uint32 {
	t.Helper()
	return uint32(netip.MustParseAddrPort(addr).Port())
}

// serverPolicy is a pod whose port is selected by a Server that allows
// only the identities given, with a kubelet probe on /healthz; every other
// port is denied.
func serverPolicy(port uint32, protocol inboundv1.ProxyProtocol, ids ...string) *inboundv1.PodPolicy {
	return &inboundv1.PodPolicy{
		Revision: "r1", DefaultPolicy: "deny",
		Ports: []*inboundv1.PortPolicy{{Port: port, Server: "api", Protocol: protocol, Authorizations: []*inboundv1.Authorization{
			at.Authz("api-clients", at.MeshTLS("MeshTLSAuthentication/api-clients", ids...)),
		}}},
		Probes: []*inboundv1.Probe{{Port: port, Path: "/healthz"}},
	}
}

// get does one request and returns its status and body.
func get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestInboundPolicyHTTP: a Server allowing one identity over mesh TLS. A
// client proxy proving it gets the application's answer; one proving
// another identity gets 403 (its HTTP/1.1 request rode HTTP/2 between the
// proxies, with Mesh-Orig-Proto); a plain-text client gets 403 over HTTP/1
// and h2c; the kubelet's probe passes. Every decision is counted.
func TestInboundPolicyHTTP(t *testing.T) {
	pki := startPKI(t)
	app := backend(t, named("hello from api", 0))
	fake, policyAddr := pki.startPolicy(t)
	web, other := pki.ca.ID("shop", "web").String(), pki.ca.ID("shop", "other").String()
	fake.Set(serverPolicy(portOf(t, app), inboundv1.ProxyProtocol_PROXY_PROTOCOL_UNKNOWN, web))
	server := startProxy(t, app, pki.withIdentity(t, "shop", "api"), withPolicy(policyAddr, 10*time.Second))
	waitReady(t, server)
	service := "127.0.0.1:1" // the address the client app dialled; never reached
	controller := pki.startDestination(t, &fakeDestination{sets: map[string][]string{service: {server.inbound}},
		identities: map[string]string{server.inbound: pki.ca.ID("shop", "api").String()}})

	for _, tc := range []struct {
		name       string
		sa         string
		wantStatus int
		wantBody   string
	}{
		{name: "allowed identity", sa: "web", wantStatus: 200, wantBody: "hello from api"},
		{name: "another identity", sa: "other", wantStatus: 403,
			wantBody: `mesh-proxy: unauthorized: server "api" allows no traffic from ` + other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := startProxy(t, service, func(c *Config) { c.DestinationAddr = controller }, pki.withIdentity(t, "shop", tc.sa))
			waitReady(t, client)
			_, out, _ := client.Addrs()
			status, body := get(t, h1Client(t), "http://"+out.String()+"/")
			if status != tc.wantStatus || !strings.HasPrefix(body, tc.wantBody) {
				t.Errorf("got %d %q, want %d %q", status, body, tc.wantStatus, tc.wantBody)
			}
		})
	}
	if n := server.counter(t, "mesh_proxy_protocol_detections_total", "direction", "inbound", "protocol", "http/1"); n < 2 {
		t.Errorf("the client proxies' HTTP/1.1 did not ride mesh TLS (%v HTTP/1 connections inside it)", n)
	}

	plain := []struct {
		name       string
		client     *http.Client
		path       string
		wantStatus int
	}{
		{name: "plain text HTTP/1", client: h1Client(t), path: "/", wantStatus: 403},
		{name: "plain text h2c", client: h2cClient(t), path: "/", wantStatus: 403},
		{name: "kubelet probe", client: h1Client(t), path: "/healthz", wantStatus: 200},
	}
	for _, tc := range plain {
		t.Run(tc.name, func(t *testing.T) {
			status, body := get(t, tc.client, "http://"+server.inbound+tc.path)
			if status != tc.wantStatus {
				t.Errorf("got %d %q, want %d", status, body, tc.wantStatus)
			}
			if status == 403 && !strings.Contains(body, "allows no traffic from unauthenticated clients") {
				t.Errorf("403 body %q does not say why", body)
			}
		})
	}
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{labels: []string{"server", "api", "authz", "api-clients", "client_id", web, "decision", "allow"}, want: 1},
		{labels: []string{"server", "api", "authz", "", "client_id", other, "decision", "deny"}, want: 1},
		{labels: []string{"server", "api", "authz", "", "client_id", "", "decision", "deny"}, want: 2},
		{labels: []string{"server", "api", "authz", "probe", "client_id", "", "decision", "allow"}, want: 1},
	} {
		if got := server.counter(t, "mesh_proxy_inbound_http_authz_total", c.labels...); got != c.want {
			t.Errorf("mesh_proxy_inbound_http_authz_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := server.counter(t, "mesh_proxy_http_responses_total", "direction", "inbound", "status_class", "4xx"); got != 3 {
		t.Errorf("inbound 4xx responses = %v, want 3", got)
	}
}

// echoServer accepts TCP connections and echoes them; it counts the
// connections it accepted and the bytes it received.
type echoServer struct {
	addr     string
	accepted atomic.Int64
	received atomic.Int64
}

func startEcho(t testing.TB) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{addr: ln.Addr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					e.received.Add(int64(n))
					if n > 0 {
						c.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return e
}

// exchangeTCP writes msg on a new connection to addr and returns what
// comes back before the connection ends or a second passes.
func exchangeTCP(t testing.TB, addr, msg string) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	n, err := io.ReadFull(c, buf)
	return string(buf[:n]), err
}

// TestInboundPolicyOpaque: on a port whose Server says opaque, a denied
// client's connection is closed before the proxy dials the application,
// which never sees a connection or a byte: in plain text, and over mesh
// TLS from a client proxy proving the wrong identity. An allowed client's
// bytes go through untouched, even when they look like HTTP.
func TestInboundPolicyOpaque(t *testing.T) {
	pki := startPKI(t)
	echo := startEcho(t)
	fake, policyAddr := pki.startPolicy(t)
	web := pki.ca.ID("shop", "web").String()
	fake.Set(serverPolicy(portOf(t, echo.addr), inboundv1.ProxyProtocol_PROXY_PROTOCOL_OPAQUE, web))
	server := startProxy(t, echo.addr, pki.withIdentity(t, "shop", "api"), withPolicy(policyAddr, 10*time.Second))
	waitReady(t, server)
	service := "127.0.0.1:1"
	controller := pki.startDestination(t, &fakeDestination{sets: map[string][]string{service: {server.inbound}},
		identities: map[string]string{server.inbound: pki.ca.ID("shop", "api").String()}})
	// In plain text the client sends what looks like HTTP: opaque all the
	// same. Through a client proxy it sends what does not, or that proxy
	// would carry it as HTTP.
	const httpLike, resp = "GET / HTTP/1.1\r\nHost: redis\r\n\r\n", "*1\r\n$4\r\nPING\r\n"

	for _, tc := range []struct {
		name   string
		sa     string // "" dials the server proxy in plain text
		wantOK bool
	}{
		{name: "plain text", sa: ""},
		{name: "another identity", sa: "other"},
		{name: "allowed identity", sa: "web", wantOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, msg := server.inbound, httpLike
			if tc.sa != "" {
				msg = resp
				client := startProxy(t, service, func(c *Config) { c.DestinationAddr = controller }, pki.withIdentity(t, "shop", tc.sa))
				waitReady(t, client)
				_, out, _ := client.Addrs()
				addr = out.String()
			}
			accepted, received := echo.accepted.Load(), echo.received.Load()
			got, err := exchangeTCP(t, addr, msg)
			if tc.wantOK {
				if got != msg {
					t.Errorf("echo = %q, %v; want %q", got, err, msg)
				}
				return
			}
			if err == nil || got != "" {
				t.Errorf("a denied client read %q, %v; want the connection closed", got, err)
			}
			time.Sleep(100 * time.Millisecond) // a forwarded connection would have reached the echo server by now
			if n, b := echo.accepted.Load()-accepted, echo.received.Load()-received; n != 0 || b != 0 {
				t.Errorf("the application saw %d connections and %d bytes from a denied client", n, b)
			}
		})
	}
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{labels: []string{"server", "api", "authz", "api-clients", "client_id", web, "decision", "allow"}, want: 1},
		{labels: []string{"server", "api", "client_id", pki.ca.ID("shop", "other").String(), "decision", "deny"}, want: 1},
		{labels: []string{"server", "api", "client_id", "", "decision", "deny"}, want: 1},
	} {
		if got := server.counter(t, "mesh_proxy_inbound_tcp_authz_total", c.labels...); got != c.want {
			t.Errorf("mesh_proxy_inbound_tcp_authz_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := server.counter(t, "mesh_proxy_protocol_detections_total", "protocol", "opaque", "reason", "server-protocol"); got != 3 {
		t.Errorf("opaque by Server protocol = %v, want 3", got)
	}
}

// startGRPC serves the standard health service in h2c on loopback, with
// service "shop.Cart" serving.
func startGRPC(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("shop.Cart", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func healthClient(t testing.TB, addr string) healthpb.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// TestInboundPolicyGRPC: a real grpc-go client denied by the policy sees
// PERMISSION_DENIED with the reason, not a transport error, while the
// kubelet's grpc probe (Health/Check) passes; once the policy allows the
// client, the same connection's next call goes through.
func TestInboundPolicyGRPC(t *testing.T) {
	app := startGRPC(t)
	fake, policyAddr, _ := policytest.Start(t)
	deny := at.Default("deny")
	deny.Probes = []*inboundv1.Probe{{Port: portOf(t, app), Path: authz.GRPCHealthCheck}}
	fake.Set(deny)
	p := startProxy(t, app, withPolicy(policyAddr, 10*time.Second))
	waitReady(t, p)
	hc := healthClient(t, p.inbound)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	if res, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "shop.Cart"}); err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("the grpc probe under deny: %v, %v; want SERVING", res, err)
	}
	_, err := hc.List(ctx, &healthpb.HealthListRequest{})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "mesh-proxy: unauthorized") {
		t.Errorf("List under deny: %v; want PermissionDenied from the proxy", err)
	}
	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "shop.Cart"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("Watch under deny: %v; want PermissionDenied", err)
	}

	allow := at.AllowAll()
	allow.Revision = "r2"
	fake.Set(allow)
	waitFor(t, func() bool { return p.policy.Policy().Revision() == "r2" })
	if _, err := hc.List(ctx, &healthpb.HealthListRequest{}); err != nil {
		t.Errorf("List once the policy allows everyone: %v", err)
	}
	if got := p.counter(t, "mesh_proxy_inbound_http_authz_total", "decision", "deny", "server", "default:deny"); got != 2 {
		t.Errorf("denied calls counted = %v, want 2", got)
	}
	if got := p.counter(t, "mesh_proxy_inbound_http_authz_total", "authz", "probe"); got != 1 {
		t.Errorf("probes counted = %v, want 1", got)
	}
	if got := p.counter(t, "mesh_proxy_tcp_open_total", "direction", "inbound"); got != 1 {
		t.Errorf("inbound connections = %v, want the one the client kept", got)
	}
}

// TestInboundPolicyAudit: under audit, what no authorization allows goes
// through, counted as audit.
func TestInboundPolicyAudit(t *testing.T) {
	app := backend(t, named("hello", 0))
	fake, policyAddr, _ := policytest.Start(t)
	fake.Set(at.Default("audit"))
	p := startProxy(t, app, withPolicy(policyAddr, 10*time.Second))
	waitReady(t, p)
	for range 3 {
		if status, body := get(t, h1Client(t), "http://"+p.inbound+"/"); status != 200 || body != "hello" {
			t.Fatalf("under audit: %d %q, want the application's answer", status, body)
		}
	}
	if got := p.counter(t, "mesh_proxy_inbound_http_authz_total", "server", "default:audit", "authz", "", "decision", "audit"); got != 3 {
		t.Errorf("audited requests = %v, want 3", got)
	}
	if got := p.counter(t, "mesh_proxy_inbound_http_authz_total", "decision", "deny"); got != 0 {
		t.Errorf("denials under audit = %v, want 0", got)
	}
}

// TestInboundPolicyUpdate: a new policy decides the next request on a
// connection that is already open, with no restart; with the controller
// gone, the last policy stays in force.
func TestInboundPolicyUpdate(t *testing.T) {
	app := backend(t, named("hello", 0))
	fake, policyAddr, srv := policytest.Start(t)
	fake.Set(at.Default("deny"))
	p := startProxy(t, app, withPolicy(policyAddr, 10*time.Second))
	waitReady(t, p)
	c := h1Client(t)
	if status, _ := get(t, c, "http://"+p.inbound+"/"); status != 403 {
		t.Fatalf("under deny: %d, want 403", status)
	}
	allow := at.Default("all-unauthenticated", at.Authz("local", at.Networks("NetworkAuthentication/local", at.CIDR("127.0.0.0/8"))))
	fake.Set(allow)
	waitFor(t, func() bool {
		status, _ := get(t, c, "http://"+p.inbound+"/")
		return status == 200
	})
	if got := p.counter(t, "mesh_proxy_tcp_open_total", "direction", "inbound"); got != 1 {
		t.Errorf("inbound connections = %v, want 1: the open connection saw the new policy", got)
	}
	if got := p.counter(t, "mesh_proxy_inbound_policy_updates_total"); got != 2 {
		t.Errorf("policy updates = %v, want 2", got)
	}

	srv.Stop() // the controller goes away
	waitFor(t, func() bool { return fake.Open() == 0 })
	for range 3 {
		if status, _ := get(t, h1Client(t), "http://"+p.inbound+"/"); status != 200 {
			t.Errorf("without the controller: %d, want 200 under the last policy", status)
		}
	}
	if err := p.isReady(); err != nil {
		t.Errorf("ready without the controller: %v, want ready with the last policy", err)
	}
}

// readyBody returns /ready's status and body.
func readyBody(t testing.TB, p *testProxy) (int, string) {
	t.Helper()
	_, _, adm := p.Addrs()
	return get(t, h1Client(t), "http://"+adm.String()+"/ready")
}

// TestInboundPolicyGrace: with no policy yet, a connection waits for one
// until the grace ends, and is closed once it has; /ready says why until a
// policy arrives.
func TestInboundPolicyGrace(t *testing.T) {
	app := backend(t, named("hello", 0))
	t.Run("waits for the first policy", func(t *testing.T) {
		fake, policyAddr, _ := policytest.Start(t)
		p := startProxy(t, app, withPolicy(policyAddr, 10*time.Second))
		if status, body := readyBody(t, p); status != 503 || !strings.Contains(body, "no inbound policy from the controller yet") {
			t.Errorf("/ready = %d %q, want 503 saying there is no policy yet", status, body)
		}
		got := make(chan int, 1)
		go func() {
			res, err := h1Client(t).Get("http://" + p.inbound + "/")
			if err != nil {
				got <- 0
				return
			}
			res.Body.Close()
			got <- res.StatusCode
		}()
		time.Sleep(200 * time.Millisecond)
		select {
		case s := <-got:
			t.Fatalf("answered %d before any policy", s)
		default:
		}
		fake.Set(at.AllowAll())
		if s := <-got; s != 200 {
			t.Errorf("the waiting request got %d once the policy came, want 200", s)
		}
		waitReady(t, p)
	})
	t.Run("refuses after the grace", func(t *testing.T) {
		fake, policyAddr, _ := policytest.Start(t)
		p := startProxy(t, app, withPolicy(policyAddr, 300*time.Millisecond))
		time.Sleep(400 * time.Millisecond)
		start := time.Now()
		res, err := h1Client(t).Get("http://" + p.inbound + "/")
		if err == nil {
			res.Body.Close()
			t.Fatalf("got %d past the grace without a policy, want the connection closed", res.StatusCode)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("refused after %v, want at once past the grace", took)
		}
		if got := p.counter(t, "mesh_proxy_inbound_tcp_authz_total", "server", "", "decision", "deny"); got < 1 {
			t.Errorf("refusals counted = %v, want at least 1", got)
		}
		if status, body := readyBody(t, p); status != 503 || !strings.Contains(body, "no inbound policy from the controller yet") {
			t.Errorf("/ready = %d %q, want 503 saying there is no policy yet", status, body)
		}
		fake.Set(at.AllowAll())
		waitReady(t, p)
		if status, body := get(t, h1Client(t), "http://"+p.inbound+"/"); status != 200 || body != "hello" {
			t.Errorf("once the policy came: %d %q", status, body)
		}
	})
}

// TestNoPolicyWithoutPodName: without a pod name the proxy watches no
// policy and lets everyone in (zero config), even with a controller.
func TestNoPolicyWithoutPodName(t *testing.T) {
	app := backend(t, named("hello", 0))
	fake, policyAddr, _ := policytest.Start(t)
	p := startProxy(t, app, func(c *Config) { c.DestinationAddr = policyAddr })
	waitReady(t, p)
	if status, body := get(t, h1Client(t), "http://"+p.inbound+"/"); status != 200 || body != "hello" {
		t.Errorf("got %d %q, want the application's answer", status, body)
	}
	if w := fake.Watches(); len(w) != 0 {
		t.Errorf("watched %v without a pod name", w)
	}
	if p.policy != nil {
		t.Error("an enforcer without a pod name")
	}
	if got := p.counter(t, "mesh_proxy_inbound_http_authz_total"); got != 0 {
		t.Errorf("decisions counted = %v without a policy", got)
	}
}

// BenchmarkInboundPolicy is what the inbound authorization policy costs a
// request: an HTTP request on a kept-alive connection through the inbound
// side to an application, with no policy ("none"), and under a policy of
// 100 Servers with 100 authorizations each, the application's port one of
// them and the client's authorization its last ("100x100"), over HTTP/1.1
// and h2c. The connection is decided once, when it is accepted; a request
// then costs an atomic load, a pointer comparison and a counter's atomic
// add. cpu-ns/op is the CPU time of the whole process (client, proxy and
// application) per request; make bench-proxy (bench/proxy.sh) runs this
// and prints the ratio of the two. Run it alone with
//
//	go test -run '^$' -bench '^BenchmarkInboundPolicy$' -benchmem -cpu 1 -count 5 ./proxy/
func BenchmarkInboundPolicy(b *testing.B) {
	for _, load := range []struct {
		name   string
		client func(testing.TB) *http.Client
	}{{"http1", h1Client}, {"h2c", h2cClient}} {
		for _, enforce := range []bool{false, true} {
			name := load.name + "/none"
			if enforce {
				name = load.name + "/100x100"
			}
			b.Run(name, func(b *testing.B) { benchmarkInboundPolicy(b, load.client, enforce) })
		}
	}
}

func benchmarkInboundPolicy(b *testing.B, newClient func(testing.TB) *http.Client, enforce bool) {
	app := backend(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok")
	}))
	var opts []func(*Config)
	var fake *policytest.Server
	if enforce {
		port := uint16(portOf(b, app))
		first := port - min(port-1, 99) // the application's port among 100 Servers
		msg := at.Large(100, 100, first, at.Networks("NetworkAuthentication/loopback", at.CIDR("127.0.0.0/8")))
		var addr string
		fake, addr, _ = policytest.Start(b)
		fake.Set(msg)
		opts = append(opts, withPolicy(addr, 10*time.Second))
	}
	p := startProxy(b, app, opts...)
	if enforce {
		waitReady(b, p)
		fake.Forget() // the proxy holds the compiled policy alone, as in a pod
		if d := p.policy.Policy().Authorize(uint16(portOf(b, app)), authz.Client{Addr: netip.MustParseAddr("127.0.0.1")}); !d.Allowed || d.Authz != "allowed" {
			b.Fatalf("the benchmark's client is decided %+v, want allowed by the last authorization", d)
		}
	}
	client := newClient(b)
	url := "http://" + p.inbound + "/"
	do := func() {
		res, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("status %s", res.Status)
		}
	}
	do()         // opens the connection the loop reuses
	runtime.GC() // no garbage of the setup is collected on the clock
	b.ReportAllocs()
	start := cpuTime(b)
	for b.Loop() {
		do()
	}
	reportCPU(b, start, "")
	if enforce {
		if got := p.counter(b, "mesh_proxy_inbound_http_authz_total", "authz", "allowed", "decision", "allow"); got < float64(b.N) {
			b.Fatalf("%v requests counted allowed, want %d: the policy did not decide them", got, b.N)
		}
	}
}
