package httpproxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seen is a request as the target received it.
type seen struct {
	Method, Path, Body string
}

// target is an HTTP server on loopback that records the requests it gets.
type target struct {
	addr    netip.AddrPort
	started atomic.Int64 // requests whose handler started

	mu   sync.Mutex
	reqs []seen // guarded by mu
}

func newTarget(tb testing.TB) *target {
	tb.Helper()
	tg := &target{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.started.Add(1)
		body, _ := io.ReadAll(r.Body)
		tg.mu.Lock()
		tg.reqs = append(tg.reqs, seen{r.Method, r.URL.Path, string(body)})
		tg.mu.Unlock()
		if r.Method == http.MethodConnect {
			// A 2xx would make the proxy tunnel until the target hangs up.
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		io.WriteString(w, "ok")
	}))
	tb.Cleanup(srv.Close)
	tg.addr = netip.MustParseAddrPort(srv.Listener.Addr().String())
	return tg
}

// requests returns the requests received so far and forgets them.
func (tg *target) requests() []seen {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	reqs := tg.reqs
	tg.reqs = nil
	return reqs
}

// panicLog is a slog handler that keeps the messages reporting a panic,
// which http.Server recovers and logs (through the proxy's Log) rather than
// crash on. Safe for concurrent use.
type panicLog struct {
	mu     sync.Mutex
	panics []string // guarded by mu
}

func (*panicLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *panicLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		l.mu.Lock()
		l.panics = append(l.panics, r.Message)
		l.mu.Unlock()
	}
	return nil
}
func (l *panicLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *panicLog) WithGroup(string) slog.Handler      { return l }

// take returns the panics logged so far and forgets them.
func (l *panicLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.panics
	l.panics = nil
	return p
}

// startProxy returns a Proxy with the default limits, shut down at cleanup.
func startProxy(tb testing.TB, log *panicLog) *httpproxy.Proxy {
	tb.Helper()
	p := httpproxy.New(httpproxy.Config{
		Direction: metrics.Inbound,
		Metrics:   metrics.New(),
		Log:       slog.New(log),
	})
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
	})
	return p
}

// maxHead is the most request head the proxy's http.Server reads before it
// answers 431: the default MaxHeaderBytes (64 KiB) plus the 4 KiB of slack
// net/http allows.
const maxHead = 64<<10 + 4<<10

// exchange hands the server end of a fresh connection from ln to p, sends
// raw from the client end, and returns all the proxy answers. It reads the
// answers to the complete requests in raw before it half-closes: net/http
// takes a half-close for a client gone away and cancels the request in
// flight. It fails tb if the proxy neither answers nor closes within 10s.
func exchange(tb testing.TB, p *httpproxy.Proxy, ln net.Listener, to netip.AddrPort, raw []byte) []byte {
	tb.Helper()
	client, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		client.Close()
		tb.Fatal(err)
	}
	p.ServeHTTP1(server, httpproxy.ConnInfo{Target: to})
	client.SetDeadline(time.Now().Add(10 * time.Second))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		// An error is expected when the proxy answers and closes before
		// reading everything.
		client.Write(raw)
	}()
	defer func() { client.Close(); <-wrote }()

	var got bytes.Buffer
	br := bufio.NewReader(io.TeeReader(client, &got))
	reqs, complete := parseRequests(raw)
	for answered := 0; answered < complete; {
		res, err := http.ReadResponse(br, reqs[answered])
		if err != nil {
			break // the proxy closed early or answered garbage: the caller sees it in got
		}
		io.Copy(io.Discard, res.Body)
		if res.StatusCode >= 200 { // 1xx are interim: the final answer follows
			answered++
		}
	}
	<-wrote
	client.(interface{ CloseWrite() error }).CloseWrite()
	_, err = io.Copy(io.Discard, br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		tb.Fatalf("the proxy neither answered nor closed within 10s; it sent %q", got.Bytes())
	}
	// Any other error is a reset, after the answer: the proxy may close
	// with part of raw unread.
	return got.Bytes()
}

// loopback listens on 127.0.0.1:0.
func loopback(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// responses parses the HTTP/1.x responses in b, in order; it stops at the
// first that does not parse and returns its error. reqs are the requests
// answered, in order, where known: a response to HEAD has no body.
func responses(b []byte, reqs []*http.Request) ([]*http.Response, error) {
	br := bufio.NewReader(bytes.NewReader(b))
	var out []*http.Response
	for answered := 0; ; {
		if _, err := br.Peek(1); err == io.EOF {
			return out, nil
		}
		var req *http.Request
		if answered < len(reqs) {
			req = reqs[answered]
		}
		res, err := http.ReadResponse(br, req)
		if err != nil {
			return out, err
		}
		if _, err := io.Copy(io.Discard, res.Body); err != nil {
			return out, err
		}
		res.Body.Close()
		// net/http answers HTTP/1.0 requests with HTTP/1.0.
		if res.ProtoMajor != 1 || res.ProtoMinor > 1 {
			return out, errors.New("status line of " + res.Proto + ", want HTTP/1.x")
		}
		out = append(out, res)
		if res.StatusCode >= 200 { // 1xx are interim: the final answer follows
			answered++
		}
	}
}

// Request heads from clients, as they could arrive on a connection, and
// what each tests.
var (
	getRequest      = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	chunkedTrailers = "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
		"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"
	obsFold = "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n"
	// The second request hides in the POST's body for a reader that
	// believes Content-Length, and stands on its own for one that believes
	// Transfer-Encoding (RFC 9112 §11.2).
	smuggleCLTE = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	smuggleTECL = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" +
		"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	duplicateCL     = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
	conflictingCL   = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	bareLF          = "GET /lf HTTP/1.1\nHost: a\n\n"
	nulInHeader     = "GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n\r\n"
	bigHeader       = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 70<<10) + "\r\n\r\n"
	nonUTF8Host     = "GET http://\xff/ HTTP/1.1\r\nHost: a\r\n\r\n"
	pipelinedGets   = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
	teObfuscated    = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	teSpaceInName   = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	requestInBody   = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	missingHostHTTP = "GET / HTTP/1.1\r\n\r\n"
)

// TestRequestFraming sends heads that net/http accepts, rejects, or that
// try to smuggle a request past a proxy, and checks what the client and
// the target get. A target behind a proxy must never see more requests
// than the proxy answered, and never a request hidden in a body.
func TestRequestFraming(t *testing.T) {
	tests := []struct {
		name       string
		raw        string
		wantStatus []int  // the status of each response the client gets
		wantSeen   []seen // what the target receives
	}{
		{name: "GET", raw: getRequest, wantStatus: []int{200}, wantSeen: []seen{{"GET", "/", ""}}},
		{name: "chunked POST with trailers", raw: chunkedTrailers, wantStatus: []int{200}, wantSeen: []seen{{"POST", "/upload", "hello world"}}},
		{name: "pipelined GETs", raw: pipelinedGets, wantStatus: []int{200, 200}, wantSeen: []seen{{"GET", "/1", ""}, {"GET", "/2", ""}}},
		{name: "request in a body", raw: requestInBody, wantStatus: []int{200}, wantSeen: []seen{{"POST", "/", "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"}}},
		{name: "bare LF line endings", raw: bareLF, wantStatus: []int{200}, wantSeen: []seen{{"GET", "/lf", ""}}},
		{name: "duplicate equal Content-Length", raw: duplicateCL, wantStatus: []int{200}, wantSeen: []seen{{"POST", "/", "hello"}}},
		// RFC 9112 §5.2 lets a server replace obs-fold with spaces.
		{name: "obs-fold header", raw: obsFold, wantStatus: []int{200}, wantSeen: []seen{{"GET", "/", ""}}},
		{name: "conflicting Content-Length", raw: conflictingCL, wantStatus: []int{400}},
		{name: "NUL in a header value", raw: nulInHeader, wantStatus: []int{400}},
		{name: "space before the colon of Transfer-Encoding", raw: teSpaceInName, wantStatus: []int{400}},
		{name: "Transfer-Encoding other than chunked", raw: teObfuscated, wantStatus: []int{501}},
		{name: "HTTP/1.1 without Host", raw: missingHostHTTP, wantStatus: []int{400}},
		{name: "70 KB header", raw: bigHeader, wantStatus: []int{431}},
		{
			// An absolute-form target sets the authority without the
			// Host header's validation; a non-UTF-8 authority is not a
			// valid Prometheus label value, which once made the
			// metrics panic and the connection drop unanswered.
			name:       "non-UTF-8 authority",
			raw:        nonUTF8Host,
			wantStatus: []int{200},
			wantSeen:   []seen{{"GET", "/", ""}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log := &panicLog{}
			tg := newTarget(t)
			p := startProxy(t, log)
			got := exchange(t, p, loopback(t), tg.addr, []byte(tc.raw))
			res, err := responses(got, nil)
			if err != nil {
				t.Errorf("answer %q: %v", got, err)
			}
			var status []int
			for _, r := range res {
				status = append(status, r.StatusCode)
			}
			if diff := cmp.Diff(tc.wantStatus, status); diff != "" {
				t.Errorf("status mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantSeen, tg.requests()); diff != "" {
				t.Errorf("target's requests mismatch (-want +got):\n%s", diff)
			}
			if panics := log.take(); len(panics) > 0 {
				t.Errorf("the proxy panicked: %q", panics)
			}
		})
	}
}

// FuzzRequestHead sends untrusted bytes to the proxy's HTTP/1 server as a
// client would. The proxy must not panic; what it answers must be HTTP/1.x
// responses; a head over the limit gets 400 or 431, so it reaches no one;
// and the target never sees more requests than net/http's own parser finds
// in the input, so no request is smuggled past the proxy. Run it with
//
//	go test -run '^$' -fuzz '^FuzzRequestHead$' -fuzztime 60s ./proxy/httpproxy
func FuzzRequestHead(f *testing.F) {
	for _, seed := range []string{
		getRequest,      // a normal GET
		chunkedTrailers, // a chunked POST with trailers
		obsFold,         // a folded header line (obs-fold, RFC 9112 §5.2)
		duplicateCL,     // two equal Content-Length headers
		conflictingCL,   // two different Content-Length headers
		smuggleCLTE,     // Content-Length and Transfer-Encoding: request smuggling
		smuggleTECL,     // the same, Transfer-Encoding first
		teObfuscated,    // a Transfer-Encoding other than chunked
		bareLF,          // bare LF line endings
		nulInHeader,     // a NUL in a header value
		bigHeader,       // a 70 KB header: 431
		pipelinedGets,   // two requests on one connection
		requestInBody,   // a request inside a body
		"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", // 100-continue
		"GET / HTTP/1.0\r\n\r\n",                // HTTP/1.0 without Host
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", // asterisk-form
		"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",  // a space in the target
		"",                                      // nothing
	} {
		f.Add([]byte(seed))
	}
	log := &panicLog{}
	tg := newTarget(f)
	p := startProxy(f, log)
	// A Unix socket, not TCP: each connection the server closes first
	// would leave a TIME_WAIT on loopback, and thousands a second run
	// loopback out of ephemeral ports. The proxy's side is the same.
	ln, err := net.Listen("unix", filepath.Join(f.TempDir(), "proxy.sock"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	// Requests the proxy may forward: those net/http's parser finds in
	// every input so far. The target's count is compared with it rather
	// than per input, since a request an input started can reach the
	// target after the input's exchange ended (the proxy cancels it when
	// the client closes). A request smuggled past the proxy is one more.
	var parsed int64
	f.Fuzz(func(t *testing.T, raw []byte) {
		reqs, _ := parseRequests(raw)
		parsed += int64(len(reqs))
		got := exchange(t, p, ln, tg.addr, raw)
		if panics := log.take(); len(panics) > 0 {
			t.Fatalf("the proxy panicked on %q: %q", raw, panics)
		}
		if started := tg.started.Load(); started > parsed {
			parsed = started // so that minimizing starts afresh
			t.Fatalf("the target got more requests than net/http finds in the inputs, the last being %q", raw)
		}
		res, err := responses(got, reqs)
		if err != nil {
			t.Fatalf("answer %q to %q is not HTTP/1.x responses: %v", got, raw, err)
		}
		// 431, or 400 when a line before the limit is already malformed.
		if oversized(raw) && (len(res) != 1 || (res[0].StatusCode != 400 && res[0].StatusCode != 431)) {
			t.Fatalf("answer %q to a head over %d bytes, want one 400 or 431", got, maxHead)
		}
	})
}

// oversized reports whether the first request head in raw is longer than
// the proxy reads.
func oversized(raw []byte) bool {
	if len(raw) <= maxHead {
		return false
	}
	head := raw[:maxHead]
	return !bytes.Contains(head, []byte("\r\n\r\n")) && !bytes.Contains(head, []byte("\n\n")) &&
		!bytes.Contains(head, []byte("\n\r\n")) && !bytes.Contains(head, []byte("\r\n\n"))
}

// parseRequests returns the requests that net/http's parser finds in raw
// before it fails or raw ends, and how many of them have their whole body
// in raw (all but maybe the last). The proxy's server uses that parser,
// with more checks, so it serves no more.
func parseRequests(raw []byte) (reqs []*http.Request, complete int) {
	br := bufio.NewReader(bytes.NewReader(raw))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return reqs, len(reqs)
		}
		reqs = append(reqs, req)
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return reqs, len(reqs) - 1
		}
	}
}
