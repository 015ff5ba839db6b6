package echo

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/testdata/demo/demotest"
	"github.com/mesh-dev/mesh/testdata/demo/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// modes are the protocols echo serves on its one port, as a client speaks
// them, with the resp.Proto each gets back.
var modes = []struct {
	name      string
	h2c       bool
	wantProto string
}{
	{name: "HTTP/1.1", wantProto: "HTTP/1.1"},
	{name: "h2c", h2c: true, wantProto: "HTTP/2.0"},
}

// newClient returns a client speaking HTTP/1.1 only, or h2c with prior
// knowledge only, so a server that misses a protocol fails the request.
func newClient(t testing.TB, h2c bool) *http.Client {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	if h2c {
		tr.Protocols.SetUnencryptedHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// start runs echo with cfg and returns its URL.
func start(t testing.TB, cfg Config) string {
	t.Helper()
	return "http://" + demotest.Serve(t, func(ctx context.Context, ln net.Listener) error {
		return Serve(ctx, ln, cfg)
	})
}

// do sends one request and returns the status, protocol and body.
func do(t testing.TB, c *http.Client, method, url string) (code int, proto, body string) {
	t.Helper()
	code, proto, body, err := send(t.Context(), c, method, url)
	if err != nil {
		t.Fatal(err)
	}
	return code, proto, body
}

// send is do for a goroutine other than the test's, which must not Fatal.
func send(ctx context.Context, c *http.Client, method, url string) (code int, proto, body string, err error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader("ignored"))
	if err != nil {
		return 0, "", "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Proto, string(b), err
}

func TestAnswers(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		cfg      Config
		method   string
		path     string
		wantBody string
	}{
		{name: "root", cfg: Config{Name: "echo-a"}, method: "GET", path: "/", wantBody: "echo from echo-a\n"},
		{name: "any path", cfg: Config{Name: "echo-a"}, method: "GET", path: "/x/y?z=1", wantBody: "echo from echo-a\n"},
		{name: "any method", cfg: Config{Name: "echo-a"}, method: "POST", path: "/buy", wantBody: "echo from echo-a\n"},
		{name: "hostname", method: "GET", path: "/", wantBody: "echo from " + host + "\n"},
	}
	for _, m := range modes {
		for _, tc := range tests {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				// The client is closed first, so the server need not wait
				// out the GOAWAY of an h2c connection left open.
				url := start(t, tc.cfg)
				code, proto, body := do(t, newClient(t, m.h2c), tc.method, url+tc.path)
				if code != 200 || proto != m.wantProto || body != tc.wantBody {
					t.Errorf("%s %s = %d over %s %q, want 200 over %s %q",
						tc.method, tc.path, code, proto, body, m.wantProto, tc.wantBody)
				}
			})
		}
	}
}

func TestFault(t *testing.T) {
	tests := []struct {
		name     string
		fault    fault.Fault
		wantCode int
		wantBody string
		wantWait time.Duration // the least the answer takes
	}{
		{name: "fail status", fault: fault.Fault{FailRate: 1, FailStatus: 503},
			wantCode: 503, wantBody: "injected fault from echo-a\n"},
		{name: "default status", fault: fault.Fault{FailRate: 1}, wantCode: 500, wantBody: "injected fault from echo-a\n"},
		{name: "status without failures", fault: fault.Fault{FailStatus: 503}, wantCode: 200, wantBody: "echo from echo-a\n"},
		{name: "latency", fault: fault.Fault{Latency: 20 * time.Millisecond},
			wantCode: 200, wantBody: "echo from echo-a\n", wantWait: 20 * time.Millisecond},
	}
	for _, m := range modes {
		for _, tc := range tests {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				url := start(t, Config{Name: "echo-a", Fault: tc.fault})
				begin := time.Now()
				code, _, body := do(t, newClient(t, m.h2c), "GET", url)
				if code != tc.wantCode || body != tc.wantBody {
					t.Errorf("GET / = %d %q, want %d %q", code, body, tc.wantCode, tc.wantBody)
				}
				if d := time.Since(begin); d < tc.wantWait {
					t.Errorf("GET / took %s, want at least %s", d, tc.wantWait)
				}
			})
		}
	}
}

// TestFaultSwitch changes the fault of a running server, as PUT /fault
// does, and sees the next requests follow it on a connection kept open.
func TestFaultSwitch(t *testing.T) {
	faults := fault.NewSwitch(fault.Fault{FailStatus: 500})
	// Fault says always fail; the switch wins.
	url := start(t, Config{Name: "echo-a", Fault: fault.Fault{FailRate: 1}, FaultSwitch: faults})
	clients := map[string]*http.Client{}
	for _, m := range modes {
		clients[m.name] = newClient(t, m.h2c)
	}
	tests := []struct {
		name     string
		fault    fault.Fault
		wantCode int
	}{
		{name: "healthy", fault: fault.Fault{FailStatus: 500}, wantCode: 200},
		{name: "failing", fault: fault.Fault{FailRate: 1, FailStatus: 503}, wantCode: 503},
		{name: "healthy again", fault: fault.Fault{}, wantCode: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := faults.Store(tc.fault); err != nil {
				t.Fatal(err)
			}
			for _, m := range modes {
				if code, _, body := do(t, clients[m.name], "GET", url); code != tc.wantCode {
					t.Errorf("GET / over %s = %d %q, want %d", m.name, code, body, tc.wantCode)
				}
			}
		})
	}
}

func TestGracefulShutdown(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			log, received := demotest.Logged("request received")
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			cfg := Config{Name: "echo-a", Fault: fault.Fault{Latency: 200 * time.Millisecond}, Logger: log}
			go func() { done <- Serve(ctx, ln, cfg) }()
			c := newClient(t, m.h2c)
			type answer struct {
				code int
				body string
				err  error
			}
			reply := make(chan answer, 1)
			go func() {
				code, _, body, err := send(t.Context(), c, "GET", "http://"+ln.Addr().String())
				reply <- answer{code, body, err}
			}()
			<-received // the request is in the injected latency
			cancel()
			if got := <-reply; got.err != nil || got.code != 200 || got.body != "echo from echo-a\n" {
				t.Errorf("request in flight at shutdown = %d %q, %v; want it answered", got.code, got.body, got.err)
			}
			if err := <-done; err != nil {
				t.Errorf("Serve = %v", err)
			}
		})
	}
}

// TestExitOnTerm: with ExitOnTerm, the end of Serve's context stops echo
// at once, as a process exiting on SIGTERM would: the request in flight is
// cut rather than answered, Serve returns long before the request's
// latency or the shutdown grace is over, and nothing listens any more.
func TestExitOnTerm(t *testing.T) {
	const latency = 10 * time.Second // the request would be in flight this long
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			log, received := demotest.Logged("request received")
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			cfg := Config{Name: "echo-a", Fault: fault.Fault{Latency: latency}, Logger: log, ExitOnTerm: true,
				ShutdownGrace: latency}
			go func() { done <- Serve(ctx, ln, cfg) }()
			c := newClient(t, m.h2c)
			reply := make(chan error, 1)
			go func() {
				code, _, body, err := send(t.Context(), c, "GET", "http://"+addr)
				if err == nil {
					err = fmt.Errorf("answered %d %q", code, body)
				}
				reply <- err
			}()
			<-received // the request is in the injected latency
			stopped := time.Now()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve = %v", err)
				}
			case <-time.After(latency / 2):
				t.Fatalf("Serve still running %s after its context ended", latency/2)
			}
			if err := <-reply; err == nil || strings.HasPrefix(err.Error(), "answered") {
				t.Errorf("request in flight when the context ended: %v; want it cut (a connection error)", err)
			}
			t.Logf("Serve returned and the request in flight was cut %s after the context ended", time.Since(stopped).Round(time.Millisecond))
			if conn, err := net.Dial("tcp", addr); err == nil {
				conn.Close()
				t.Errorf("dial %s after Serve returned: connected, want refused", addr)
			}
		})
	}
}

// countingBody is a request body of n bytes that counts what the client
// has read of it.
type countingBody struct {
	left int64
	read atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), b.left)
	clear(p[:n])
	b.left -= n
	b.read.Add(n)
	return int(n), nil
}

// TestReadsBodyFirst: echo answers only once it has read the whole request
// body, a failure included, so an upload is delivered whole before any
// answer. The body is larger than what the kernel's socket buffers and
// HTTP/2 flow-control windows would take in without echo reading it, so
// an answer sent before reading would reach the client with part of the
// body still unread.
func TestReadsBodyFirst(t *testing.T) {
	const size = 16 << 20
	for _, m := range modes {
		for _, f := range []fault.Fault{{}, {FailRate: 1, FailStatus: 503}} {
			t.Run(fmt.Sprintf("%s/fail rate %v", m.name, f.FailRate), func(t *testing.T) {
				url := start(t, Config{Name: "echo-a", Fault: f})
				body := &countingBody{left: size}
				req, err := http.NewRequestWithContext(t.Context(), "POST", url+"/upload", body)
				if err != nil {
					t.Fatal(err)
				}
				req.ContentLength = size
				resp, err := newClient(t, m.h2c).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				read := body.read.Load() // when the answer's head came
				resp.Body.Close()
				want := http.StatusOK
				if f.FailRate == 1 {
					want = f.Status()
				}
				if resp.StatusCode != want {
					t.Errorf("POST = %d, want %d", resp.StatusCode, want)
				}
				if read != size {
					t.Errorf("echo answered %d when the client had sent %d of the body's %d bytes, want all of them", resp.StatusCode, read, size)
				}
			})
		}
	}
}
