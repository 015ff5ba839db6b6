package h2

// Behaviours proxy/httpproxy's tests covered for its net/http HTTP/2
// path, which proxy/h2 replaced, checked here on h2 itself.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/tap"
)

// TestEarlyHintsPassOn: a 1xx the target sends reaches the client before
// the response, with its fields.
func TestEarlyHintsPassOn(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "ok")
	}))
	p := startTestProxy(t, backend)
	var hints []string
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.addr+"/", nil)
	res, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	want := "103 </style.css>; rel=preload"
	if len(hints) != 1 || hints[0] != want || res.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("got %d %q after 1xx %q, want 200 \"ok\" after [%q]", res.StatusCode, b, hints, want)
	}
}

// TestShutdownDeadline: when Shutdown's ctx ends before a stream does,
// the client connection is closed and Shutdown says why.
func TestShutdownDeadline(t *testing.T) {
	started := make(chan struct{})
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	}))
	p := startTestProxy(t, backend)
	rc := dialRaw(t, p.addr)
	if err := rc.get(1, "/stuck", true); err != nil {
		t.Fatal(err)
	}
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want %v", err, context.DeadlineExceeded)
	}
	for {
		f, err := rc.next()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the client connection is still open after Shutdown gave up")
		}
		if err != nil {
			break // closed, as it should be
		}
		if _, ok := f.(*http2.GoAwayFrame); !ok {
			t.Errorf("got %v before the connection closed, want at most GOAWAY", f)
		}
	}
}

// TestOptionsAsteriskForwarded: OPTIONS with :path "*" (RFC 9113 8.3.1)
// goes to the target like any request.
func TestOptionsAsteriskForwarded(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Target", r.Method+" "+r.RequestURI)
		w.WriteHeader(http.StatusNoContent)
	}), func(s *http.Server) { s.DisableGeneralOptionsHandler = true }) // net/http's server would answer it itself
	p := startTestProxy(t, backend)
	rc := dialRaw(t, p.addr)
	rc.buf.Reset()
	for _, f := range [][2]string{{":method", "OPTIONS"}, {":scheme", "http"}, {":authority", "svc"}, {":path", "*"}} {
		rc.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.buf.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
		t.Fatal(err)
	}
	f, err := rc.next()
	if err != nil {
		t.Fatal(err)
	}
	h, ok := f.(*http2.MetaHeadersFrame)
	if !ok {
		t.Fatalf("got %v, want a response", f)
	}
	if got := h.PseudoValue("status") + " " + fieldValue(h, "x-target"); got != "204 OPTIONS *" {
		t.Errorf("got %q, want \"204 OPTIONS *\": the target's answer to OPTIONS *", got)
	}
}

func fieldValue(h *http2.MetaHeadersFrame, name string) string {
	for _, f := range h.RegularFields() {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
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

// TestBurstDialsOnce: a burst of requests to a target the proxy has no
// connection to yet opens one connection, which they share, not one each
// (of which all but one would be closed unused, each having paid a mesh
// TLS handshake).
func TestBurstDialsOnce(t *testing.T) {
	const burst = 50 // within the streams one connection carries (the target's default is 250)
	var conns, started atomic.Int64
	release := make(chan struct{})
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		<-release
		io.WriteString(w, "ok")
	}))
	// Count the target's connections through a forwarder in front of it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counted := countingListener{Listener: ln, n: &conns}
	var relays sync.WaitGroup
	t.Cleanup(func() { ln.Close(); relays.Wait() })
	relays.Go(func() {
		for {
			c, err := counted.Accept()
			if err != nil {
				return
			}
			relays.Go(func() { relay(c, backend) })
		}
	})
	p := startTestProxy(t, ln.Addr().String())
	client := h2cClient(t)
	var wg sync.WaitGroup
	var ok atomic.Int64
	for range burst {
		wg.Go(func() {
			res, err := client.Get("http://" + p.addr + "/")
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
	deadline := time.Now().Add(5 * time.Second)
	for started.Load() < burst && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
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

// relay copies c to and from a new connection to addr until either ends.
func relay(c net.Conn, addr string) {
	defer c.Close()
	up, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(up, c)
		up.Close()
		close(done)
	}()
	io.Copy(c, up)
	c.Close()
	<-done
}

// unresponsive is a loopback address whose SYNs go unanswered: a
// listener with a backlog of 0, filled, that never accepts.
func unresponsive(tb testing.TB) netip.AddrPort {
	tb.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		tb.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		tb.Fatal(err)
	}
	in4 := sa.(*syscall.SockaddrInet4)
	addr := netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port))
	// The kernel queues a connection or two past a backlog of 0; fill it
	// until a dial times out.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr.String(), 200*time.Millisecond)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return addr
		}
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
	}
	tb.Fatalf("%s accepted 8 connections into a backlog of 0", addr)
	return addr
}

// TestConnectFailureShared: requests that wait for the one connection
// being made to a target whose dial times out all fail when it does, not
// one ConnectTimeout after the other.
func TestConnectFailureShared(t *testing.T) {
	const connectTimeout = 300 * time.Millisecond
	target := unresponsive(t)
	p := startTestProxy(t, target.String(), func(c *Config, _ *httpproxy.ConnInfo) { c.ConnectTimeout = connectTimeout })
	client := h2cClient(t)
	const requests = 5
	var wg sync.WaitGroup
	took := make([]time.Duration, requests)
	codes := make([]int, requests)
	for i := range requests {
		wg.Go(func() {
			start := time.Now()
			res, err := client.Get("http://" + p.addr + "/")
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

// TestResponseTimeout: a request whose target sends no response headers
// within ResponseTimeout gets 504, gRPC DEADLINE_EXCEEDED, saying why.
func TestResponseTimeout(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	p := startTestProxy(t, backend, func(c *Config, _ *httpproxy.ConnInfo) { c.ResponseTimeout = 100 * time.Millisecond })
	client := h2cClient(t)
	for _, tc := range []struct {
		name, contentType string
		wantCode          int
		wantGRPC          string
	}{
		{name: "HTTP", wantCode: 504},
		{name: "gRPC", contentType: "application/grpc", wantCode: 200, wantGRPC: "4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", "http://"+p.addr+"/svc/M", strings.NewReader("x"))
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
			grpc := res.Header.Get("Grpc-Status") + res.Trailer.Get("Grpc-Status")
			if res.StatusCode != tc.wantCode || grpc != tc.wantGRPC || res.Header.Get("Mesh-Proxy-Error") != "timed out" {
				t.Errorf("got %d grpc-status %q error %q, want %d %q \"timed out\"", res.StatusCode, grpc,
					res.Header.Get("Mesh-Proxy-Error"), tc.wantCode, tc.wantGRPC)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("answered after %v, want about 100ms", took)
			}
		})
	}
}

// script is a Picker that hands out its endpoints in turn and notes
// each outcome reported.
type script struct {
	mu      sync.Mutex
	eps     []netip.AddrPort
	n       int
	reports []string
}

func (s *script) pick(context.Context, netip.AddrPort, string) (httpproxy.Endpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	addr := s.eps[s.n%len(s.eps)]
	s.n++
	return httpproxy.Endpoint{Addr: addr, Report: func(_ time.Duration, err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		what := "ok"
		if err != nil {
			what = "failed"
		}
		s.reports = append(s.reports, addr.String()+" "+what)
	}}, nil
}

func (s *script) taken() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reports...)
}

// TestNoRetryOnceSent: a request whose target connection broke after the
// request went out on it is answered 502, not sent to another endpoint:
// the first may have acted on it.
func TestNoRetryOnceSent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		fr.WriteSettings()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if _, ok := f.(*http2.HeadersFrame); ok {
				break // the request is here: break the connection
			}
		}
		c.(*net.TCPConn).SetLinger(0)
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	breaking := netip.MustParseAddrPort(ln.Addr().String())
	var others atomic.Int64
	other := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { others.Add(1) }))
	s := &script{eps: []netip.AddrPort{breaking, netip.MustParseAddrPort(other)}}
	p := startTestProxy(t, other, func(c *Config, _ *httpproxy.ConnInfo) { c.Pick = s.pick })
	res, err := h2cClient(t).Post("http://"+p.addr+"/order", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", res.StatusCode)
	}
	if n := others.Load(); n != 0 {
		t.Errorf("the request was sent again, to the other endpoint (%d times)", n)
	}
	if got, want := strings.Join(s.taken(), "; "), breaking.String()+" failed"; got != want {
		t.Errorf("reports to the balancer %q, want %q", got, want)
	}
}

// TestTapShowsTheEndpointReached: a watcher sees each request and then
// its response (status, gRPC status, success); a request tried on an
// endpoint that refused the connection, then on another, is tapped once,
// at the endpoint it reached; the query string is not published.
func TestTapShowsTheEndpointReached(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/grpc":
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "14")
		case "/fail":
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	live := netip.MustParseAddrPort(backend)
	s := &script{eps: []netip.AddrPort{closedPort(t), live, live, live}}
	hub := tap.NewHub()
	p := startTestProxy(t, backend, func(c *Config, _ *httpproxy.ConnInfo) { c.Pick, c.Tap = s.pick, hub })
	w, err := hub.Watch(tap.Filter{PathPrefix: "/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	client := h2cClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		method, path string
		status, grpc int
		success      bool
	}{{"GET", "/ok?secret=1", 200, -1, true}, {"POST", "/fail", 500, -1, false}, {"GET", "/grpc", 200, 14, false}} {
		req, _ := http.NewRequest(tc.method, "http://web"+tc.path, nil)
		req.URL.Host = p.addr
		req.Host = "web"
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		reqEv, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		resEv, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if reqEv.Response != nil || resEv.Response == nil || reqEv.ID != resEv.ID {
			t.Fatalf("want a request then its response, got %+v then %+v", reqEv, resEv)
		}
		r := reqEv.Request
		wantPath, _, _ := strings.Cut(tc.path, "?")
		if r.Path != wantPath || r.Method != tc.method || r.Authority != "web" || r.Direction != "inbound" || r.Dst != live.String() {
			t.Errorf("request event %+v, want %s %s to web at %s", r, tc.method, wantPath, live)
		}
		got := resEv.Response
		if got.Status != tc.status || got.GRPCStatus != tc.grpc || got.Success != tc.success || got.Latency <= 0 {
			t.Errorf("%s: response event %+v, want status %d grpc %d success %v", tc.path, got, tc.status, tc.grpc, tc.success)
		}
	}
}

// TestShutdownSendsGoAway: Shutdown tells a client connection GOAWAY
// (NO_ERROR, keeping the stream in flight) at once, lets that stream
// finish on it, then closes the connection and returns.
func TestShutdownSendsGoAway(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	}))
	p := startTestProxy(t, backend)
	rc := dialRaw(t, p.addr)
	if err := rc.get(1, "/slow", true); err != nil {
		t.Fatal(err)
	}
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- p.Shutdown(ctx)
	}()
	f, err := rc.next()
	if err != nil {
		t.Fatalf("no GOAWAY on Shutdown: %v", err)
	}
	if ga, ok := f.(*http2.GoAwayFrame); !ok || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID < 1 {
		t.Fatalf("got %v on Shutdown, want GOAWAY NO_ERROR keeping stream 1", f)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a stream in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	var body []byte
	for {
		f, err := rc.next()
		if err != nil {
			t.Fatalf("stream 1 after GOAWAY: %v, body so far %q", err, body)
		}
		if d, ok := f.(*http2.DataFrame); ok {
			body = append(body, d.Data()...)
			if d.StreamEnded() {
				break
			}
		}
	}
	if string(body) != "finished" {
		t.Errorf("stream 1 after GOAWAY: body %q, want \"finished\"", body)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	for {
		_, err := rc.next()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the connection is still open after its last stream and Shutdown")
		}
		if err != nil {
			break
		}
	}
}

// TestNonUTF8AuthorityAnswered: a non-UTF-8 :authority is no valid
// Prometheus label value, which once made the metrics panic and the
// connection drop. The stream is answered (or refused), and the metrics
// still gather.
func TestNonUTF8AuthorityAnswered(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	p := startTestProxy(t, backend)
	rc := dialRaw(t, p.addr)
	rc.buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "\xff"}, {":path", "/"}} {
		rc.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.buf.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
		t.Fatal(err)
	}
	f, err := rc.next()
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	switch f.(type) {
	case *http2.MetaHeadersFrame:
	case *http2.RSTStreamFrame:
	default:
		t.Errorf("got %v, want a response or a reset of stream 1", f)
	}
	if _, err := p.m.Registry().Gather(); err != nil {
		t.Errorf("the metrics no longer gather: %v", err)
	}
}
