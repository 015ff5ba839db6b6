package h2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
)

// rawClient is an HTTP/2 client made of frames, for what net/http's
// client would never send or would hide.
type rawClient struct {
	t   testing.TB
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialRaw(t testing.TB, addr string, settings ...http2.Setting) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	rc := &rawClient{t: t, c: c, fr: http2.NewFramer(c, c)}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.enc = hpack.NewEncoder(&rc.buf)
	io.WriteString(c, http2.ClientPreface)
	rc.fr.WriteSettings(settings...)
	return rc
}

// get opens stream id with a GET of path.
func (rc *rawClient) get(id uint32, path string, end bool) error {
	rc.buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "svc"}, {":path", path}} {
		rc.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.buf.Bytes(), EndHeaders: true, EndStream: end})
}

// next returns the next frame but SETTINGS, PING and WINDOW_UPDATE. It
// writes nothing (the proxy needs no SETTINGS ACK), so that a test may
// write from another goroutine meanwhile.
func (rc *rawClient) next() (http2.Frame, error) {
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch f.(type) {
		case *http2.SettingsFrame, *http2.WindowUpdateFrame, *http2.PingFrame:
			continue
		}
		return f, nil
	}
}

// TestSlowReaderHoldsOnlyItsOwnStream: a stream whose client grants no
// window keeps its response in the proxy (at most its window), while
// another stream of the same connection gets all of its own.
func TestSlowReaderHoldsOnlyItsOwnStream(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 2<<20)
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(big)
			return
		}
		w.Write([]byte("small and done"))
	}))
	p := startTestProxy(t, backend)
	rc := dialRaw(t, p.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	rc.fr.WriteWindowUpdate(0, 64<<20)
	rc.get(1, "/big", true)
	time.Sleep(100 * time.Millisecond) // the big response fills what the proxy will hold
	rc.get(3, "/small", true)
	rc.fr.WriteWindowUpdate(3, 1<<20)
	var small []byte
	for {
		f, err := rc.next()
		if err != nil {
			t.Fatalf("reading: %v (stream 3 got %q)", err, small)
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			if f.StreamID == 1 {
				t.Fatalf("stream 1 got DATA without window")
			}
			small = append(small, f.Data()...)
			if f.StreamEnded() {
				if string(small) != "small and done" {
					t.Errorf("stream 3 got %q", small)
				}
				return
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("unexpected %v", f)
		}
	}
}

// TestRefusesStreamsPastTheLimit: MaxConcurrentStreams bounds a client
// connection's open streams; one more is refused with REFUSED_STREAM,
// which a client may retry.
func TestRefusesStreamsPastTheLimit(t *testing.T) {
	release := make(chan struct{})
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer close(release)
	p := startTestProxy(t, backend, func(c *Config, _ *httpproxy.ConnInfo) { c.MaxConcurrentStreams = 2 })
	rc := dialRaw(t, p.addr)
	rc.get(1, "/", true)
	rc.get(3, "/", true)
	rc.get(5, "/", true)
	f, err := rc.next()
	if err != nil {
		t.Fatal(err)
	}
	if rst, ok := f.(*http2.RSTStreamFrame); !ok || rst.StreamID != 5 || rst.ErrCode != http2.ErrCodeRefusedStream {
		t.Fatalf("got %v, want RST_STREAM REFUSED_STREAM on stream 5", f)
	}
}

// TestRapidReset: a client that opens streams and resets each at once
// (CVE-2023-44487) is cut off with ENHANCE_YOUR_CALM.
func TestRapidReset(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
	}))
	p := startTestProxy(t, backend)
	rc := dialRaw(t, p.addr)
	go func() {
		for id := uint32(1); id < 2*2000; id += 2 {
			if rc.get(id, "/", true) != nil || rc.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				return
			}
		}
	}()
	for {
		f, err := rc.next()
		if err != nil {
			t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
			}
			return
		}
	}
}

// TestTargetResetReachesClient: a response the target breaks off after
// its head reaches the client as a reset stream, not a clean end.
func TestTargetResetReachesClient(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	p := startTestProxy(t, backend)
	res, err := h2cClient(t).Get("http://" + p.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Fatal("the body ended cleanly; want the target's reset")
	}
}

// TestHeaderListTooLarge: a request head past MaxHeaderBytes gets 431, as
// from net/http's server. (Go's client would not even send it once it has
// the proxy's SETTINGS_MAX_HEADER_LIST_SIZE: frames it is.)
func TestHeaderListTooLarge(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the request reached the target")
	}))
	p := startTestProxy(t, backend, func(c *Config, _ *httpproxy.ConnInfo) { c.MaxHeaderBytes = 4096 })
	rc := dialRaw(t, p.addr)
	rc.buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "svc"}, {":path", "/"}} {
		rc.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := range 20 {
		rc.enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-big-%d", i), Value: strings.Repeat("b", 300)})
	}
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.buf.Bytes(), EndHeaders: true, EndStream: true})
	f, err := rc.next()
	if err != nil {
		t.Fatal(err)
	}
	h, ok := f.(*http2.MetaHeadersFrame)
	if !ok || h.PseudoValue("status") != "431" {
		t.Fatalf("got %v, want a 431 response", f)
	}
}

// denyAll refuses every request.
type denyAll struct{}

func (denyAll) AuthorizeRequest(*http.Request) error { return errors.New("no route allows it") }

func TestPolicyDenial(t *testing.T) {
	backend, _ := startGRPC(t)
	p := startTestProxy(t, backend, func(_ *Config, info *httpproxy.ConnInfo) { info.Authz = denyAll{} })
	t.Run("HTTP", func(t *testing.T) {
		res, err := h2cClient(t).Get("http://" + p.addr + "/secret")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusForbidden || string(b) != "mesh-proxy: unauthorized: no route allows it\n" {
			t.Errorf("got %d %q", res.StatusCode, b)
		}
	})
	t.Run("gRPC", func(t *testing.T) {
		_, err := grpcClient(t, p.addr).EmptyCall(context.Background(), &testpb.Empty{})
		if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != "mesh-proxy: unauthorized: no route allows it" {
			t.Errorf("got %v, want PermissionDenied", err)
		}
	})
}

func TestNoEndpoints(t *testing.T) {
	backend, _ := startGRPC(t)
	p := startTestProxy(t, backend, func(c *Config, _ *httpproxy.ConnInfo) {
		c.Pick = func(context.Context, netip.AddrPort, string) (httpproxy.Endpoint, error) {
			return httpproxy.Endpoint{}, httpproxy.ErrNoEndpoints
		}
	})
	res, err := h2cClient(t).Get("http://" + p.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := "mesh-proxy: no endpoints available for " + p.addr + " (" + backend + ")\n"; res.StatusCode != 503 || string(b) != want {
		t.Errorf("got %d %q, want 503 %q", res.StatusCode, b, want)
	}
	_, err = grpcClient(t, p.addr).EmptyCall(context.Background(), &testpb.Empty{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("gRPC: got %v, want Unavailable", err)
	}
}

// TestConnectFailureTriesAnotherEndpoint: an endpoint that refuses the
// connection is reported unreachable (ejected) and the request goes to
// another one.
func TestConnectFailureTriesAnotherEndpoint(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	dead := closedPort(t)
	var mu sync.Mutex
	var reports []string
	n := 0
	pick := func(context.Context, netip.AddrPort, string) (httpproxy.Endpoint, error) {
		mu.Lock()
		defer mu.Unlock()
		addr := netip.MustParseAddrPort(backend)
		if n++; n == 1 {
			addr = dead
		}
		return httpproxy.Endpoint{Addr: addr, Report: func(_ time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			what := "ok"
			if errors.Is(err, balance.ErrUnreachable) {
				what = "unreachable"
			} else if err != nil {
				what = err.Error()
			}
			reports = append(reports, addr.String()+" "+what)
		}}, nil
	}
	p := startTestProxy(t, backend, func(c *Config, _ *httpproxy.ConnInfo) { c.Pick = pick })
	res, err := h2cClient(t).Get("http://" + p.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("got %d %q", res.StatusCode, b)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{dead.String() + " unreachable", backend + " ok"}
	if strings.Join(reports, "; ") != strings.Join(want, "; ") {
		t.Errorf("reports %q, want %q", reports, want)
	}
}

// closedPort is a loopback address where nothing listens: a socket bound
// to it, never listening, until the test ends, so no one else takes it.
func closedPort(tb testing.TB) netip.AddrPort {
	tb.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		tb.Fatal(err)
	}
	in4 := sa.(*syscall.SockaddrInet4)
	return netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port))
}

// TestTargetStreamLimit: a target that takes one stream at a time gets
// more connections, and every request gets through.
func TestTargetStreamLimit(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		w.Write([]byte("ok"))
	}), func(s *http.Server) { s.HTTP2.MaxConcurrentStreams = 1 })
	p := startTestProxy(t, backend)
	client := h2cClient(t)
	var wg sync.WaitGroup
	start := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := client.Get("http://" + p.addr + "/")
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || string(b) != "ok" {
				t.Errorf("got %d %q", res.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > 1500*time.Millisecond { // one after the other: 2.4s
		t.Errorf("8 requests took %v: they waited for each other, not for more connections", took)
	}
}

// TestGoAwayFromTarget: a target connection that says GOAWAY before
// processing a stream sees it sent again on a new connection.
func TestGoAwayFromTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	// Connections after the first go to a real h2c server.
	later := &connListener{conns: make(chan net.Conn, 4), done: make(chan struct{}), addr: ln.Addr()}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protocols, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("second connection"))
	})}
	go srv.Serve(later)
	t.Cleanup(func() { srv.Close() })
	go func() {
		first := true
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !first {
				later.conns <- c
				continue
			}
			first = false
			go func() {
				defer c.Close()
				// Read the preface and SETTINGS, answer with SETTINGS,
				// then refuse the first stream with GOAWAY.
				buf := make([]byte, len(http2.ClientPreface))
				io.ReadFull(c, buf)
				fr := http2.NewFramer(c, c)
				fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				fr.WriteSettings()
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if _, ok := f.(*http2.MetaHeadersFrame); ok {
						fr.WriteGoAway(0, http2.ErrCodeNo, nil)
						time.Sleep(200 * time.Millisecond)
						return
					}
				}
			}()
		}
	}()
	p := startTestProxy(t, ln.Addr().String())
	res, err := h2cClient(t).Get("http://" + p.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "second connection" {
		t.Fatalf("got %d %q", res.StatusCode, b)
	}
}

// TestSilentTargetIsClosed: a target connection that carries a stream and
// goes silent, answering not even a PING (its node died without a FIN),
// is closed by the liveness checks, and the request gets 502 instead of
// hanging.
func TestSilentTargetIsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, len(http2.ClientPreface))
		io.ReadFull(c, buf)
		fr := http2.NewFramer(c, c)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		fr.WriteSettings()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if _, ok := f.(*http2.MetaHeadersFrame); ok {
				close(got)
				io.Copy(io.Discard, c) // silent from now on
				return
			}
		}
	}()
	p := startTestProxy(t, ln.Addr().String())
	done := make(chan int, 1)
	go func() {
		res, err := h2cClient(t).Get("http://" + p.addr + "/")
		if err != nil {
			done <- 0
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}()
	<-got
	for range 3 { // notes the reads, pings, finds the ping unanswered
		p.pool.checkLive()
	}
	select {
	case code := <-done:
		if code != http.StatusBadGateway {
			t.Fatalf("got %d, want 502", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request still hangs")
	}
}

// TestStuckClientIsCutOff: a client that opens its window wide and then
// stops reading its socket would hold the writer of its connection, and
// with it the target connection it shares with other clients; past the
// write timeout it is cut off, and the other client's requests go on.
func TestStuckClientIsCutOff(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 64<<20)
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(big)
			return
		}
		w.Write([]byte("small"))
	}))
	p := startTestProxyWith(t, backend, func(p *Proxy) { p.writeTimeout = 300 * time.Millisecond })
	stuck := dialRaw(t, p.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	stuck.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	stuck.get(1, "/big", true) // and never read
	time.Sleep(200 * time.Millisecond)
	client := h2cClient(t)
	client.Timeout = 5 * time.Second
	for i := range 5 {
		res, err := client.Get("http://" + p.addr + "/small")
		if err != nil {
			t.Fatalf("request %d while a client is stuck: %v", i, err)
		}
		io.ReadAll(res.Body)
		res.Body.Close()
		time.Sleep(100 * time.Millisecond)
	}
}

// TestIdleConnectionGoesAway: a client connection with no stream open for
// IdleTimeout gets GOAWAY (NO_ERROR, naming its last stream) and is closed.
func TestIdleConnectionGoesAway(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	p := startTestProxy(t, backend, func(c *Config, _ *httpproxy.ConnInfo) { c.IdleTimeout = 200 * time.Millisecond })
	rc := dialRaw(t, p.addr)
	rc.get(1, "/", true)
	start := time.Now()
	for {
		f, err := rc.next()
		if err != nil {
			t.Fatalf("no GOAWAY before the connection ended: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
				t.Errorf("GOAWAY %v last stream %d, want NO_ERROR and 1", ga.ErrCode, ga.LastStreamID)
			}
			if took := time.Since(start); took < 150*time.Millisecond {
				t.Errorf("GOAWAY after %v, before the idle timeout", took)
			}
			break
		}
	}
	if _, err := rc.next(); err == nil {
		t.Error("the connection stays open after GOAWAY")
	}
}

// TestShutdownLetsStreamsFinish: Shutdown sends GOAWAY, lets the stream in
// flight finish, and returns once the connection is done.
func TestShutdownLetsStreamsFinish(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		w.Write([]byte("finished"))
	}))
	p := startTestProxy(t, backend)
	client := h2cClient(t)
	done := make(chan string, 1)
	go func() {
		res, err := client.Get("http://" + p.addr + "/")
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		done <- string(b)
	}()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if got := <-done; got != "finished" {
		t.Errorf("the request in flight got %q", got)
	}
}

// TestTargetRefusingEveryStream: a stream the target refuses unprocessed
// (REFUSED_STREAM) is sent again, but not for ever: one that is always
// refused ends in 502.
func TestTargetRefusingEveryStream(t *testing.T) {
	var refused atomic.Int32
	p := startTestProxy(t, resettingTarget(t, http2.ErrCodeRefusedStream, &refused))
	res, err := h2cClient(t).Get("http://" + p.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Errorf("got %d, want 502", res.StatusCode)
	}
	if n := refused.Load(); n < 2 || n > maxAttempts+1 {
		t.Errorf("the target was asked %d times, want a few", n)
	}
}

// connListener is a net.Listener fed by a test.
type connListener struct {
	conns chan net.Conn
	addr  net.Addr
	once  sync.Once
	done  chan struct{}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// resettingTarget is an HTTP/2 target that resets every stream it is sent
// with code, before any response, counting them in streams.
func resettingTarget(t *testing.T, code http2.ErrCode, streams *atomic.Int32) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
				buf := make([]byte, len(http2.ClientPreface))
				io.ReadFull(c, buf)
				fr := http2.NewFramer(c, c)
				fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				fr.WriteSettings()
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if h, ok := f.(*http2.MetaHeadersFrame); ok {
						streams.Add(1)
						fr.WriteRSTStream(h.StreamID, code)
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// A target that cancels a stream before its response (a gRPC server whose
// deadline passed) is heard by the client as that reset, which a gRPC
// client past its deadline reads as DEADLINE_EXCEEDED; any other reset
// before a response is the proxy's 502.
func TestTargetResetBeforeResponse(t *testing.T) {
	p := startTestProxy(t, resettingTarget(t, http2.ErrCodeCancel, new(atomic.Int32)))
	res, err := h2cClient(t).Get("http://" + p.addr + "/")
	if err == nil {
		res.Body.Close()
		t.Errorf("target cancelled the stream: got %d, want the client's stream reset with CANCEL", res.StatusCode)
	} else if !strings.Contains(err.Error(), "CANCEL") {
		t.Errorf("target cancelled the stream: %v, want a reset with CANCEL", err)
	}

	p = startTestProxy(t, resettingTarget(t, http2.ErrCodeInternal, new(atomic.Int32)))
	res, err = h2cClient(t).Get("http://" + p.addr + "/")
	if err != nil {
		t.Fatalf("target reset the stream with INTERNAL_ERROR: %v, want the proxy's 502", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Errorf("target reset the stream with INTERNAL_ERROR: got %d, want 502", res.StatusCode)
	}
}
