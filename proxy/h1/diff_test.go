package h1

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/metrics"
)

// The differential fuzz targets below send the same bytes to net/http
// directly and through the forwarder, and require that whatever the
// forwarder lets through is read by net/http exactly as the original
// bytes are: the forwarder may refuse more than net/http does (it is
// stricter on purpose), never read a message differently. Run them with
// `make fuzz` or `go test -fuzz FuzzRequests ./proxy/h1/`; the seeds run
// in `make test`.

// hopByHop are the fields the forwarder removes by design.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Mesh-Orig-Proto"}

// recorder is a net/http backend that writes down each request it reads.
type recorder struct {
	mu   sync.Mutex
	seen []string
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	h := r.Header.Clone()
	drop := slices.Clone(hopByHop)
	for _, v := range r.Header.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			drop = append(drop, strings.TrimSpace(f))
		}
	}
	for _, f := range drop {
		h.Del(f)
	}
	if len(r.TransferEncoding) > 0 {
		h.Del("Content-Length")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s host=%q te=%v cl=%d\n", r.Method, r.RequestURI, r.Proto, r.Host, r.TransferEncoding, r.ContentLength)
	h.Write(&b)
	if err != nil {
		// A body that broke off is no message, however much of it came.
		fmt.Fprintf(&b, "body broke off")
	} else {
		fmt.Fprintf(&b, "body=%q trailer=%v", body, r.Trailer)
	}
	rec.mu.Lock()
	rec.seen = append(rec.seen, b.String())
	rec.mu.Unlock()
	io.WriteString(w, "ok")
}

func (rec *recorder) take() []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	s := rec.seen
	rec.seen = nil
	return s
}

// exchangeRaw writes in to addr, half-closes and reads the answer until
// the server closes or a second passes.
func exchangeRaw(t testing.TB, addr string, in []byte) []byte {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	c.Write(in)
	c.(*net.TCPConn).CloseWrite()
	out, _ := io.ReadAll(c)
	return out
}

func FuzzRequests(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /p?q=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
		"GET http://a/abs?x HTTP/1.1\r\nHost: b\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		// Fresh servers for each input: closing them waits for every
		// request they read, so none is counted under the next input.
		d := readBy(t, in, false)
		got := readBy(t, in, true)
		if len(got) > len(d) {
			t.Fatalf("through the forwarder the target read %d requests, net/http alone %d:\nforwarded: %q\ndirect: %q", len(got), len(d), got, d)
		}
		for i := range got {
			if got[i] != d[i] {
				t.Fatalf("request %d read differently through the forwarder:\nforwarded: %s\ndirect:    %s", i, got[i], d[i])
			}
		}
	})
}

// readBy sends in to a net/http server, through the forwarder or not, and
// returns the requests the server read.
func readBy(t *testing.T, in []byte, forwarded bool) []string {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	addr := srv.Listener.Addr().String()
	var p *Proxy
	if forwarded {
		var stop func()
		p, addr, stop = serveProxy(t, Config{Direction: metrics.Inbound, Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler)}, addr)
		defer stop()
	}
	exchangeRaw(t, addr, in)
	if p != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		p.Shutdown(ctx)
		cancel()
	}
	srv.Close()
	return rec.take()
}

// responseView is how a net/http client reads a response, with what the
// forwarder changes by design left out.
func responseView(raw []byte) (string, error) {
	req, _ := http.NewRequest("GET", "http://a/", nil)
	res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), req)
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return "", err
	}
	h := res.Header.Clone()
	drop := append(slices.Clone(hopByHop), "Transfer-Encoding")
	// From the raw bytes: net/http drops a Connection field saying close.
	head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	for _, l := range strings.Split(string(head), "\r\n") {
		name, v, ok := strings.Cut(l, ":")
		if !ok || !strings.EqualFold(name, "connection") {
			continue
		}
		for _, f := range strings.Split(v, ",") {
			drop = append(drop, strings.TrimSpace(f))
		}
	}
	for _, f := range drop {
		h.Del(f)
	}
	if res.Header.Get("Mesh-Proxy-Error") != "" {
		return "", fmt.Errorf("refused by the forwarder: %s", body)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d %v\n", res.StatusCode, res.TransferEncoding)
	h.Write(&b)
	fmt.Fprintf(&b, "body=%q trailer=%v", body, res.Trailer)
	return b.String(), nil
}

func FuzzResponses(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2;e\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n1\r\na\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
		"HTTP/1.1 301 Moved\r\nLocation: /x\r\nConnection: close, X-H\r\nX-H: 1\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	var mu sync.Mutex
	var answer []byte
	backend := rawBackend(f, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			l, err := br.ReadString('\n')
			if err != nil || l == "\r\n" {
				break
			}
		}
		mu.Lock()
		a := answer
		mu.Unlock()
		c.Write(a)
	})
	p := startTestProxy(f, backend)
	f.Fuzz(func(t *testing.T, in []byte) {
		mu.Lock()
		answer = in
		mu.Unlock()
		want, werr := responseView(in)
		got, gerr := responseView(exchangeRaw(t, p.addr, []byte("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")))
		if gerr != nil {
			return // refused or cut: the forwarder may be stricter
		}
		if werr != nil {
			t.Fatalf("net/http refuses %q (%v), yet through the forwarder it reads\n%s", in, werr, got)
		}
		if got != want {
			t.Fatalf("the response reads differently through the forwarder:\nforwarded: %s\ndirect:    %s", got, want)
		}
	})
}
