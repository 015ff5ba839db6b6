package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawBackend accepts connections and hands each to serve, for tests that
// must see or write exact bytes, which net/http would normalise.
func rawBackend(t testing.TB, serve func(c net.Conn)) string {
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
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// dial opens a raw client connection to the proxy.
func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// readHeadLines reads one head from r and returns its lines.
func readHeadLines(t testing.TB, r *bufio.Reader) []string {
	t.Helper()
	var lines []string
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a head: %v (so far %q)", err, lines)
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			return lines
		}
		lines = append(lines, l)
	}
}

// TestHeadPassesThroughUntouched: field names keep their case and order,
// both ways, and the target's Date and Server are the client's to see;
// only hop-by-hop fields go.
func TestHeadPassesThroughUntouched(t *testing.T) {
	seen := make(chan []string, 1)
	backend := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		seen <- readHeadLines(t, br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nserver: tiny/1.0\r\nDate: Mon, 07 Dec 2026 09:00:00 GMT\r\nX-lower-UPPER: v\r\nContent-Length: 2\r\n\r\nok")
	})
	p := startTestProxy(t, backend)
	c := dial(t, p.addr)
	io.WriteString(c, "GET /a?b=c HTTP/1.1\r\nhost: svc\r\nX-CaSe: 1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: gone\r\nKeep-Alive: timeout=5\r\nproxy-authorization: Basic eA==\r\nAccept: */*\r\n\r\n")
	br := bufio.NewReader(c)
	res := readHeadLines(t, br)
	want := []string{"GET /a?b=c HTTP/1.1", "host: svc", "X-CaSe: 1", "proxy-authorization: Basic eA==", "Accept: */*"}
	if got := <-seen; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("the target got\n%q\nwant\n%q", got, want)
	}
	wantRes := []string{"HTTP/1.1 200 OK", "server: tiny/1.0", "Date: Mon, 07 Dec 2026 09:00:00 GMT", "X-lower-UPPER: v", "Content-Length: 2"}
	if strings.Join(res, "|") != strings.Join(wantRes, "|") {
		t.Errorf("the client got\n%q\nwant\n%q", res, wantRes)
	}
}

// TestSmuggling: requests two parsers could frame differently are
// refused with 400 (or 501/505/431) and the connection closed, before
// anything reaches the target.
func TestSmuggling(t *testing.T) {
	reached := make(chan string, 16)
	backend := rawBackend(t, func(c net.Conn) {
		b := make([]byte, 4096)
		n, _ := c.Read(b)
		reached <- string(b[:n])
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	})
	p := startTestProxy(t, backend, func(c *Config) { c.MaxHeaderBytes = 4096 })
	for _, tc := range []struct {
		name, req string
		status    string
	}{
		{"two different Content-Lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "400"},
		{"a Content-Length list that disagrees", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd", "400"},
		{"a signed Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", "400"},
		{"a hex Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc", "400"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", "400"},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", "400"},
		{"bare LF inside the head", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", "400"},
		{"space before the colon", "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", "400"},
		{"NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", "400"},
		{"CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", "400"},
		{"no Host in HTTP/1.1", "GET / HTTP/1.1\r\nX: y\r\n\r\n", "400"},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"},
		{"a coding that is not chunked last", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "501"},
		{"chunked in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"},
		{"HTTP/2.0 on an HTTP/1 connection", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", "505"},
		{"a malformed version", "GET / HTTP/1.1x\r\nHost: a\r\n\r\n", "400"},
		{"an oversized head", "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", 5000) + "\r\n\r\n", "431"},
		{"a fragment in the target", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
		{"a target that is no URI", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, p.addr)
			io.WriteString(c, tc.req)
			br := bufio.NewReader(c)
			lines := readHeadLines(t, br)
			if !strings.HasPrefix(lines[0], "HTTP/1.1 "+tc.status+" ") {
				t.Errorf("status line %q, want %s", lines[0], tc.status)
			}
			if !containsLine(lines, "Connection: close") {
				t.Errorf("head %q has no Connection: close", lines)
			}
			io.Copy(io.Discard, br) // returns once the proxy closes
			select {
			case got := <-reached:
				t.Errorf("the target got %q", got)
			default:
			}
		})
	}
}

func containsLine(lines []string, l string) bool {
	for _, x := range lines {
		if x == l {
			return true
		}
	}
	return false
}

// TestChunkedWinsOverContentLength: a request with both framings goes on
// chunked, without its Content-Length, and its connection closes after
// the response (RFC 9112 §6.1).
func TestChunkedWinsOverContentLength(t *testing.T) {
	got := make(chan string, 1)
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.Header.Get("Content-Length") + "|" + strings.Join(r.TransferEncoding, ",") + "|" + string(b)
		io.WriteString(w, "done")
	}))
	p := startTestProxy(t, backend)
	c := dial(t, p.addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(body) != "done" || !res.Close {
		t.Errorf("got %d %q close=%v, want 200 done and the connection closing", res.StatusCode, body, res.Close)
	}
	if g := <-got; g != "|chunked|hello" {
		t.Errorf("the target saw %q, want no Content-Length, chunked, hello", g)
	}
	if n, _ := br.Read(make([]byte, 1)); n != 0 {
		t.Error("the connection carried on after the response")
	}
}

// TestHalfClosedClientGetsItsResponse: a client that shuts down its
// sending side after the request (nc -N, some scripts) still gets the
// response.
func TestHalfClosedClientGetsItsResponse(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		io.WriteString(w, "still here")
	}))
	p := startTestProxy(t, backend)
	c := dial(t, p.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(all), "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(string(all), "still here") {
		t.Errorf("got %q, want the 200 with its body", all)
	}
}

// TestInformationalResponsesPassOn: a 103 Early Hints and a 100 Continue
// the target sends reach an HTTP/1.1 client before the final response.
func TestInformationalResponsesPassOn(t *testing.T) {
	backend := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		readHeadLines(t, br)
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
	})
	p := startTestProxy(t, backend)
	c := dial(t, p.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	first := readHeadLines(t, br)
	second := readHeadLines(t, br)
	if first[0] != "HTTP/1.1 103 Early Hints" || !containsLine(first, "Link: </a.css>; rel=preload") || second[0] != "HTTP/1.1 200 OK" {
		t.Errorf("got %q then %q, want the 103 with its Link, then the 200", first, second)
	}
}

// TestExpectContinue: the body of a request with Expect: 100-continue is
// sent once the target asks for it, and the client sees one 100.
func TestExpectContinue(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "got "+string(b))
	}))
	p := startTestProxy(t, backend)
	c := dial(t, p.addr)
	io.WriteString(c, "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	br := bufio.NewReader(c)
	if l := readHeadLines(t, br); l[0] != "HTTP/1.1 100 Continue" {
		t.Fatalf("first head %q, want 100 Continue", l)
	}
	io.WriteString(c, "data")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(b) != "got data" {
		t.Errorf("got %d %q, want 200 got data", res.StatusCode, b)
	}
}

// TestUpgradeAndConnectTunnel: a 101 to an upgrade request, and a 2xx to
// a CONNECT, turn the connection into a tunnel both ways.
func TestUpgradeAndConnectTunnel(t *testing.T) {
	echo := func(answer string) func(net.Conn) {
		return func(c net.Conn) {
			br := bufio.NewReader(c)
			readHeadLines(t, br)
			io.WriteString(c, answer)
			io.Copy(c, br)
		}
	}
	for _, tc := range []struct{ name, req, answer string }{
		{"websocket", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"connect", "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n", "HTTP/1.1 200 Connection Established\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startTestProxy(t, rawBackend(t, echo(tc.answer)))
			c := dial(t, p.addr)
			io.WriteString(c, tc.req+"early")
			br := bufio.NewReader(c)
			readHeadLines(t, br)
			io.WriteString(c, "-late")
			c.(*net.TCPConn).CloseWrite()
			b, _ := io.ReadAll(br)
			if string(b) != "early-late" {
				t.Errorf("the tunnel echoed %q, want early-late", b)
			}
		})
	}
}

// TestTrailersPassBothWays: a chunked request's trailers reach the
// target, and a chunked response's reach the client.
func TestTrailersPassBothWays(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(200)
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", "req="+r.Trailer.Get("X-Check"))
	}))
	p := startTestProxy(t, backend)
	req, _ := http.NewRequest("POST", "http://"+p.addr+"/", io.NopCloser(strings.NewReader("payload")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Check": {"abc"}}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(res.Body)
	res.Body.Close()
	if got := res.Trailer.Get("X-Sum"); got != "req=abc" {
		t.Errorf("response trailer X-Sum = %q, want req=abc", got)
	}
}

// TestHTTP10Client: an HTTP/1.0 client gets a chunked response as plain
// bytes ending with the connection, and its keep-alive is honoured for a
// response with a length.
func TestHTTP10Client(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			io.WriteString(w, "part1")
			w.(http.Flusher).Flush()
			io.WriteString(w, "part2")
			return
		}
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
	}))
	p := startTestProxy(t, backend)
	c := dial(t, p.addr)
	io.WriteString(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if string(b) != "ok" || res.Close {
		t.Errorf("got %q close=%v, want ok and the connection kept", b, res.Close)
	}
	io.WriteString(c, "GET /stream HTTP/1.0\r\n\r\n")
	rest, _ := io.ReadAll(br)
	if !strings.HasSuffix(string(rest), "\r\n\r\npart1part2") || strings.Contains(strings.ToLower(string(rest)), "transfer-encoding") {
		t.Errorf("got %q, want the body unchunked, ending with the connection", rest)
	}
}

// TestPooledConnectionClosedByTargetIsRetried: a request without a body
// that finds its pooled connection closed by the target goes again on a
// new one, unseen by the client.
func TestPooledConnectionClosedByTargetIsRetried(t *testing.T) {
	backend := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		readHeadLines(t, br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		// Keep-alive claimed, yet the connection closes: as a server
		// whose idle timeout fires just as the next request arrives.
	})
	p := startTestProxy(t, backend)
	for i := range 3 {
		res, err := http.Get("http://" + p.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q, want 200 ok", i, res.StatusCode, b)
		}
		time.Sleep(20 * time.Millisecond) // the close reaches the proxy
	}
}

// TestPoolReusesConnections: sequential requests ride one upstream
// connection.
func TestPoolReusesConnections(t *testing.T) {
	conns := make(chan struct{}, 100)
	backend := rawBackend(t, func(c net.Conn) {
		conns <- struct{}{}
		br := bufio.NewReader(c)
		for {
			if _, err := br.Peek(1); err != nil {
				return
			}
			readHeadLines(t, br)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	p := startTestProxy(t, backend)
	for range 10 {
		res, err := http.Get("http://" + p.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(res.Body)
		res.Body.Close()
	}
	if n := len(conns); n != 1 {
		t.Errorf("10 sequential requests took %d upstream connections, want 1", n)
	}
}

// TestIdleConnectionsHoldNoBuffers: between requests a keep-alive client
// connection gives its write buffer back at once and its read buffer
// after idleGrace, so that thousands of idle ones cost little.
func TestIdleConnectionsHoldNoBuffers(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	p := startTestProxy(t, backend)
	c := dial(t, p.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(idleGrace + 2*time.Second)
	for {
		p.mu.Lock()
		var cc *clientConn
		for x := range p.conns {
			cc = x
		}
		p.mu.Unlock()
		// idle is stored after the buffers are given back: reading it
		// orders the test after that.
		if cc != nil && cc.idle.Load() && !cc.holdsReader.Load() {
			if cc.bw != nil {
				t.Error("an idle connection holds its write buffer")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection never went idle")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A target that breaks the connection once the request went out gets the
// client a 502; the proxy's answer says whether the client connection
// goes on, and does as it says: closed after a request whose body was not
// all read (the rest would be taken for the next request), kept for the
// next request otherwise.
func TestBrokenResponseAnswerKeepsItsWord(t *testing.T) {
	backend := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		readHeadLines(t, br)
		c.(*net.TCPConn).SetLinger(0) // a reset, not an orderly close
	})
	p := startTestProxy(t, backend)
	for _, tc := range []struct {
		name, req string
		wantClose bool
	}{
		{"GET", "GET / HTTP/1.1\r\nHost: t\r\n\r\n", false},
		{"POST of 4 MB", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4194304\r\n\r\n" + strings.Repeat("x", 4<<20), true},
	} {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		go io.WriteString(c, tc.req) // the proxy may answer before it reads it all
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway || res.Close != tc.wantClose {
			t.Errorf("%s: %d, Connection: close %v; want 502, %v", tc.name, res.StatusCode, res.Close, tc.wantClose)
		}
		// A second request on the same connection: answered when the
		// connection was kept, EOF when the answer said close.
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		res, err = http.ReadResponse(br, nil)
		switch {
		case tc.wantClose && err == nil:
			res.Body.Close()
			t.Errorf("%s: the connection went on after Connection: close", tc.name)
		case !tc.wantClose && err != nil:
			t.Errorf("%s: the next request on the kept connection: %v", tc.name, err)
		case !tc.wantClose:
			res.Body.Close()
		}
	}
}
