package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/identity/meshtls"
	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// meshPeers is a mesh of two workloads: web, whose client proxy the tests
// run, and api, whose pods' server proxies they start, with real mesh TLS
// between them.
type meshPeers struct {
	ca               *identitytest.CA
	web, api         spiffeid.ID
	webSVID, apiSVID *x509svid.SVID
}

func newMeshPeers(t testing.TB) *meshPeers {
	t.Helper()
	ca := identitytest.NewCA(t)
	mp := &meshPeers{ca: ca, web: ca.ID("shop", "web"), api: ca.ID("shop", "api")}
	mp.webSVID, mp.apiSVID = ca.IssueSVID(t, mp.web), ca.IssueSVID(t, mp.api)
	return mp
}

// serverProxy starts an api pod's server proxy: an inbound Proxy behind
// mesh TLS, as proxy/side.go hands it connections, whose requests go to
// app. It returns its address.
func (mp *meshPeers) serverProxy(t testing.TB, app string) netip.AddrPort {
	t.Helper()
	return mp.serverPod(t, app).addr
}

// serverPod is an api pod's server proxy, which a test may stop.
type serverPod struct {
	p    *Proxy
	addr netip.AddrPort
	ln   net.Listener
}

// stop shuts the server proxy down as mesh-proxy does: no more
// connections, then Shutdown, in the background.
func (s *serverPod) stop() {
	s.ln.Close()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.p.Shutdown(ctx)
	}()
}

func (mp *meshPeers) serverPod(t testing.TB, app string, opts ...func(*Config)) *serverPod {
	t.Helper()
	cfg := Config{Direction: metrics.Inbound, Metrics: metrics.New(), Log: testLog()}
	for _, o := range opts {
		o(&cfg)
	}
	p := New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := meshtls.ServerConfig(mp.apiSVID, mp.ca.Bundle(), nil)
	target := netip.MustParseAddrPort(app)
	var conns sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				tc := tls.Server(c, tlsCfg)
				if err := tc.Handshake(); err != nil {
					c.Close()
					return
				}
				peer, err := meshtls.PeerID(tc.ConnectionState())
				if err != nil {
					tc.Close()
					return
				}
				p.Serve(tc, httpproxy.ConnInfo{Target: target, ClientID: peer.String()})
			})
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p.Shutdown(ctx)
		conns.Wait()
	})
	return &serverPod{p: p, addr: netip.MustParseAddrPort(ln.Addr().String()), ln: ln}
}

// clientProxy starts web's client proxy, which balances the requests of
// its clients over b's endpoints, in mesh TLS to those with an identity.
func (mp *meshPeers) clientProxy(t testing.TB, b *fakeBalancer) *testProxy {
	t.Helper()
	return startTestProxy(t, "127.0.0.1:1", func(c *Config) {
		c.Direction = metrics.Outbound
		c.Pick = b.pick
		c.MeshTLS = func(ctx context.Context, c net.Conn, identity string) (net.Conn, error) {
			tc := tls.Client(c, meshtls.ClientConfig(mp.webSVID, mp.ca.Bundle(), spiffeid.RequireFromString(identity)))
			return tc, tc.HandshakeContext(ctx)
		}
	})
}

// fakeBalancer offers its endpoints in turn, from the first after each
// restart, and keeps what each request reported of them.
type fakeBalancer struct {
	eps  []httpproxy.Endpoint
	next atomic.Int32

	mu      sync.Mutex
	reports map[netip.AddrPort][]error
}

func (b *fakeBalancer) pick(context.Context, netip.AddrPort, string) (httpproxy.Endpoint, error) {
	ep := b.eps[int(b.next.Add(1)-1)%len(b.eps)]
	ep.Report = func(_ time.Duration, err error) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.reports == nil {
			b.reports = map[netip.AddrPort][]error{}
		}
		b.reports[ep.Addr] = append(b.reports[ep.Addr], err)
	}
	return ep, nil
}

func (b *fakeBalancer) restart() { b.next.Store(0) }

// reported returns what requests reported of addr, and forgets it.
func (b *fakeBalancer) reported(addr netip.AddrPort) []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	errs := b.reports[addr]
	delete(b.reports, addr)
	return errs
}

func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
}

// closedPort returns a loopback address nothing listens on: an
// application that exited while its pod is still an endpoint.
func closedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// echoApp is an application that answers every request with its method
// and body, and keeps them.
type echoApp struct {
	addr string
	mu   sync.Mutex
	got  []string
}

func startEchoApp(t testing.TB) *echoApp {
	t.Helper()
	a := &echoApp{}
	a.addr = startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		a.mu.Lock()
		a.got = append(a.got, r.Method+" "+string(b))
		a.mu.Unlock()
		fmt.Fprintf(w, "%s %d", r.Method, len(b))
	}))
	return a
}

// take returns the requests the application saw, and forgets them.
func (a *echoApp) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	got := a.got
	a.got = nil
	return got
}

// retries reads the proxy's count of requests sent again because they
// reached no application.
func retries(t testing.TB, m *metrics.Metrics) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	fams, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams.Sum("mesh_proxy_http_retries_total", "direction", "outbound", "reason", "not_delivered")
}

// slowBody is a request body that comes in two parts, the second after a
// pause: the proxy streams it, as it has not all of it with the head.
type slowBody struct {
	parts [][]byte
}

func (b *slowBody) Read(p []byte) (int, error) {
	if len(b.parts) == 0 {
		return 0, io.EOF
	}
	if len(b.parts) == 1 {
		time.Sleep(50 * time.Millisecond)
	}
	n := copy(p, b.parts[0])
	if b.parts[0] = b.parts[0][n:]; len(b.parts[0]) == 0 {
		b.parts = b.parts[1:]
	}
	return n, nil
}

// TestNotDeliveredGoesToAnotherEndpoint: a destination of two pods, the
// first of which has lost its application (its port is closed) while its
// proxy still serves: every request, whatever its method and body, is
// answered by the second pod, and seen once by its application; the
// first pod is reported unreachable, so the balancer ejects it.
func TestNotDeliveredGoesToAnotherEndpoint(t *testing.T) {
	mp := newMeshPeers(t)
	live := startEchoApp(t)
	gone := mp.serverProxy(t, closedPort(t))
	b := &fakeBalancer{eps: []httpproxy.Endpoint{
		{Addr: gone, Identity: mp.api.String()},
		{Addr: mp.serverProxy(t, live.addr), Identity: mp.api.String()},
	}}
	client := mp.clientProxy(t, b)
	hc := &http.Client{Timeout: 10 * time.Second}
	big := strings.Repeat("b", 60<<10)
	for i, tc := range []struct {
		name   string
		method string
		body   func() io.Reader
		want   string // what the application sees
		expect bool   // Expect: 100-continue
	}{
		{name: "GET", method: "GET", want: "GET "},
		{name: "DELETE", method: "DELETE", want: "DELETE "},
		{name: "POST with a body read with its head", method: "POST",
			body: func() io.Reader { return strings.NewReader("order 1") }, want: "POST order 1"},
		{name: "POST with a streamed chunked body", method: "POST",
			body: func() io.Reader { return &slowBody{parts: [][]byte{[]byte("order "), []byte("2")}} }, want: "POST order 2"},
		{name: "PUT of 60 KiB", method: "PUT",
			body: func() io.Reader { return strings.NewReader(big) }, want: "PUT " + big},
		{name: "POST expecting 100-continue", method: "POST", expect: true,
			body: func() io.Reader { return strings.NewReader("order 3") }, want: "POST order 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.restart()
			var body io.Reader
			if tc.body != nil {
				body = tc.body()
			}
			req, _ := http.NewRequest(tc.method, "http://"+client.addr+"/orders", body)
			if tc.expect {
				req.Header.Set("Expect", "100-continue")
			}
			res, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			method, sent, _ := strings.Cut(tc.want, " ")
			if want := fmt.Sprintf("%s %d", method, len(sent)); res.StatusCode != 200 || string(got) != want {
				t.Errorf("got %d %q, want 200 %q", res.StatusCode, got, want)
			}
			if saw := live.take(); len(saw) != 1 || saw[0] != tc.want {
				t.Errorf("the live application saw %d requests, want exactly %.40q", len(saw), tc.want)
			}
			if errs := b.reported(gone); len(errs) != 1 || !errors.Is(errs[0], balance.ErrUnreachable) {
				t.Errorf("the pod without its application was reported %v, want one unreachable", errs)
			}
			if n := retries(t, client.m); n != float64(i+1) {
				t.Errorf("retries counted: %v, want %d", n, i+1)
			}
		})
	}
}

// TestNotDeliveredOnlyFromAProvenPeer: Mesh-Proxy-Not-Delivered that an
// application sends, through its pod's server proxy or from a pod out of
// the mesh, sends no request twice and never reaches the client; a plain
// text client of a server proxy is answered as ever, without it.
func TestNotDeliveredOnlyFromAProvenPeer(t *testing.T) {
	mp := newMeshPeers(t)
	var forged atomic.Int32
	forger := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forged.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Mesh-Proxy-Not-Delivered", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	live := startEchoApp(t)
	other := httpproxy.Endpoint{Addr: mp.serverProxy(t, live.addr), Identity: mp.api.String()}
	for _, tc := range []struct {
		name  string
		first httpproxy.Endpoint
	}{
		{"an application behind its server proxy", httpproxy.Endpoint{Addr: mp.serverProxy(t, forger), Identity: mp.api.String()}},
		{"a pod out of the mesh", httpproxy.Endpoint{Addr: netip.MustParseAddrPort(forger)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &fakeBalancer{eps: []httpproxy.Endpoint{tc.first, other}}
			client := mp.clientProxy(t, b)
			for _, method := range []string{"GET", "POST"} {
				b.restart()
				forged.Store(0)
				var body io.Reader
				if method == "POST" {
					body = strings.NewReader("order")
				}
				req, _ := http.NewRequest(method, "http://"+client.addr+"/orders", body)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Mesh-Proxy-Not-Delivered") != "" {
					t.Errorf("%s: got %d %v, want the application's 503 without Mesh-Proxy-Not-Delivered", method, res.StatusCode, res.Header)
				}
				if n := forged.Load(); n != 1 {
					t.Errorf("%s: the application saw %d requests, want 1", method, n)
				}
				if saw := live.take(); len(saw) != 0 {
					t.Errorf("%s: the request was sent again: the other pod saw %q", method, saw)
				}
			}
			if n := retries(t, client.m); n != 0 {
				t.Errorf("retries counted: %v, want 0", n)
			}
		})
	}

	t.Run("a plain text client of a server proxy", func(t *testing.T) {
		p := startTestProxy(t, closedPort(t))
		res, err := http.Post("http://"+p.addr+"/orders", "text/plain", strings.NewReader("order"))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway || res.Header.Get("Mesh-Proxy-Not-Delivered") != "" {
			t.Errorf("got %d %v, want 502 without Mesh-Proxy-Not-Delivered", res.StatusCode, res.Header)
		}
	})
}

// TestNotDeliveredLargeBodyIsNotReplayed: a body past the replay buffer is
// not kept, so a request with one that was not delivered is answered, not
// sent again: from a server proxy, which answers before it reads such a
// body, and from a peer that read all of it first.
func TestNotDeliveredLargeBodyIsNotReplayed(t *testing.T) {
	mp := newMeshPeers(t)
	live := startEchoApp(t)
	other := httpproxy.Endpoint{Addr: mp.serverProxy(t, live.addr), Identity: mp.api.String()}
	for _, tc := range []struct {
		name  string
		first netip.AddrPort
	}{
		{"server proxy", mp.serverProxy(t, closedPort(t))},
		{"peer reading the whole body", mp.readingPeer(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &fakeBalancer{eps: []httpproxy.Endpoint{{Addr: tc.first, Identity: mp.api.String()}, other}}
			client := mp.clientProxy(t, b)
			res, err := http.Post("http://"+client.addr+"/upload", "application/octet-stream", bytes.NewReader(make([]byte, 1<<20)))
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Mesh-Proxy-Not-Delivered") != "" {
					t.Errorf("got %d %v, want 503 without Mesh-Proxy-Not-Delivered", res.StatusCode, res.Header)
				}
			} // else the proxy closed before it read the whole upload: not sent again either
			if saw := live.take(); len(saw) != 0 {
				t.Errorf("the 1 MB POST was sent again: the other pod saw %d requests", len(saw))
			}
			if n := retries(t, client.m); n != 0 {
				t.Errorf("retries counted: %v, want 0", n)
			}
		})
	}
}

// readingPeer starts a peer proxy of api that reads each request whole,
// then says it was not delivered.
func (mp *meshPeers) readingPeer(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", meshtls.ServerConfig(mp.apiSVID, mp.ca.Bundle(), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nMesh-Proxy-Not-Delivered: 1\r\nContent-Length: 0\r\n\r\n")
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// TestStaleConnectionResend: a pooled connection the target closes after
// reading a request head: an idempotent request goes again on a new
// connection, a POST does not, as the target may have acted on it (RFC
// 9110 §9.2.2).
func TestStaleConnectionResend(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	backend := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for n := 0; ; n++ {
			lines := readHeadLinesOrEOF(br)
			if lines == nil {
				return
			}
			mu.Lock()
			seen = append(seen, lines[0])
			mu.Unlock()
			if n == 1 {
				return // the second request of a connection finds it closing
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	p := startTestProxy(t, backend)
	for _, tc := range []struct {
		method string
		status int
		times  int // the target saw the request
	}{
		{"GET", http.StatusOK, 2},
		{"POST", http.StatusBadGateway, 1},
	} {
		t.Run(tc.method, func(t *testing.T) {
			p.CloseIdle()
			c := dial(t, p.addr)
			br := bufio.NewReader(c)
			for i := range 2 {
				mu.Lock()
				seen = nil
				mu.Unlock()
				fmt.Fprintf(c, "%s /%d HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", tc.method, i)
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if i == 0 {
					continue
				}
				mu.Lock()
				n := len(seen)
				mu.Unlock()
				if res.StatusCode != tc.status || n != tc.times {
					t.Errorf("second %s: %d, seen %d times by the target; want %d, %d times", tc.method, res.StatusCode, n, tc.status, tc.times)
				}
			}
		})
	}
}

// readHeadLinesOrEOF reads one head, nil if the connection ends first.
func readHeadLinesOrEOF(r *bufio.Reader) []string {
	var lines []string
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return nil
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			return lines
		}
		lines = append(lines, l)
	}
}

// TestPooledMeshTLSConnectionClosedByPeer: a peer proxy closes a pooled
// connection (close_notify, then FIN) while it is idle; the client proxy
// reads the close through TLS before it sends the next request, which
// then goes on a new connection, whatever its method, and is seen once.
func TestPooledMeshTLSConnectionClosedByPeer(t *testing.T) {
	mp := newMeshPeers(t)
	var seen atomic.Int32
	ln, err := tls.Listen("tcp", "127.0.0.1:0", meshtls.ServerConfig(mp.apiSVID, mp.ca.Bundle(), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close() // one request a connection, then close_notify
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				seen.Add(1)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				// Closed once idle: close_notify comes apart from the
				// response, not read with it.
				time.Sleep(5 * time.Millisecond)
			}()
		}
	}()
	peer := netip.MustParseAddrPort(ln.Addr().String())
	client := mp.clientProxy(t, &fakeBalancer{eps: []httpproxy.Endpoint{{Addr: peer, Identity: mp.api.String()}}})
	c := dial(t, client.addr)
	br := bufio.NewReader(c)
	for i, req := range []string{
		"POST /1 HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n\r\norder",
		"POST /2 HTTP/1.1\r\nHost: api\r\nContent-Length: 0\r\n\r\n",
		"POST /3 HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n\r\norder",
	} {
		io.WriteString(c, req)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || seen.Load() != int32(i+1) {
			t.Fatalf("POST %d: %d, the peer saw %d requests; want 200, %d", i+1, res.StatusCode, seen.Load(), i+1)
		}
		time.Sleep(30 * time.Millisecond) // the close reaches the client proxy
	}
}

// TestShutdownSaysConnectionClose: a response relayed while the proxy
// shuts down tells its client that the connection closes, so that a
// client proxy does not pool it.
func TestShutdownSaysConnectionClose(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{})
	app := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		io.WriteString(w, "ok")
	}))
	p := startTestProxy(t, app)
	got := make(chan *http.Response, 1)
	go func() {
		res, err := http.Get("http://" + p.addr + "/")
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		got <- res
	}()
	<-arrived
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	}()
	for !p.shuttingDown() {
		time.Sleep(time.Millisecond)
	}
	close(release)
	res, ok := <-got
	if ok {
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !res.Close {
			t.Errorf("got %d, Connection: close %v; want 200 and Connection: close", res.StatusCode, res.Close)
		}
	}
	<-stopped
}

// TestGoodbyeToIdlePeer: a server proxy that ends a peer proxy's idle
// connection, shutting down or idle too long, first answers not delivered
// for whatever request the peer sends on it then, and never serves one;
// a plain text client's connection just closes.
func TestGoodbyeToIdlePeer(t *testing.T) {
	mp := newMeshPeers(t)
	for _, tc := range []struct {
		name string
		opts []func(*Config)
		end  func(*serverPod)
	}{
		{name: "shutdown", end: (*serverPod).stop},
		{name: "idle timeout", opts: []func(*Config){func(c *Config) { c.IdleTimeout = 100 * time.Millisecond }},
			end: func(*serverPod) { time.Sleep(150 * time.Millisecond) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := startEchoApp(t)
			pod := mp.serverPod(t, app.addr, tc.opts...)
			c, err := tls.Dial("tcp", pod.addr.String(), meshtls.ClientConfig(mp.webSVID, mp.ca.Bundle(), mp.api))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: api\r\n\r\n")
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			if res.StatusCode != 200 || res.Close {
				t.Fatalf("GET: %d, Connection: close %v; want 200, kept alive", res.StatusCode, res.Close)
			}
			tc.end(pod)
			time.Sleep(20 * time.Millisecond) // the goodbye is on its way: a request crosses it
			io.WriteString(c, "POST /2 HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n\r\norder")
			res, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("after the POST: %v, want the goodbye", err)
			}
			io.Copy(io.Discard, res.Body)
			if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Mesh-Proxy-Not-Delivered") != "1" || !res.Close {
				t.Errorf("got %d %v, want 503 with Mesh-Proxy-Not-Delivered: 1 and Connection: close", res.StatusCode, res.Header)
			}
			if _, err := br.ReadByte(); err == nil {
				t.Error("the connection goes on after the goodbye")
			}
			time.Sleep(300 * time.Millisecond) // a POST wrongly served would reach the application by now
			if saw := app.take(); len(saw) != 1 {
				t.Errorf("the application saw %q, want the GET alone", saw)
			}
		})
	}

	t.Run("plain text client", func(t *testing.T) {
		p := startTestProxy(t, startEchoApp(t).addr, func(c *Config) { c.IdleTimeout = 100 * time.Millisecond })
		c := dial(t, p.addr)
		br := bufio.NewReader(c)
		io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: api\r\n\r\n")
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		if b, err := br.ReadByte(); err == nil {
			t.Errorf("got %q after the idle timeout, want the connection closed", b)
		}
	})
}

// TestScaleDown: POSTs one after the other to a destination of two pods,
// while the first loses its application, then its proxy shuts down, as a
// pod scaled down whose application exits at once on SIGTERM: every one
// succeeds, seen once by the second pod's application.
func TestScaleDown(t *testing.T) {
	mp := newMeshPeers(t)
	goneApp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "POST")
	}))
	t.Cleanup(goneApp.Close)
	gone := mp.serverPod(t, goneApp.Listener.Addr().String())
	live := startEchoApp(t)
	b := &fakeBalancer{eps: []httpproxy.Endpoint{
		{Addr: gone.addr, Identity: mp.api.String()},
		{Addr: mp.serverProxy(t, live.addr), Identity: mp.api.String()},
	}}
	client := mp.clientProxy(t, b)
	hc := &http.Client{Timeout: 10 * time.Second}
	for i := range 30 {
		switch i {
		case 10:
			goneApp.Listener.Close()
			goneApp.CloseClientConnections()
		case 20:
			gone.stop()
		}
		body := fmt.Sprintf("order %d", i)
		res, err := hc.Post("http://"+client.addr+"/orders", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST %d: %v", i, err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.HasPrefix(string(got), "POST") {
			t.Errorf("POST %d: %d %q, want 200", i, res.StatusCode, got)
		}
	}
	if n := len(live.take()); n < 20 {
		t.Errorf("the second pod's application saw %d POSTs, want the 20 after the first lost its own, and more", n)
	}
	if n := retries(t, client.m); n < 10 {
		t.Errorf("retries counted: %v, want at least 10: the first pod got POSTs after it lost its application", n)
	}
}
