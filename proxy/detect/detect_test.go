package detect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// verdict is what Classify returns, as one comparable value.
type verdict struct {
	Protocol Protocol
	Done     bool
}

func classify(b []byte) verdict {
	p, done := Classify(b)
	return verdict{p, done}
}

var (
	undecided = verdict{Opaque, false}
	opaque    = verdict{Opaque, true}
	http1     = verdict{HTTP1, true}
	http2     = verdict{HTTP2, true}
	tlsHello  = verdict{TLS, true}
)

// clientHello is a TLS record header carrying a handshake (22) of 512 bytes
// in legacy version 3.minor, then the ClientHello message type (1): RFC
// 8446 §5.1 and §4.
func clientHello(minor byte) []byte {
	return []byte{0x16, 0x03, minor, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want verdict
	}{
		{name: "empty", in: "", want: undecided},

		// HTTP/2 prior knowledge (RFC 9113 §3.4).
		{name: "h2 preface", in: preface, want: http2},
		{name: "h2 preface and a SETTINGS frame", in: preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00", want: http2},
		{name: "h2 preface, first byte", in: "P", want: undecided},
		{name: "h2 preface up to the method", in: "PRI", want: undecided},
		{name: "h2 preface up to its request line", in: "PRI * HTTP/2.0\r\n", want: undecided},
		{name: "h2 preface but one byte", in: preface[:len(preface)-1], want: undecided},
		{name: "h2 preface diverging after its request line", in: "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", want: opaque},
		{name: "PRI as an HTTP/1.1 method", in: "PRI /x HTTP/1.1\r\n", want: http1},
		{name: "PRI * as an HTTP/1.1 request", in: "PRI * HTTP/1.1\r\nHost: a\r\n\r\n", want: http1},

		// HTTP/1 request lines (RFC 9112 §3).
		{name: "HTTP/1.1", in: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", want: http1},
		{name: "HTTP/1.0", in: "GET / HTTP/1.0\r\n\r\n", want: http1},
		{name: "HTTP/1.9 is still HTTP/1", in: "GET / HTTP/1.9\r\n", want: http1},
		{name: "request line alone", in: "GET /a?b=c HTTP/1.1\r\n", want: http1},
		{name: "absolute-form target", in: "GET http://a.example/ HTTP/1.1\r\n", want: http1},
		{name: "lowercase method is still a token", in: "get / HTTP/1.1\r\n", want: http1},
		{name: "unknown token method with a complete line", in: "PROPFIND /dav HTTP/1.1\r\n", want: http1},
		{name: "unknown token method, line incomplete", in: "PROPFIND /dav HTTP/1.1", want: undecided},
		{name: "known method alone", in: "GET", want: undecided},
		{name: "known method and part of the target", in: "GET /index", want: undecided},
		{name: "line up to the CR", in: "GET / HTTP/1.1\r", want: undecided},
		{name: "HTTP/0.9: no version", in: "GET /\r\n", want: opaque},
		{name: "HTTP/2.0 in a request line", in: "GET / HTTP/2.0\r\n", want: opaque},
		{name: "two-digit minor version", in: "GET / HTTP/1.10\r\n", want: opaque},
		{name: "version not HTTP", in: "GET / FTP/1.1\r\n", want: opaque},
		{name: "bare LF ending the line", in: "GET / HTTP/1.1\n", want: opaque},
		{name: "bare LF in the target, line complete", in: "GET /\n HTTP/1.1\r\n", want: opaque},
		{name: "NUL in the target", in: "GET /\x00", want: opaque},
		{name: "NUL in the target, line complete", in: "GET /\x00 HTTP/1.1\r\n", want: opaque},
		{name: "empty method", in: " / HTTP/1.1\r\n", want: opaque},
		{name: "method with a separator", in: "GE(T / HTTP/1.1\r\n", want: opaque},
		{name: "method of 20 bytes, undecided", in: strings.Repeat("M", 20), want: undecided},
		{name: "method of 21 bytes", in: strings.Repeat("M", 21), want: opaque},
		{name: "method of 21 bytes and a space", in: strings.Repeat("M", 21) + " / HTTP/1.1\r\n", want: opaque},

		// TLS record headers (RFC 8446 §5.1).
		{name: "ClientHello, TLS 1.0 record", in: string(clientHello(1)), want: tlsHello},
		{name: "ClientHello, TLS 1.1 record", in: string(clientHello(2)), want: tlsHello},
		{name: "ClientHello, TLS 1.2 record", in: string(clientHello(3)), want: tlsHello},
		{name: "ClientHello, 3.4 record", in: string(clientHello(4)), want: tlsHello},
		{name: "ClientHello header only", in: string(clientHello(1)[:6]), want: tlsHello},
		{name: "record version 3.5", in: string(clientHello(5)), want: opaque},
		{name: "record version 2.1", in: "\x16\x02\x01\x02\x00\x01", want: opaque},
		{name: "handshake record carrying a ServerHello", in: "\x16\x03\x03\x00\x40\x02\x00\x00\x3c", want: opaque},
		{name: "alert record", in: "\x15\x03\x03\x00\x02\x02\x28", want: opaque},
		{name: "TLS prefix, content type only", in: "\x16", want: undecided},
		{name: "TLS prefix, major version", in: "\x16\x03", want: undecided},
		{name: "TLS prefix, minor version", in: "\x16\x03\x03", want: undecided},
		{name: "TLS prefix, whole header but the message type", in: "\x16\x03\x03\x02\x00", want: undecided},
		{name: "TLS prefix, wrong major version", in: "\x16\x02", want: opaque},
		{name: "TLS prefix, minor version too high", in: "\x16\x03\x05", want: opaque},

		// Everything else.
		{name: "binary garbage", in: "\x00\x01\x02\xff\xfe", want: opaque},
		{name: "redis RESP", in: "*1\r\n$4\r\nPING\r\n", want: opaque},
		{name: "SSH banner", in: "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", want: opaque},
		{name: "PostgreSQL startup", in: "\x00\x00\x00\x08\x04\xd2\x16\x2f", want: opaque},

		// The target reaching PeekLimit (the HTTP server answers 414).
		{name: "known method, target reaching PeekLimit", in: "GET /" + strings.Repeat("a", PeekLimit-5), want: http1},
		{name: "known method, target one short of PeekLimit", in: "GET /" + strings.Repeat("a", PeekLimit-6), want: undecided},
		{name: "unknown method, target reaching PeekLimit", in: "FOO /" + strings.Repeat("a", PeekLimit-5), want: undecided},
	}
	for _, m := range knownMethods {
		tests = append(tests, struct {
			name string
			in   string
			want verdict
		}{name: "method " + m, in: m + " /x HTTP/1.1\r\n", want: http1})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, classify([]byte(tc.in))); diff != "" {
				t.Errorf("Classify(%.40q) mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestProtocolString(t *testing.T) {
	got := []string{Opaque.String(), HTTP1.String(), HTTP2.String(), TLS.String(), Protocol(42).String()}
	want := []string{"opaque", "http/1", "h2", "tls", "opaque"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("String mismatch (-want +got):\n%s", diff)
	}
}

// tcpPair returns both ends of a loopback TCP connection, closed at cleanup.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return dialAccept(t, ln)
}

// dialAccept connects to ln and accepts the connection; the kernel
// completes the handshake before Accept, so no goroutine is needed.
func dialAccept(t testing.TB, ln net.Listener) (client, server *net.TCPConn) {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A reset rather than a FIN leaves no TIME_WAIT behind, which
		// thousands of fuzz iterations a second would otherwise pile up
		// until loopback runs out of ephemeral ports. Tests are done
		// reading by now, so the reset loses nothing.
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		s.Close()
	})
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// send writes data in chunks of chunk bytes (all at once when chunk is 0),
// pausing pause between them, then half-closes. It runs on its own
// goroutine, since a large write blocks until Peek's caller reads; the
// returned channel reports the write error once done.
func send(c *net.TCPConn, data []byte, chunk int, pause time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		defer close(done)
		if chunk <= 0 {
			chunk = max(len(data), 1)
		}
		for len(data) > 0 {
			n := min(chunk, len(data))
			if _, err := c.Write(data[:n]); err != nil {
				done <- err
				return
			}
			data = data[n:]
			if pause > 0 && len(data) > 0 {
				time.Sleep(pause)
			}
		}
		done <- c.CloseWrite()
	}()
	return done
}

// TestPeekReplaysEveryByte checks that the returned Conn reads back exactly
// what the client sent: the peeked head, then the rest of the stream.
func TestPeekReplaysEveryByte(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want Result
	}{
		{name: "HTTP/1.1 request with a body", in: []byte("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"), want: Result{HTTP1, "request-line"}},
		{name: "h2 preface and frames", in: []byte(preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"), want: Result{HTTP2, "preface"}},
		{name: "TLS ClientHello", in: append(clientHello(1), bytes.Repeat([]byte{0xab}, 500)...), want: Result{TLS, "client-hello"}},
		{name: "redis RESP", in: []byte("*1\r\n$4\r\nPING\r\n"), want: Result{Opaque, "no-match"}},
		{name: "partial request line", in: []byte("GET /inde"), want: Result{Opaque, "eof"}},
		{name: "request far larger than PeekLimit", in: []byte("PUT /big HTTP/1.1\r\n\r\n" + strings.Repeat("x", 4*PeekLimit)), want: Result{HTTP1, "request-line"}},
		{name: "undecided past PeekLimit", in: []byte("FOO /" + strings.Repeat("y", 2*PeekLimit)), want: Result{Opaque, "peek-limit"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			sent := send(client, tc.in, 0, 0)
			res, conn, err := Peek(t.Context(), server, 5*time.Second)
			if err != nil {
				t.Fatalf("Peek: %v", err)
			}
			if diff := cmp.Diff(tc.want, res); diff != "" {
				t.Errorf("Peek result mismatch (-want +got):\n%s", diff)
			}
			if buf := conn.Buffered(); !bytes.HasPrefix(tc.in, buf) || len(buf) == 0 {
				t.Errorf("Buffered() = %.40q, want a non-empty prefix of the input", buf)
			}
			if conn.Raw() != net.Conn(server) {
				t.Errorf("Raw() = %v, want the peeked connection", conn.Raw())
			}
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("reading the replayed stream: %v", err)
			}
			if !bytes.Equal(got, tc.in) {
				t.Errorf("replayed %d bytes, want the %d sent (first difference at %d)", len(got), len(tc.in), firstDiff(got, tc.in))
			}
			if err := <-sent; err != nil {
				t.Errorf("client write: %v", err)
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestPeekResult(t *testing.T) {
	request := []byte("GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	tests := []struct {
		name    string
		client  func(c *net.TCPConn) // runs on its own goroutine
		timeout time.Duration
		want    Result
		wantErr error
	}{
		{
			name:    "silent client times out as opaque",
			client:  func(*net.TCPConn) {},
			timeout: 50 * time.Millisecond,
			want:    Result{Opaque, "timeout"},
		},
		{
			name:    "undecided then silent times out as opaque",
			client:  func(c *net.TCPConn) { c.Write([]byte("GET /slow")) },
			timeout: 100 * time.Millisecond,
			want:    Result{Opaque, "timeout"},
		},
		{
			name:    "closed before sending",
			client:  func(c *net.TCPConn) { c.Close() },
			timeout: 5 * time.Second,
			wantErr: ErrClosed,
		},
		{
			name:    "partial line then close",
			client:  func(c *net.TCPConn) { c.Write([]byte("GET /par")); c.Close() },
			timeout: 5 * time.Second,
			want:    Result{Opaque, "eof"},
		},
		{
			name:    "request line one byte at a time",
			client:  func(c *net.TCPConn) { <-send(c, request, 1, time.Millisecond) },
			timeout: 5 * time.Second,
			want:    Result{HTTP1, "request-line"},
		},
		{
			name:    "h2 preface one byte at a time",
			client:  func(c *net.TCPConn) { <-send(c, []byte(preface), 1, time.Millisecond) },
			timeout: 5 * time.Second,
			want:    Result{HTTP2, "preface"},
		},
		{
			name:    "PRI request line three bytes at a time",
			client:  func(c *net.TCPConn) { <-send(c, []byte("PRI * HTTP/1.1\r\n\r\n"), 3, time.Millisecond) },
			timeout: 5 * time.Second,
			want:    Result{HTTP1, "request-line"},
		},
		{
			name:    "ClientHello one byte at a time",
			client:  func(c *net.TCPConn) { <-send(c, clientHello(3), 1, time.Millisecond) },
			timeout: 5 * time.Second,
			want:    Result{TLS, "client-hello"},
		},
		{
			name:    "binary protocol",
			client:  func(c *net.TCPConn) { c.Write([]byte("\x00\x00\x00\x08\x04\xd2\x16\x2f")) },
			timeout: 5 * time.Second,
			want:    Result{Opaque, "no-match"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			done := make(chan struct{})
			go func() { defer close(done); tc.client(client) }()
			res, conn, err := Peek(t.Context(), server, tc.timeout)
			<-done
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Peek error = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if conn != nil {
					t.Errorf("Peek returned a Conn along with error %v", err)
				}
				return
			}
			if diff := cmp.Diff(tc.want, res); diff != "" {
				t.Errorf("Peek result mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPeekClearsDeadline checks that a Conn Peek gave up on after the
// timeout still reads what the client sends later.
func TestPeekClearsDeadline(t *testing.T) {
	client, server := tcpPair(t)
	res, conn, err := Peek(t.Context(), server, 20*time.Millisecond)
	if err != nil {
		t.Fatalf("Peek: %v", err)
	}
	if diff := cmp.Diff(Result{Opaque, "timeout"}, res); diff != "" {
		t.Errorf("Peek result mismatch (-want +got):\n%s", diff)
	}
	time.Sleep(50 * time.Millisecond) // past the detect timeout
	sent := send(client, []byte("+OK server first\r\n"), 0, 0)
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading after Peek: %v", err)
	}
	if string(got) != "+OK server first\r\n" {
		t.Errorf("read %q after Peek, want what the client sent", got)
	}
	if err := <-sent; err != nil {
		t.Errorf("client write: %v", err)
	}
}

func TestPeekContextCanceled(t *testing.T) {
	t.Run("while waiting", func(t *testing.T) {
		_, server := tcpPair(t)
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(20*time.Millisecond, cancel)
		start := time.Now()
		_, conn, err := Peek(ctx, server, time.Minute)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Peek error = %v, want %v", err, context.Canceled)
		}
		if conn != nil {
			t.Error("Peek returned a Conn along with its error")
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("Peek took %v to notice the cancellation", took)
		}
	})
	t.Run("before Peek", func(t *testing.T) {
		_, server := tcpPair(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, _, err := Peek(ctx, server, time.Minute); !errors.Is(err, context.Canceled) {
			t.Fatalf("Peek error = %v, want %v", err, context.Canceled)
		}
	})
	t.Run("after Peek returned", func(t *testing.T) {
		client, server := tcpPair(t)
		ctx, cancel := context.WithCancel(t.Context())
		sent := send(client, []byte("GET / HTTP/1.1\r\n\r\n"), 0, 0)
		_, conn, err := Peek(ctx, server, time.Minute)
		if err != nil {
			t.Fatalf("Peek: %v", err)
		}
		cancel() // must not reach the connection any more
		time.Sleep(10 * time.Millisecond)
		if got, err := io.ReadAll(conn); err != nil || string(got) != "GET / HTTP/1.1\r\n\r\n" {
			t.Errorf("read %q, %v after cancelling; want the request and no error", got, err)
		}
		if err := <-sent; err != nil {
			t.Errorf("client write: %v", err)
		}
	})
}

// FuzzClassify checks that Classify never panics and keeps the promises
// Peek relies on. Run it with
//
//	go test -run '^$' -fuzz '^FuzzClassify$' -fuzztime 60s ./proxy/detect
func FuzzClassify(f *testing.F) {
	seeds := []string{
		"",                                     // nothing yet
		preface,                                // h2 prior knowledge
		preface[:10],                           // a partial preface
		"PRI * HTTP/2.0\r\n\r\nXX",             // a preface that goes wrong
		"PRI /x HTTP/1.1\r\n",                  // PRI as an HTTP/1 method
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",    // a request
		"HEAD /a?b HTTP/1.0\r\n",               // HTTP/1.0
		"PROPFIND /dav HTTP/1.1\r\n",           // unknown method, complete line
		"GET /\r\n",                            // HTTP/0.9
		"GET / HTTP/1.1\n",                     // bare LF
		"GET /\n HTTP/1.1\r\n",                 // bare LF inside a complete line
		"GET /\x00 HTTP/1.1\r\n",               // NUL inside a complete line
		string(clientHello(3)),                 // TLS ClientHello record
		"\x16\x03\x03\x00\x40\x02",             // TLS ServerHello record
		"\x16\x03",                             // a short TLS prefix
		"*1\r\n$4\r\nPING\r\n",                 // redis RESP
		"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",   // SSH banner
		"\x00\x00\x00\x08\x04\xd2\x16\x2f",     // PostgreSQL SSLRequest
		"\x8f\x03\xd1\x7a\x00\xff\x10\x02\x9c", // random bytes
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := classify(b)
		if again := classify(b); again != got {
			t.Fatalf("Classify(%q) = %v, then %v", b, got, again)
		}
		if got.Protocol != Opaque && !got.Done {
			t.Fatalf("Classify(%q) = %v: a protocol but not done", b, got)
		}
		switch got.Protocol {
		case HTTP2:
			if !bytes.HasPrefix(b, []byte(preface)) {
				t.Fatalf("Classify(%q) = h2 without the preface", b)
			}
		case TLS:
			if len(b) < 6 || b[0] != 0x16 || b[1] != 0x03 || b[2] > 0x04 || b[5] != 0x01 {
				t.Fatalf("Classify(%q) = tls without a ClientHello record header", b)
			}
		case HTTP1:
			if err := checkHTTP1(b); err != nil {
				t.Fatalf("Classify(%q) = http/1, but %v", b, err)
			}
		}
		// Peek stops at PeekLimit; undecided input that long must be a
		// request line whose method is not known, so Peek gives up on it
		// ("peek-limit") rather than guess.
		if !got.Done && len(b) >= PeekLimit {
			method, _, _ := bytes.Cut(b, []byte(" "))
			if isKnownMethod(method) {
				t.Fatalf("Classify(%.40q...) undecided at %d bytes with known method %q", b, len(b), method)
			}
		}
		// A decision never changes with more bytes: the client's writes
		// reach Peek cut anywhere, and the verdict must not depend on
		// where. (Beyond PeekLimit Peek reads no more, so it is exempt.)
		for i := range min(len(b), PeekLimit) {
			if pre := classify(b[:i]); pre.Done && pre != got {
				t.Fatalf("Classify(%q) = %v, but its first %d bytes gave %v", b, got, i, pre)
			}
		}
	})
}

// checkHTTP1 says why b is not a request line Classify may call HTTP/1.
func checkHTTP1(b []byte) error {
	method, rest, ok := bytes.Cut(b, []byte(" "))
	if !ok || !isToken(method) || len(method) > 20 {
		return fmt.Errorf("method %q is not a token of at most 20 bytes", method)
	}
	line, _, complete := bytes.Cut(rest, []byte("\r\n"))
	if !complete {
		if len(b) < PeekLimit || !isKnownMethod(method) {
			return fmt.Errorf("incomplete line of %d bytes with method %q", len(b), method)
		}
		return nil
	}
	if bytes.ContainsAny(line, "\n\x00") {
		return fmt.Errorf("request line %q holds a bare LF or a NUL", line)
	}
	sp := bytes.LastIndexByte(line, ' ')
	if sp < 0 {
		return fmt.Errorf("request line %q has no version", line)
	}
	version := line[sp+1:]
	if len(version) != 8 || !bytes.HasPrefix(version, []byte("HTTP/1.")) || version[7] < '0' || version[7] > '9' {
		return fmt.Errorf("version %q is not HTTP/1.x", version)
	}
	return nil
}

// FuzzPeek feeds arbitrary bytes, cut in arbitrary chunks, through a real
// loopback connection into Peek, and checks that the verdict is the one
// Classify gives and that the returned Conn replays the input exactly. Run
// it with
//
//	go test -run '^$' -fuzz '^FuzzPeek$' -fuzztime 60s ./proxy/detect
func FuzzPeek(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), uint8(0))            // a request, one write
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), uint8(1))            // a request, a byte a write
	f.Add([]byte(preface+"\x00\x00\x00\x04\x00\x00\x00\x00\x00"), uint8(4)) // h2
	f.Add(clientHello(1), uint8(2))                                         // TLS
	f.Add([]byte("*1\r\n$4\r\nPING\r\n"), uint8(0))                         // redis
	f.Add([]byte("GET /par"), uint8(0))                                     // partial line then EOF
	f.Add([]byte{}, uint8(0))                                               // closed at once
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		client, server := dialAccept(t, ln)
		sent := send(client, in, int(chunk), 0)
		res, conn, err := Peek(t.Context(), server, 10*time.Second)
		want := classify(in[:min(len(in), PeekLimit)])
		switch {
		case len(in) == 0:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("Peek of nothing: error %v, want %v", err, ErrClosed)
			}
			<-sent
			return
		case err != nil:
			t.Fatalf("Peek: %v", err)
		case want.Done && res != Result{want.Protocol, reasonFor(want.Protocol)}:
			t.Fatalf("Peek = %v, want %v as Classify says", res, want.Protocol)
		case !want.Done && len(in) >= PeekLimit && res != Result{Opaque, "peek-limit"}:
			t.Fatalf("Peek = %v, want opaque at the peek limit", res)
		case !want.Done && len(in) < PeekLimit && res != Result{Opaque, "eof"}:
			t.Fatalf("Peek = %v, want opaque at EOF", res)
		}
		got, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("reading the replayed stream: %v", err)
		}
		if !bytes.Equal(got, in) {
			t.Fatalf("replayed %q, want %q", got, in)
		}
		if err := <-sent; err != nil {
			t.Fatalf("client write: %v", err)
		}
	})
}
