package httpproxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// h2Target runs h on loopback over HTTP/1.1 and h2c with prior knowledge.
func h2Target(tb testing.TB, h http.Handler) netip.AddrPort {
	tb.Helper()
	srv := httptest.NewUnstartedServer(h)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Config.DisableGeneralOptionsHandler = true // OPTIONS * is h's too
	srv.Start()
	tb.Cleanup(srv.Close)
	return netip.MustParseAddrPort(srv.Listener.Addr().String())
}

// h2cClient speaks HTTP/2 with prior knowledge only.
func h2cClient(tb testing.TB) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, DisableCompression: true}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// newProxy returns a Proxy for cfg (Metrics and Log filled in when
// unset), shut down at cleanup.
func newProxy(tb testing.TB, cfg httpproxy.Config) *httpproxy.Proxy {
	tb.Helper()
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(&panicLog{})
	}
	p := httpproxy.New(cfg)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return p
}

// h2Front accepts connections on loopback and hands each to p with
// ServeHTTP2, as the proxy's sides do once they detected the HTTP/2
// preface, and counts the calls that returned.
type h2Front struct {
	addr string
	wg   sync.WaitGroup

	mu       sync.Mutex
	returned int      // guarded by mu
	heads    []string // guarded by mu: each connection's first bytes
}

// serveH2 starts an h2Front for p whose connections get info and ctx.
// Cleanup stops accepting and waits for every ServeHTTP2 call to return.
func serveH2(tb testing.TB, ctx context.Context, p *httpproxy.Proxy, info httpproxy.ConnInfo) *h2Front {
	tb.Helper()
	ln := loopback(tb)
	f := &h2Front{addr: ln.Addr().String()}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				p.ServeHTTP2(ctx, &headConn{Conn: c, f: f}, info)
				f.mu.Lock()
				f.returned++
				f.mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		f.wg.Wait()
	})
	return f
}

// served is the number of ServeHTTP2 calls that returned.
func (f *h2Front) served() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.returned
}

// headConn records the first bytes read from a connection.
type headConn struct {
	net.Conn
	f    *h2Front
	once sync.Once
}

func (c *headConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.once.Do(func() {
			c.f.mu.Lock()
			c.f.heads = append(c.f.heads, string(b[:n]))
			c.f.mu.Unlock()
		})
	}
	return n, err
}

// waitFor polls cond for up to 5s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("still not %s after 5s", what)
		}
	}
}

// TestHTTP2HandedOver: a connection handed over with ServeHTTP2 is served
// by net/http's HTTP/2, its requests multiplexed, each decided by the
// connection's Authorizer and sent over h2c to its target, the response's
// trailers coming back; ServeHTTP2 returns once the client closes it.
func TestHTTP2HandedOver(t *testing.T) {
	target := h2Target(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-Proto", r.Proto)
		fmt.Fprintf(w, "%s %d", r.URL.Path, len(body))
		w.Header().Set("X-Sum", "42")
	}))
	p := newProxy(t, httpproxy.Config{Direction: metrics.Inbound})
	front := serveH2(t, t.Context(), p, httpproxy.ConnInfo{Target: target, Authz: denyPrefix{}})
	client := h2cClient(t)
	// The client's connection, closed at the end whether or not the
	// client counts it idle (the denied request's body may still be
	// going when its answer arrived).
	var mu sync.Mutex
	var conns []net.Conn // guarded by mu
	client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}
	// A first request makes the connection the others then share: at
	// once, each would dial its own.
	res, err := client.Get("http://" + front.addr + "/first")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()

	type answer struct {
		Status      int
		Proto, Body string
		Trailer     string
	}
	paths := []string{"/a", "/b", "/deny/c", "/d"}
	got := make([]answer, len(paths))
	var wg sync.WaitGroup
	for i, path := range paths {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", "http://"+front.addr+path, io.NopCloser(strings.NewReader("hello")))
			res, err := client.Do(req)
			if err != nil {
				t.Errorf("%s: %v", path, err)
				return
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			got[i] = answer{res.StatusCode, res.Header.Get("X-Proto"), strings.TrimSpace(string(body)),
				res.Trailer.Get("X-Sum")}
		})
	}
	wg.Wait()
	want := []answer{
		{200, "HTTP/2.0", "/a 5", "42"},
		{200, "HTTP/2.0", "/b 5", "42"},
		{403, "", `mesh-proxy: unauthorized: server "api" allows no traffic from café`, ""},
		{200, "HTTP/2.0", "/d 5", "42"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("answers (-want +got):\n%s", diff)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 1 {
		t.Errorf("the client made %d connections, want 1", len(conns))
	}
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, "returned from ServeHTTP2 after the client closed", func() bool { return front.served() == len(conns) })
}

// TestRequestTrailers: the trailers a client sends after its request body
// reach the target, whichever protocol either side speaks.
func TestRequestTrailers(t *testing.T) {
	target := h2Target(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Got", r.Proto+" "+r.Trailer.Get("X-Client-Sum"))
	}))
	p := newProxy(t, httpproxy.Config{Direction: metrics.Inbound})
	h2 := serveH2(t, t.Context(), p, httpproxy.ConnInfo{Target: target})
	h1 := loopback(t)
	go func() {
		for {
			c, err := h1.Accept()
			if err != nil {
				return
			}
			p.ServeHTTP1(c, httpproxy.ConnInfo{Target: target})
		}
	}()
	h1tr := &http.Transport{}
	t.Cleanup(h1tr.CloseIdleConnections)
	for _, tc := range []struct {
		name   string
		client *http.Client
		addr   string
		want   string
	}{
		{"HTTP/1.1", &http.Client{Transport: h1tr, Timeout: 10 * time.Second}, h1.Addr().String(), "HTTP/1.1 5"},
		{"HTTP/2", h2cClient(t), h2.addr, "HTTP/2.0 5"},
	} {
		req, _ := http.NewRequest("POST", "http://"+tc.addr+"/", io.NopCloser(strings.NewReader("hello")))
		req.Trailer = http.Header{"X-Client-Sum": {"5"}}
		res, err := tc.client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if got := res.Header.Get("X-Got"); got != tc.want {
			t.Errorf("%s: the target got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestHTTP2EarlyHints: a 1xx the target sends on an HTTP/2 stream reaches
// the client before the response.
func TestHTTP2EarlyHints(t *testing.T) {
	target := h2Target(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "ok")
	}))
	p := newProxy(t, httpproxy.Config{Direction: metrics.Inbound})
	front := serveH2(t, t.Context(), p, httpproxy.ConnInfo{Target: target})
	var hints []string
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+front.addr+"/", nil)
	res, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if want := []string{"103 </style.css>; rel=preload"}; !cmp.Equal(want, hints) || res.StatusCode != 200 {
		t.Errorf("got %d after 1xx %q, want 200 after %q", res.StatusCode, hints, want)
	}
}

// TestHTTP2ContextEnds: ServeHTTP2 returns when its ctx ends, closing the
// connection, and the request in flight on it ends too.
func TestHTTP2ContextEnds(t *testing.T) {
	started, ended := make(chan struct{}), make(chan struct{})
	target := h2Target(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done() // the proxy cancels its request when its client's goes
		close(ended)
	}))
	p := newProxy(t, httpproxy.Config{Direction: metrics.Inbound})
	ctx, cancel := context.WithCancel(t.Context())
	front := serveH2(t, ctx, p, httpproxy.ConnInfo{Target: target})
	client := h2cClient(t)
	failed := make(chan error, 1)
	go func() {
		res, err := client.Get("http://" + front.addr + "/")
		if err == nil {
			_, err = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		failed <- err
	}()
	<-started
	cancel()
	waitFor(t, "returned from ServeHTTP2 after its ctx ended", func() bool { return front.served() == 1 })
	if err := <-failed; err == nil {
		t.Error("the request on the closed connection succeeded")
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Error("the target's request still runs 5s after its client's connection closed")
	}
}

// h2Conn is a raw HTTP/2 client connection, to see the frames a client's
// library hides (GOAWAY).
type h2Conn struct {
	c  net.Conn
	fr *http2.Framer
}

func dialH2(tb testing.TB, addr string) *h2Conn {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		tb.Fatal(err)
	}
	h := &h2Conn{c: c, fr: http2.NewFramer(c, c)}
	if err := h.fr.WriteSettings(); err != nil {
		tb.Fatal(err)
	}
	return h
}

// get opens stream id with a GET of path.
func (h *h2Conn) get(tb testing.TB, id uint32, path string) {
	tb.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "api"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		tb.Fatal(err)
	}
}

// until reads frames, acknowledging the server's SETTINGS, until one
// satisfies stop; it returns the error that ended the connection instead,
// if it ended first.
func (h *h2Conn) until(stop func(http2.Frame) bool) (http2.Frame, error) {
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			h.fr.WriteSettingsAck()
		}
		if stop(f) {
			return f, nil
		}
	}
}

// TestHTTP2ShutdownGoAway: Shutdown tells a handed-over HTTP/2 connection
// GOAWAY at once, lets the request in flight finish on it, then closes
// it and returns.
func TestHTTP2ShutdownGoAway(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	target := h2Target(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	}))
	p := httpproxy.New(httpproxy.Config{Direction: metrics.Inbound, Metrics: metrics.New(), Log: slog.New(&panicLog{})})
	front := serveH2(t, t.Context(), p, httpproxy.ConnInfo{Target: target})
	h := dialH2(t, front.addr)
	h.get(t, 1, "/slow")
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- p.Shutdown(ctx)
	}()

	f, err := h.until(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	if err != nil {
		t.Fatalf("no GOAWAY on Shutdown: %v", err)
	}
	if ga := f.(*http2.GoAwayFrame); ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID < 1 {
		t.Errorf("GOAWAY %v, last stream %d; want NO_ERROR keeping stream 1", ga.ErrCode, ga.LastStreamID)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	var body []byte
	_, err = h.until(func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		if ok {
			body = append(body, d.Data()...)
		}
		return ok && d.StreamEnded()
	})
	if err != nil || string(body) != "finished" {
		t.Errorf("stream 1 after GOAWAY: body %q, %v; want \"finished\"", body, err)
	}
	// The server closes the connection once its last stream is done.
	if _, err := h.until(func(http2.Frame) bool { return false }); isTimeout(err) {
		t.Errorf("the connection is still open after its last stream: %v", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	waitFor(t, "returned from ServeHTTP2 after Shutdown", func() bool { return front.served() == 1 })
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestHTTP2ShutdownDeadline: when Shutdown's ctx ends before a request
// does, the HTTP/2 connection is closed, ServeHTTP2 returns, and Shutdown
// says why.
func TestHTTP2ShutdownDeadline(t *testing.T) {
	started := make(chan struct{})
	target := h2Target(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	}))
	p := httpproxy.New(httpproxy.Config{Direction: metrics.Inbound, Metrics: metrics.New(), Log: slog.New(&panicLog{})})
	front := serveH2(t, t.Context(), p, httpproxy.ConnInfo{Target: target})
	h := dialH2(t, front.addr)
	h.get(t, 1, "/stuck")
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want %v", err, context.DeadlineExceeded)
	}
	if _, err := h.until(func(http2.Frame) bool { return false }); isTimeout(err) {
		t.Errorf("the connection is still open after Shutdown gave up: %v", err)
	}
	waitFor(t, "returned from ServeHTTP2 after Shutdown", func() bool { return front.served() == 1 })
}

// TestHTTP2ResponseTimeout: an HTTP/2 request whose target sends no
// response headers within ResponseTimeout gets 504 (gRPC:
// DEADLINE_EXCEEDED), as an HTTP/1 one does.
func TestHTTP2ResponseTimeout(t *testing.T) {
	target := h2Target(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	p := newProxy(t, httpproxy.Config{Direction: metrics.Inbound, ResponseTimeout: 100 * time.Millisecond})
	front := serveH2(t, t.Context(), p, httpproxy.ConnInfo{Target: target})
	client := h2cClient(t)
	for _, tc := range []struct {
		name, contentType    string
		wantCode             int
		wantGRPC, wantHeader string
	}{
		{name: "HTTP", wantCode: 504, wantHeader: "timed out"},
		{name: "gRPC", contentType: "application/grpc", wantCode: 200, wantGRPC: "4", wantHeader: "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", "http://"+front.addr+"/svc/M", strings.NewReader("x"))
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			start := time.Now()
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != tc.wantCode || res.Header.Get("Grpc-Status") != tc.wantGRPC || res.Header.Get("Mesh-Proxy-Error") != tc.wantHeader {
				t.Errorf("got %d grpc-status %q error %q, want %d %q %q", res.StatusCode, res.Header.Get("Grpc-Status"),
					res.Header.Get("Mesh-Proxy-Error"), tc.wantCode, tc.wantGRPC, tc.wantHeader)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("answered after %v, want about 100ms", took)
			}
		})
	}
}

// TestOrigProto: between two proxies an HTTP/1.1 request rides HTTP/2,
// marked with OrigProtoHeader, and the server proxy gives its application
// HTTP/1.1 again without the mark; an HTTP/2 request stays HTTP/2 all the
// way, and a mark the client application sent itself goes nowhere.
func TestOrigProto(t *testing.T) {
	type seenReq struct{ Proto, Mark string }
	var mu sync.Mutex
	var seenReqs []seenReq
	app := h2Target(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seenReqs = append(seenReqs, seenReq{r.Proto, r.Header.Get(httpproxy.OrigProtoHeader)})
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	// The server proxy: its client proved an identity (mesh TLS, here left
	// out: MeshTLS below hands the connection back as it is).
	server := newProxy(t, httpproxy.Config{Direction: metrics.Inbound})
	serverFront := serveH2(t, t.Context(), server, httpproxy.ConnInfo{Target: app, ClientID: "spiffe://cluster.local/ns/a/sa/client"})
	serverAddr := netip.MustParseAddrPort(serverFront.addr)

	client := newProxy(t, httpproxy.Config{
		Direction: metrics.Outbound,
		Pick: func(context.Context, netip.AddrPort) (httpproxy.Endpoint, error) {
			return httpproxy.Endpoint{Addr: serverAddr, Identity: "spiffe://cluster.local/ns/b/sa/server"}, nil
		},
		MeshTLS: func(_ context.Context, c net.Conn, _ string) (net.Conn, error) { return c, nil },
	})
	h1Front := loopback(t)
	clientH2 := serveH2(t, t.Context(), client, httpproxy.ConnInfo{Target: app})
	go func() {
		for {
			c, err := h1Front.Accept()
			if err != nil {
				return
			}
			client.ServeHTTP1(c, httpproxy.ConnInfo{Target: app})
		}
	}()

	h1 := &http.Transport{DisableCompression: true}
	t.Cleanup(h1.CloseIdleConnections)
	for _, tc := range []struct {
		name   string
		client *http.Client
		addr   string
	}{
		{"HTTP/1.1", &http.Client{Transport: h1, Timeout: 10 * time.Second}, h1Front.Addr().String()},
		{"HTTP/2", h2cClient(t), clientH2.addr},
	} {
		req, _ := http.NewRequest("GET", "http://"+tc.addr+"/", nil)
		req.Header.Set(httpproxy.OrigProtoHeader, "HTTP/1.1") // the application's own: dropped
		res, err := tc.client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("%s: %s", tc.name, res.Status)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]seenReq{{"HTTP/1.1", ""}, {"HTTP/2.0", ""}}, seenReqs); diff != "" {
		t.Errorf("the application's requests (-want +got):\n%s", diff)
	}
	serverFront.mu.Lock()
	defer serverFront.mu.Unlock()
	for _, head := range serverFront.heads {
		if !strings.HasPrefix(head, http2.ClientPreface[:len("PRI * HTTP/2.0")]) {
			t.Errorf("the client proxy spoke %q to the server proxy, want HTTP/2", head)
		}
	}
	if len(serverFront.heads) == 0 {
		t.Error("the server proxy saw no connection")
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// TestHTTP2BurstDialsOnce: a burst of HTTP/2 requests to a target the
// proxy has no connection to yet opens one connection, which they share,
// not one each (of which all but one would be closed unused).
func TestHTTP2BurstDialsOnce(t *testing.T) {
	const burst = 50 // within the streams a connection may carry before the target's SETTINGS arrive
	var conns, started atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		<-release
		io.WriteString(w, "ok")
	}))
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Listener = countingListener{Listener: srv.Listener, n: &conns}
	srv.Start()
	t.Cleanup(srv.Close)
	target := netip.MustParseAddrPort(srv.Listener.Addr().String())
	px := newProxy(t, httpproxy.Config{Direction: metrics.Inbound})
	front := serveH2(t, t.Context(), px, httpproxy.ConnInfo{Target: target})
	client := h2cClient(t)

	var wg sync.WaitGroup
	var ok atomic.Int64
	for range burst {
		wg.Go(func() {
			res, err := client.Get("http://" + front.addr + "/")
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				ok.Add(1)
			}
		})
	}
	waitFor(t, "all requests at the target", func() bool { return started.Load() == burst })
	time.Sleep(100 * time.Millisecond) // for a dial still under way to show
	if n := conns.Load(); n != 1 {
		t.Errorf("%d requests at once opened %d connections to the target, want 1", burst, n)
	}
	close(release)
	wg.Wait()
	if ok.Load() != burst {
		t.Errorf("%d of %d requests succeeded", ok.Load(), burst)
	}
}

// TestHTTP2ConnectFailureShared: HTTP/2 requests that wait for a
// connection to a target whose dial times out all fail when it does, not
// one ConnectTimeout after the other.
func TestHTTP2ConnectFailureShared(t *testing.T) {
	const connectTimeout = 300 * time.Millisecond
	target := unresponsive(t)
	px := newProxy(t, httpproxy.Config{Direction: metrics.Inbound, ConnectTimeout: connectTimeout})
	front := serveH2(t, t.Context(), px, httpproxy.ConnInfo{Target: target})
	client := h2cClient(t)
	const requests = 5
	var wg sync.WaitGroup
	took := make([]time.Duration, requests)
	codes := make([]int, requests)
	for i := range requests {
		wg.Go(func() {
			start := time.Now()
			res, err := client.Get("http://" + front.addr + "/")
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			took[i], codes[i] = time.Since(start), res.StatusCode
		})
	}
	wg.Wait()
	for i := range requests {
		// One after the other, the last would take 5 × 300 ms.
		if codes[i] != http.StatusGatewayTimeout || took[i] > 3*connectTimeout {
			t.Errorf("request %d: %d after %v, want 504 after about %v", i, codes[i], took[i], connectTimeout)
		}
	}
}

// TestOptionsAsteriskForwarded: OPTIONS * goes to the target like any
// request, over HTTP/1.1 and HTTP/2, instead of net/http's server
// answering it.
func TestOptionsAsteriskForwarded(t *testing.T) {
	target := h2Target(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Target", r.Method+" "+r.RequestURI)
		w.WriteHeader(http.StatusNoContent)
	}))
	p := newProxy(t, httpproxy.Config{Direction: metrics.Inbound})

	raw := []byte("OPTIONS * HTTP/1.1\r\nHost: api\r\n\r\n")
	reqs, _ := parseRequests(raw)
	res, err := responses(exchange(t, p, loopback(t), target, raw), reqs)
	if err != nil || len(res) != 1 {
		t.Fatalf("HTTP/1.1: %d responses, %v", len(res), err)
	}
	if got := res[0].Header.Get("X-Target"); res[0].StatusCode != http.StatusNoContent || got != "OPTIONS *" {
		t.Errorf("HTTP/1.1: %s, the target saw %q; want 204 from the target, which saw OPTIONS *", res[0].Status, got)
	}

	front := serveH2(t, t.Context(), p, httpproxy.ConnInfo{Target: target})
	h := dialH2(t, front.addr)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "OPTIONS"}, {":scheme", "http"}, {":authority", "api"}, {":path", "*"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	var fields []hpack.HeaderField
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) { fields = append(fields, f) })
	if _, err := h.until(func(f http2.Frame) bool {
		hf, ok := f.(*http2.HeadersFrame)
		if ok {
			dec.Write(hf.HeaderBlockFragment())
		}
		return ok
	}); err != nil {
		t.Fatal(err)
	}
	want := []hpack.HeaderField{{Name: ":status", Value: "204"}, {Name: "x-target", Value: "OPTIONS *"}}
	var got []hpack.HeaderField
	for _, f := range fields {
		if f.Name == ":status" || f.Name == "x-target" {
			got = append(got, f)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("HTTP/2 answer (-want +got):\n%s", diff)
	}
}

// BenchmarkHTTP2Hop is one HTTP/2 request through a handed-over
// connection to an h2c target, in parallel on one client connection, for
// response bodies of a few sizes. Run it with
//
//	go test -run '^$' -bench '^BenchmarkHTTP2Hop$' -benchmem ./proxy/httpproxy
func BenchmarkHTTP2Hop(b *testing.B) {
	for _, size := range []int{0, 1 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("body=%d", size), func(b *testing.B) {
			body := bytes.Repeat([]byte("x"), size)
			target := h2Target(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Write(body)
			}))
			p := newProxy(b, httpproxy.Config{Direction: metrics.Inbound})
			front := serveH2(b, b.Context(), p, httpproxy.ConnInfo{Target: target})
			client := h2cClient(b)
			url := "http://" + front.addr + "/"
			get := func() error {
				res, err := client.Get(url)
				if err != nil {
					return err
				}
				_, err = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				return err
			}
			if err := get(); err != nil { // the connections, before the clock
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := get(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
