package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	at "github.com/mesh-dev/mesh/proxy/authz/authztest"
)

// The tests below are clients that stay silent past the server proxy's
// detect timeout (200 ms in the test proxies): a peer proxy whose
// ClientHello is late, as on a loaded node, must still get mesh TLS and
// the policy, its TLS bytes never reaching the application; and a client
// waiting for the application to speak first must get its greeting
// without waiting for more than the detect timeout.

// firstBytes records the first bytes of each connection an application
// accepted.
type firstBytes struct {
	mu    sync.Mutex
	heads []string // guarded by mu
}

// tlsSeen returns the heads that start a TLS record: bytes of mesh TLS
// that reached the application.
func (f *firstBytes) tlsSeen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var seen []string
	for _, h := range f.heads {
		if h[0] == 0x16 {
			seen = append(seen, h)
		}
	}
	return seen
}

type recordingListener struct {
	net.Listener
	seen *firstBytes
}

func (l recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, seen: l.seen}, nil
}

type recordingConn struct {
	net.Conn
	seen *firstBytes
	once sync.Once
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.once.Do(func() {
			c.seen.mu.Lock()
			c.seen.heads = append(c.seen.heads, string(b[:min(n, 16)]))
			c.seen.mu.Unlock()
		})
	}
	return n, err
}

// recordingBackend is backend, recording the first bytes of every
// connection it accepts.
func recordingBackend(t testing.TB, h http.Handler) (string, *firstBytes) {
	t.Helper()
	seen := &firstBytes{}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = h1AndH2C()
	srv.Listener = recordingListener{Listener: srv.Listener, seen: seen}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), seen
}

// lateRelay forwards each connection to addr, holding the client's first
// bytes back for delay: in front of a server proxy, the client proxy's
// ClientHello comes late, as it does when its node is loaded.
func lateRelay(t testing.TB, addr string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn // guarded by mu; closed at the end of the test
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, up)
			mu.Unlock()
			wg.Go(func() { io.Copy(c, up); c.Close() })
			wg.Go(func() {
				defer up.Close()
				buf := make([]byte, 64<<10)
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				time.Sleep(delay)
				if _, err := up.Write(buf[:n]); err == nil {
					io.Copy(up, c)
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestLateClientHelloGetsMeshTLS: the client proxy's ClientHello reaches
// the server proxy three detect timeouts late. The server proxy still
// terminates mesh TLS and decides the request under its policy with the
// client's identity; not a byte of TLS reaches the application. Whether
// the port lets unauthenticated clients in decides how the proxy waited:
// with the application dialed, or without.
func TestLateClientHelloGetsMeshTLS(t *testing.T) {
	const detectTimeout = 200 * time.Millisecond
	pki := startPKI(t)
	web, other := pki.ca.ID("shop", "web").String(), pki.ca.ID("shop", "other").String()
	for _, tc := range []struct {
		name       string
		policy     func(port uint32) *inboundv1.PodPolicy // nil: the proxy has no policy
		sa         string
		wantStatus int
		wantBody   string
	}{
		{name: "no policy", sa: "web", wantStatus: 200, wantBody: "hello from api"},
		{name: "unauthenticated allowed", policy: func(uint32) *inboundv1.PodPolicy { return at.AllowAll() },
			sa: "web", wantStatus: 200, wantBody: "hello from api"},
		{name: "identity allowed", policy: func(port uint32) *inboundv1.PodPolicy {
			return serverPolicy(port, inboundv1.ProxyProtocol_PROXY_PROTOCOL_UNKNOWN, web)
		}, sa: "web", wantStatus: 200, wantBody: "hello from api"},
		{name: "identity denied", policy: func(port uint32) *inboundv1.PodPolicy {
			return serverPolicy(port, inboundv1.ProxyProtocol_PROXY_PROTOCOL_UNKNOWN, web)
		}, sa: "other", wantStatus: 403, wantBody: `mesh-proxy: unauthorized: server "api" allows no traffic from ` + other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app, seen := recordingBackend(t, named("hello from api", 0))
			opts := []func(*Config){pki.withIdentity(t, "shop", "api"), func(c *Config) { c.DetectTimeout = detectTimeout }}
			if tc.policy != nil {
				fake, policyAddr := pki.startPolicy(t)
				fake.Set(tc.policy(portOf(t, app)))
				opts = append(opts, withPolicy(policyAddr, 10*time.Second))
			}
			server := startProxy(t, app, opts...)
			waitReady(t, server)
			relay := lateRelay(t, server.inbound, 3*detectTimeout)
			service := "127.0.0.1:1"
			controller := pki.startDestination(t, &fakeDestination{sets: map[string][]string{service: {relay}},
				identities: map[string]string{relay: pki.ca.ID("shop", "api").String()}})
			client := startProxy(t, service, func(c *Config) { c.DestinationAddr = controller }, pki.withIdentity(t, "shop", tc.sa))
			waitReady(t, client)
			_, out, _ := client.Addrs()

			status, body := get(t, h1Client(t), "http://"+out.String()+"/")
			if status != tc.wantStatus || !strings.HasPrefix(body, tc.wantBody) {
				t.Errorf("got %d %q, want %d %q", status, body, tc.wantStatus, tc.wantBody)
			}
			if n := server.counter(t, "mesh_proxy_protocol_detections_total", "protocol", "mesh-tls", "reason", "late-alpn"); n < 1 {
				t.Errorf("late mesh TLS detections = %v; want the ClientHello to have come late", n)
			}
			if n := server.counter(t, "mesh_proxy_protocol_detections_total", "direction", "inbound", "protocol", "opaque"); n != 0 {
				t.Errorf("the server proxy relayed %v connections as opaque", n)
			}
			if got := seen.tlsSeen(); len(got) > 0 {
				t.Errorf("the application got TLS bytes: %q", got)
			}
			if tc.policy == nil {
				return
			}
			wantID, decision := web, "allow"
			if tc.sa != "web" {
				wantID, decision = other, "deny"
			}
			if n := server.counter(t, "mesh_proxy_inbound_http_authz_total", "client_id", wantID, "decision", decision); n != 1 {
				t.Errorf("requests decided %s for %s = %v, want 1", decision, wantID, n)
			}
			if n := server.counter(t, "mesh_proxy_inbound_tcp_authz_total"); n != 0 {
				t.Errorf("the server proxy decided %v connections as TCP, as if the client were unauthenticated", n)
			}
		})
	}
}

// greeter is an application that speaks first (SMTP), then answers one
// line, and counts the connections it accepted.
func greeter(t testing.TB, accepted *atomic.Int64) string {
	return tcpBackend(t, func(c net.Conn) {
		accepted.Add(1)
		io.WriteString(c, "220 smtp ready\r\n")
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		c.Write(append([]byte("250 "), buf[:n]...))
	})
}

// TestLateClientServerSpeaksFirst: an unmeshed client of a server that
// speaks first, behind a proxy that has an identity (so detection is never
// skipped inbound), gets the greeting one detect timeout after it
// connected, not after waiting for a late ClientHello; then its answer goes
// through, relayed as opaque under the port's policy for unauthenticated
// clients.
func TestLateClientServerSpeaksFirst(t *testing.T) {
	const detectTimeout = 200 * time.Millisecond
	pki := startPKI(t)
	var accepted atomic.Int64
	app := greeter(t, &accepted)
	fake, policyAddr := pki.startPolicy(t)
	fake.Set(at.AllowAll())
	server := startProxy(t, app, pki.withIdentity(t, "shop", "api"), withPolicy(policyAddr, 10*time.Second),
		func(c *Config) { c.DetectTimeout = detectTimeout })
	waitReady(t, server)

	start := time.Now()
	c, err := net.Dial("tcp", server.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	greeting := make([]byte, len("220 smtp ready\r\n"))
	if _, err := io.ReadFull(c, greeting); err != nil || string(greeting) != "220 smtp ready\r\n" {
		t.Fatalf("greeting %q, %v", greeting, err)
	}
	waited := time.Since(start)
	t.Logf("greeting after %v", waited)
	if waited > detectTimeout+time.Second {
		t.Errorf("greeting after %v: the proxy waited for the silent client past the detect timeout (%v)", waited, detectTimeout)
	}
	io.WriteString(c, "HELO web\r\n")
	answer := make([]byte, len("250 HELO web\r\n"))
	if _, err := io.ReadFull(c, answer); err != nil || string(answer) != "250 HELO web\r\n" {
		t.Fatalf("answer %q, %v", answer, err)
	}
	if n := server.counter(t, "mesh_proxy_protocol_detections_total", "protocol", "opaque", "reason", "timeout"); n != 1 {
		t.Errorf("opaque detections by timeout = %v, want 1", n)
	}
	if n := server.counter(t, "mesh_proxy_inbound_tcp_authz_total", "client_id", "", "decision", "allow"); n != 1 {
		t.Errorf("unauthenticated connections allowed = %v, want 1", n)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("the application accepted %d connections, want 1", n)
	}
}

// TestLatePlainClientMeetsThePolicy: a plain-text client that speaks late
// is decided as an unauthenticated client, as on time: relayed where the
// port allows that, and closed before the application sees a connection
// where it does not.
func TestLatePlainClientMeetsThePolicy(t *testing.T) {
	const detectTimeout = 200 * time.Millisecond
	pki := startPKI(t)
	web := pki.ca.ID("shop", "web").String()
	for _, tc := range []struct {
		name   string
		policy func(port uint32) *inboundv1.PodPolicy
		wantOK bool
	}{
		{name: "unauthenticated allowed", policy: func(uint32) *inboundv1.PodPolicy { return at.AllowAll() }, wantOK: true},
		{name: "identity required", policy: func(port uint32) *inboundv1.PodPolicy {
			return serverPolicy(port, inboundv1.ProxyProtocol_PROXY_PROTOCOL_UNKNOWN, web)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			echo := startEcho(t)
			fake, policyAddr := pki.startPolicy(t)
			fake.Set(tc.policy(portOf(t, echo.addr)))
			server := startProxy(t, echo.addr, pki.withIdentity(t, "shop", "api"), withPolicy(policyAddr, 10*time.Second),
				func(c *Config) { c.DetectTimeout = detectTimeout })
			waitReady(t, server)

			c, err := net.Dial("tcp", server.inbound)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			time.Sleep(3 * detectTimeout)
			const msg = "*1\r\n$4\r\nPING\r\n"
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, msg)
			buf := make([]byte, len(msg))
			n, err := io.ReadFull(c, buf)
			if tc.wantOK {
				if string(buf[:n]) != msg {
					t.Errorf("echo %q, %v; want %q", buf[:n], err, msg)
				}
				return
			}
			if err == nil || n != 0 {
				t.Errorf("a denied client read %q, %v; want the connection closed", buf[:n], err)
			}
			if a, r := echo.accepted.Load(), echo.received.Load(); a != 0 || r != 0 {
				t.Errorf("the application saw %d connections and %d bytes from a denied client", a, r)
			}
			if n := server.counter(t, "mesh_proxy_inbound_tcp_authz_total", "client_id", "", "decision", "deny"); n != 1 {
				t.Errorf("unauthenticated connections denied = %v, want 1", n)
			}
		})
	}
}

// TestLateApplicationTLS: a client of the application's own TLS (no mesh
// ALPN) whose ClientHello comes late goes to the application on the
// connection the proxy dialed when the client stayed silent, untouched.
func TestLateApplicationTLS(t *testing.T) {
	const detectTimeout = 200 * time.Millisecond
	pki := startPKI(t)
	var accepted atomic.Int64
	app := httptest.NewUnstartedServer(named("hello over the application's TLS", 0))
	app.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepted.Add(1)
		}
	}
	app.StartTLS()
	t.Cleanup(app.Close)
	server := startProxy(t, app.Listener.Addr().String(), pki.withIdentity(t, "shop", "api"),
		func(c *Config) { c.DetectTimeout = detectTimeout })
	waitReady(t, server)

	tr := app.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, server.inbound)
		time.Sleep(3 * detectTimeout) // the ClientHello follows the dial
		return c, err
	}
	closeIdle(t, tr)
	status, body := get(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, "https://"+app.Listener.Addr().String()+"/")
	if status != 200 || body != "hello over the application's TLS" {
		t.Errorf("got %d %q", status, body)
	}
	if n := server.counter(t, "mesh_proxy_protocol_detections_total", "protocol", "tls", "reason", "client-hello"); n != 1 {
		t.Errorf("application TLS detections = %v, want 1", n)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("the application accepted %d connections, want the one dialed for the silent client", n)
	}
}
