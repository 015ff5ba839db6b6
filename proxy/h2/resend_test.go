package h2

import (
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
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	testpb "google.golang.org/grpc/interop/grpc_testing"

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

// listenMeshTLS accepts api's mesh TLS connections and hands each, with
// the identity its client proved, to serve.
func (mp *meshPeers) listenMeshTLS(t testing.TB, serve func(c net.Conn, peer string)) (netip.AddrPort, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := meshtls.ServerConfig(mp.apiSVID, mp.ca.Bundle(), nil)
	var conns sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				tc := tls.Server(c, cfg)
				if err := tc.Handshake(); err != nil {
					c.Close()
					return
				}
				peer, err := meshtls.PeerID(tc.ConnectionState())
				if err != nil {
					tc.Close()
					return
				}
				serve(tc, peer.String())
			})
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Wait()
	})
	return netip.MustParseAddrPort(ln.Addr().String()), ln
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

func (mp *meshPeers) serverPod(t testing.TB, app string) *serverPod {
	t.Helper()
	p := New(Config{Direction: metrics.Inbound, Metrics: metrics.New(),
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))})
	target := netip.MustParseAddrPort(app)
	pod := &serverPod{p: p}
	pod.addr, pod.ln = mp.listenMeshTLS(t, func(c net.Conn, peer string) {
		p.Serve(c, httpproxy.ConnInfo{Target: target, ClientID: peer})
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return pod
}

// clientProxy starts web's client proxy, which balances the requests of
// its clients over b's endpoints, in mesh TLS to those with an identity.
func (mp *meshPeers) clientProxy(t testing.TB, b *fakeBalancer) *testProxy {
	t.Helper()
	return startTestProxy(t, "127.0.0.1:1", func(c *Config, _ *httpproxy.ConnInfo) {
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

// echoApp is an h2c application that answers every request with its
// method and body length, and keeps what it saw.
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

// slowBody is a request body that comes in parts, with a pause before the
// last: the client proxy forwards the first ones before it has the rest.
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

// refusingPeer is a peer proxy of api, over mesh TLS, that reads each
// stream's DATA until it has after bytes of it, or the stream ends, and
// then refuses the stream (REFUSED_STREAM), as a server proxy would that
// read its client's body before it found its application gone.
func (mp *meshPeers) refusingPeer(t testing.TB, after int) netip.AddrPort {
	t.Helper()
	addr, _ := mp.listenMeshTLS(t, func(c net.Conn, _ string) {
		defer c.Close()
		buf := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		fr.WriteSettings()
		got := map[uint32]int{}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.MetaHeadersFrame:
				got[f.StreamID] = 0
				if f.StreamEnded() {
					fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
				}
			case *http2.DataFrame:
				n, ok := got[f.StreamID]
				if !ok {
					continue
				}
				n += len(f.Data())
				got[f.StreamID] = n
				if l := uint32(len(f.Data())); l > 0 {
					fr.WriteWindowUpdate(0, l)
					fr.WriteWindowUpdate(f.StreamID, l)
				}
				if n >= after || f.StreamEnded() {
					delete(got, f.StreamID)
					fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
				}
			}
		}
	})
	return addr
}

// TestNotDeliveredGoesToAnotherEndpoint: a destination of two pods, the
// first of which has lost its application (its port is closed) while its
// proxy still serves, or which refuses the stream once it read its body:
// every request, whatever its method and body, is answered by the second
// pod and seen once, whole, by its application; the first pod is reported
// unreachable, so the balancer ejects it.
func TestNotDeliveredGoesToAnotherEndpoint(t *testing.T) {
	mp := newMeshPeers(t)
	live := startEchoApp(t)
	other := httpproxy.Endpoint{Addr: mp.serverProxy(t, live.addr), Identity: mp.api.String()}
	big := strings.Repeat("b", 60<<10)
	cases := []struct {
		name   string
		method string
		body   func() io.Reader
		want   string // what the application sees
	}{
		{name: "GET", method: "GET", want: "GET "},
		{name: "POST", method: "POST",
			body: func() io.Reader { return strings.NewReader("order 1") }, want: "POST order 1"},
		{name: "POST streamed", method: "POST",
			body: func() io.Reader { return &slowBody{parts: [][]byte{[]byte("order "), []byte("2")}} }, want: "POST order 2"},
		{name: "PUT of 60 KiB", method: "PUT",
			body: func() io.Reader { return strings.NewReader(big) }, want: "PUT " + big},
	}
	for _, first := range []struct {
		name string
		addr netip.AddrPort
	}{
		{"server proxy without its application", mp.serverProxy(t, closedPort(t).String())},
		{"peer refusing once it read the body", mp.refusingPeer(t, 1<<20)},
	} {
		t.Run(first.name, func(t *testing.T) {
			b := &fakeBalancer{eps: []httpproxy.Endpoint{{Addr: first.addr, Identity: mp.api.String()}, other}}
			client := mp.clientProxy(t, b)
			hc := h2cClient(t)
			for i, tc := range cases {
				b.restart()
				var body io.Reader
				if tc.body != nil {
					body = tc.body()
				}
				req, _ := http.NewRequest(tc.method, "http://"+client.addr+"/orders", body)
				res, err := hc.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				got, _ := io.ReadAll(res.Body)
				res.Body.Close()
				method, sent, _ := strings.Cut(tc.want, " ")
				if want := fmt.Sprintf("%s %d", method, len(sent)); res.StatusCode != 200 || string(got) != want {
					t.Errorf("%s: got %d %q, want 200 %q", tc.name, res.StatusCode, got, want)
				}
				if saw := live.take(); len(saw) != 1 || saw[0] != tc.want {
					t.Errorf("%s: the live application saw %d requests, want exactly %.40q", tc.name, len(saw), tc.want)
				}
				if errs := b.reported(first.addr); len(errs) != 1 || !errors.Is(errs[0], balance.ErrUnreachable) {
					t.Errorf("%s: the refusing pod was reported %v, want one unreachable", tc.name, errs)
				}
				if n := retries(t, client.m); n != float64(i+1) {
					t.Errorf("%s: retries counted: %v, want %d", tc.name, n, i+1)
				}
			}
		})
	}
}

// TestNotDeliveredGRPC: a gRPC call to a pod whose application is gone
// goes to the other pod.
func TestNotDeliveredGRPC(t *testing.T) {
	mp := newMeshPeers(t)
	app, _ := startGRPC(t)
	b := &fakeBalancer{eps: []httpproxy.Endpoint{
		{Addr: mp.serverProxy(t, closedPort(t).String()), Identity: mp.api.String()},
		{Addr: mp.serverProxy(t, app), Identity: mp.api.String()},
	}}
	client := grpcClient(t, mp.clientProxy(t, b).addr)
	body := bytes.Repeat([]byte("g"), 10<<10)
	res, err := client.UnaryCall(context.Background(), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.GetPayload().GetBody(), body) {
		t.Error("the echo differs")
	}
}

// TestNotDeliveredOnlyFromAProvenPeer: Mesh-Proxy-Not-Delivered that an
// application sends goes to no client, through its pod's server proxy or
// from a pod out of the mesh; a REFUSED_STREAM from a pod out of the mesh
// goes to the same pod again, never to another; and a plain text client
// of a server proxy is answered as ever.
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
			client := mp.clientProxy(t, &fakeBalancer{eps: []httpproxy.Endpoint{tc.first, other}})
			forged.Store(0)
			res, err := h2cClient(t).Post("http://"+client.addr+"/orders", "text/plain", strings.NewReader("order"))
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Mesh-Proxy-Not-Delivered") != "" {
				t.Errorf("got %d %v, want the application's 503 without Mesh-Proxy-Not-Delivered", res.StatusCode, res.Header)
			}
			if n := forged.Load(); n != 1 {
				t.Errorf("the application saw %d requests, want 1", n)
			}
			if saw := live.take(); len(saw) != 0 {
				t.Errorf("the request was sent again: the other pod saw %q", saw)
			}
		})
	}

	t.Run("REFUSED_STREAM from a pod out of the mesh", func(t *testing.T) {
		var refused atomic.Int32
		plain := netip.MustParseAddrPort(resettingTarget(t, http2.ErrCodeRefusedStream, &refused))
		client := mp.clientProxy(t, &fakeBalancer{eps: []httpproxy.Endpoint{{Addr: plain}, other}})
		res, err := h2cClient(t).Get("http://" + client.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway || refused.Load() < 2 {
			t.Errorf("got %d after %d refusals, want 502 after the same pod refused it again", res.StatusCode, refused.Load())
		}
		if saw := live.take(); len(saw) != 0 {
			t.Errorf("the request went to another pod: it saw %q", saw)
		}
		if n := retries(t, client.m); n != float64(refused.Load()-1) {
			t.Errorf("retries counted: %v, want %d", n, refused.Load()-1)
		}
	})

	t.Run("a plain text client of a server proxy", func(t *testing.T) {
		p := startTestProxy(t, closedPort(t).String())
		res, err := h2cClient(t).Post("http://"+p.addr+"/orders", "text/plain", strings.NewReader("order"))
		if err != nil {
			t.Fatalf("%v, want the 502 of old", err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway {
			t.Errorf("got %d, want 502", res.StatusCode)
		}
	})
}

// TestNotDeliveredLargeBodyIsNotReplayed: a body that went out past the
// replay buffer is not kept, so a request whose stream was refused after
// it is answered, not sent again.
func TestNotDeliveredLargeBodyIsNotReplayed(t *testing.T) {
	mp := newMeshPeers(t)
	live := startEchoApp(t)
	b := &fakeBalancer{eps: []httpproxy.Endpoint{
		{Addr: mp.refusingPeer(t, 2*httpproxy.DefaultReplayLimit), Identity: mp.api.String()},
		{Addr: mp.serverProxy(t, live.addr), Identity: mp.api.String()},
	}}
	client := mp.clientProxy(t, b)
	res, err := h2cClient(t).Post("http://"+client.addr+"/upload", "application/octet-stream", bytes.NewReader(make([]byte, 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("got %d, want 503", res.StatusCode)
	}
	if saw := live.take(); len(saw) != 0 {
		t.Errorf("the 1 MB POST was sent again: the other pod saw %d requests", len(saw))
	}
	if n := retries(t, client.m); n != 0 {
		t.Errorf("retries counted: %v, want 0", n)
	}
}

// TestScaleDown: POSTs one after the other to a destination of two pods,
// while the first loses its application, then its proxy shuts down, as a
// pod scaled down whose application exits at once on SIGTERM: every one
// succeeds.
func TestScaleDown(t *testing.T) {
	mp := newMeshPeers(t)
	goneApp := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "POST")
	}))
	goneApp.EnableHTTP2 = true
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	goneApp.Config.Protocols = &protocols
	goneApp.Start()
	t.Cleanup(goneApp.Close)
	gone := mp.serverPod(t, goneApp.Listener.Addr().String())
	live := startEchoApp(t)
	b := &fakeBalancer{eps: []httpproxy.Endpoint{
		{Addr: gone.addr, Identity: mp.api.String()},
		{Addr: mp.serverProxy(t, live.addr), Identity: mp.api.String()},
	}}
	client := mp.clientProxy(t, b)
	hc := h2cClient(t)
	for i := range 30 {
		switch i {
		case 10:
			goneApp.Listener.Close()
			goneApp.CloseClientConnections()
		case 20:
			gone.stop()
		}
		res, err := hc.Post("http://"+client.addr+"/orders", "text/plain", strings.NewReader(fmt.Sprintf("order %d", i)))
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
