package admin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// adminServer is NewServer serving on every address of the machine's
// network, as the proxy's admin port does in a pod (0.0.0.0:4191).
type adminServer struct {
	port      int
	network   string // a non-loopback address of this machine, host:port
	shutdowns atomic.Int32
	ready     atomic.Bool
}

func startAdmin(t *testing.T, idle time.Duration, profiling bool) *adminServer {
	t.Helper()
	a := &adminServer{}
	var serving sync.WaitGroup
	srv := NewServer(Config{
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "m 1\n") }),
		Ready: func() error {
			if !a.ready.Load() {
				return errors.New("no inbound policy from the controller yet")
			}
			return nil
		},
		Shutdown:     func() { a.shutdowns.Add(1) },
		Destinations: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "[]\n") }),
		Identity: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"spiffe_id": "spiffe://cluster.local/ns/shop/sa/web"}`+"\n")
		}),
		Policy: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"namespace": "shop", "pod": "web-0", "received": true}`+"\n")
		}),
		Profiling:   profiling,
		IdleTimeout: idle,
	})
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	a.port = ln.Addr().(*net.TCPAddr).Port
	if ip := nonLoopbackIP(t); ip != nil {
		a.network = net.JoinHostPort(ip.String(), fmt.Sprint(a.port))
	} else {
		// A machine with nothing but loopback: the server is given a second
		// listener whose connections report a documentation address
		// (RFC 5737) as theirs, and the test dials that listener when it
		// means "from the network". The server sees exactly what it would
		// see for a connection to the pod's IP: only the local address
		// differs between the two, and it is the one the handler reads.
		other := &asIfTo{Listener: listen(t, "127.0.0.1:0"), local: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: a.port}}
		a.network = other.Listener.Addr().String()
		serving.Go(func() { srv.Serve(other) })
	}
	serving.Go(func() { srv.Serve(ln) })
	t.Cleanup(func() {
		srv.Close()
		serving.Wait()
	})
	return a
}

func (a *adminServer) loopback() string { return net.JoinHostPort("127.0.0.1", fmt.Sprint(a.port)) }

// nonLoopbackIP returns an address of one of the machine's interfaces
// that is neither loopback nor link-local (which would need a zone), or
// nil if there is none.
func nonLoopbackIP(t *testing.T) net.IP {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
			return n.IP
		}
	}
	return nil
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// asIfTo is a listener whose connections report local as the address
// they were made to.
type asIfTo struct {
	net.Listener
	local net.Addr
}

func (l *asIfTo) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &localAs{Conn: c, local: l.local}, nil
}

type localAs struct {
	net.Conn
	local net.Addr
}

func (c *localAs) LocalAddr() net.Addr { return c.local }

// TestOnlyProbesAndMetricsToTheNetwork: a client on the pod's network gets
// the probes and the metrics, and 404 for everything that shows or changes
// the proxy's state, exactly as for a path that does not exist; the same
// requests made to a loopback address are answered.
func TestOnlyProbesAndMetricsToTheNetwork(t *testing.T) {
	a := startAdmin(t, 0, false)
	a.ready.Store(true)
	tests := []struct {
		method, path string
		// wantLocal and wantNetwork are the status, and a part of the body,
		// a client gets through 127.0.0.1 and through the network address.
		wantLocal, wantNetwork int
		wantBody               string
	}{
		{method: "GET", path: "/metrics", wantLocal: 200, wantNetwork: 200, wantBody: "m 1"},
		{method: "GET", path: "/ready", wantLocal: 200, wantNetwork: 200, wantBody: "ready"},
		{method: "GET", path: "/live", wantLocal: 200, wantNetwork: 200, wantBody: "live"},
		{method: "GET", path: "/destinations", wantLocal: 200, wantNetwork: 404, wantBody: "[]"},
		{method: "GET", path: "/identity", wantLocal: 200, wantNetwork: 404, wantBody: "spiffe://cluster.local/ns/shop/sa/web"},
		{method: "GET", path: "/policy", wantLocal: 200, wantNetwork: 404, wantBody: `"pod": "web-0"`},
		{method: "POST", path: "/shutdown", wantLocal: 200, wantNetwork: 404, wantBody: "shutting down"},
		{method: "GET", path: "/shutdown", wantLocal: 405, wantNetwork: 404},
		{method: "GET", path: "/debug/pprof/", wantLocal: 404, wantNetwork: 404},
	}
	notFound := get(t, "GET", a.network, "/no-such-path")
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			a.shutdowns.Store(0)
			got := get(t, tc.method, a.network, tc.path)
			if got.code != tc.wantNetwork {
				t.Errorf("from the network (%s): %d %q, want %d", a.network, got.code, got.body, tc.wantNetwork)
			}
			if tc.wantNetwork == 404 && got != notFound {
				t.Errorf("from the network: %+v, want the same answer as for a path that does not exist: %+v", got, notFound)
			}
			if n := a.shutdowns.Load(); n != 0 {
				t.Errorf("from the network: shutdown called %d times", n)
			}
			got = get(t, tc.method, a.loopback(), tc.path)
			if got.code != tc.wantLocal || !strings.Contains(got.body, tc.wantBody) {
				t.Errorf("from loopback: %d %q, want %d with %q", got.code, got.body, tc.wantLocal, tc.wantBody)
			}
		})
	}
	if got := get(t, "POST", "[::1]:"+fmt.Sprint(a.port), "/shutdown"); got.code != 200 || a.shutdowns.Load() != 1 {
		t.Errorf("POST /shutdown to ::1: %d %q, shutdown called %d times; want 200, once", got.code, got.body, a.shutdowns.Load())
	}
}

// TestProfilesOnlyToLoopback: with Profiling, the runtime's profiles are
// served to loopback clients and, like every other path that shows the
// proxy's state, are a 404 to the network.
func TestProfilesOnlyToLoopback(t *testing.T) {
	a := startAdmin(t, 0, true)
	notFound := get(t, "GET", a.network, "/no-such-path")
	for _, tc := range []struct{ path, wantBody string }{
		{path: "/debug/pprof/", wantBody: "goroutine"},
		{path: "/debug/pprof/heap?debug=1", wantBody: "heap profile"},
		{path: "/debug/pprof/goroutine?debug=1", wantBody: "goroutine profile"},
		{path: "/debug/pprof/cmdline", wantBody: ""},
		{path: "/debug/pprof/profile?seconds=1", wantBody: ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if got := get(t, "GET", a.network, tc.path); got != notFound {
				t.Errorf("from the network: %d %q, want the answer to a path that does not exist: %+v", got.code, got.body, notFound)
			}
			got := get(t, "GET", a.loopback(), tc.path)
			if got.code != 200 || !strings.Contains(got.body, tc.wantBody) {
				t.Errorf("from loopback: %d %.200q, want 200 with %q", got.code, got.body, tc.wantBody)
			}
		})
	}
}

// TestProfileSecondsBounded: a CPU profile or trace asked for longer than
// the admin server's write timeout allows, or for no length, lasts
// maxProfileSeconds; a shorter one as long as asked.
func TestProfileSecondsBounded(t *testing.T) {
	most := fmt.Sprint(maxProfileSeconds)
	for _, tc := range []struct{ query, want string }{
		{query: "", want: most},
		{query: "seconds=3", want: "3"},
		{query: "seconds=" + most, want: most},
		{query: "seconds=3600", want: most},
		{query: "seconds=0", want: most},
		{query: "seconds=-1", want: most},
		{query: "seconds=x", want: most},
	} {
		var got string
		h := boundSeconds(func(_ http.ResponseWriter, r *http.Request) { got = r.URL.Query().Get("seconds") })
		r, err := http.NewRequest("GET", "/debug/pprof/profile?"+tc.query, nil)
		if err != nil {
			t.Fatal(err)
		}
		h(nil, r)
		if got != tc.want {
			t.Errorf("?%s: seconds=%s, want %s", tc.query, got, tc.want)
		}
	}
	if maxProfileSeconds <= 0 || time.Duration(maxProfileSeconds)*time.Second >= writeTimeout {
		t.Errorf("maxProfileSeconds %d must be positive and under the write timeout %s", maxProfileSeconds, writeTimeout)
	}
}

func TestReady(t *testing.T) {
	a := startAdmin(t, 0, false)
	if got := get(t, "GET", a.network, "/ready"); got.code != 503 || got.body != "not ready: no inbound policy from the controller yet\n" {
		t.Errorf("not ready: %d %q, want 503 saying why", got.code, got.body)
	}
	a.ready.Store(true)
	if got := get(t, "GET", a.network, "/ready"); got.code != 200 || got.body != "ready\n" {
		t.Errorf("ready: %d %q, want 200", got.code, got.body)
	}
}

// TestIdleConnectionClosed: a keep-alive connection that sends no next
// request is closed after the idle timeout, rather than held for as long
// as the client likes.
func TestIdleConnectionClosed(t *testing.T) {
	const idle = 200 * time.Millisecond
	a := startAdmin(t, idle, false)
	c, err := net.Dial("tcp", a.network)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /live HTTP/1.1\r\nHost: admin\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.Close {
		t.Fatal("the server closed after one request; want keep-alive")
	}
	start := time.Now()
	n, err := br.Read(make([]byte, 1))
	waited := time.Since(start)
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read on the idle connection: %d bytes, %v; want EOF", n, err)
	}
	if waited < idle/2 || waited > 5*time.Second {
		t.Errorf("closed after %s idle, want about %s", waited, idle)
	}
}

// answer is a response's status and body.
type answer struct {
	code int
	body string
}

// get sends method path to addr on a connection of its own.
func get(t *testing.T, method, addr, path string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{res.StatusCode, string(b)}
}
