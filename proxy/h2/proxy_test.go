package h2

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestForwardsRequestsBothWays: many concurrent streams on one
// connection, with bodies both ways, trailers, header order and case of
// values kept, and the mark of the HTTP/1.1 path never passed on.
func TestForwardsRequestsBothWays(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Mesh-Orig-Proto") != "" {
			t.Errorf("the target got the proxies' mark")
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("reading the body: %v", err)
		}
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-Order", r.Header.Get("X-Order"))
		w.Header().Set("X-Path", r.URL.RequestURI())
		w.WriteHeader(http.StatusCreated)
		w.Write(body)
		w.Write(body)
		sum := sha256.Sum256(append(body, body...))
		w.Header().Set("X-Sum", fmt.Sprintf("%x", sum))
	}))
	p := startTestProxy(t, backend)
	client := h2cClient(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := bytes.Repeat([]byte{byte('a' + i%26)}, i*1000)
			req, _ := http.NewRequest("POST", "http://"+p.addr+fmt.Sprintf("/echo/%d?q=%d", i, i), bytes.NewReader(body))
			req.Header.Set("X-Order", fmt.Sprintf("Value-%d", i))
			req.Header.Set("Mesh-Orig-Proto", "HTTP/1.1")
			res, err := client.Do(req)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			defer res.Body.Close()
			got, err := io.ReadAll(res.Body)
			if err != nil {
				t.Errorf("request %d: reading: %v", i, err)
				return
			}
			want := append(body, body...)
			if res.StatusCode != http.StatusCreated || !bytes.Equal(got, want) {
				t.Errorf("request %d: %d, %d bytes; want 201, %d bytes", i, res.StatusCode, len(got), len(want))
			}
			if v := res.Header.Get("X-Order"); v != fmt.Sprintf("Value-%d", i) {
				t.Errorf("request %d: X-Order %q", i, v)
			}
			if v := res.Header.Get("X-Path"); v != fmt.Sprintf("/echo/%d?q=%d", i, i) {
				t.Errorf("request %d: path %q", i, v)
			}
			sum := sha256.Sum256(want)
			if v := res.Trailer.Get("X-Sum"); v != fmt.Sprintf("%x", sum) {
				t.Errorf("request %d: trailer X-Sum %q", i, v)
			}
		}()
	}
	wg.Wait()
	if got := p.m.Registry(); got == nil {
		t.Fatal("no metrics")
	}
}

// TestLargeBodyBothWays moves 32 MB each way on one stream: flow control
// credits both senders as the data goes on.
func TestLargeBodyBothWays(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(w, r.Body)
		if n != 32<<20 {
			t.Errorf("target got %d bytes", n)
		}
	}))
	p := startTestProxy(t, backend)
	res, err := h2cClient(t).Post("http://"+p.addr+"/", "application/octet-stream", io.LimitReader(zeros{}, 32<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	n, err := io.Copy(io.Discard, res.Body)
	if err != nil || n != 32<<20 {
		t.Fatalf("got %d bytes, %v; want %d", n, err, 32<<20)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestHeadersPassThrough(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Date"] = []string{"Mon, 07 Dec 2026 09:00:00 GMT"}
		w.Header().Set("Server", "tiny/1.0")
		fmt.Fprintf(w, "%s %s %s", r.Method, r.Host, strings.Join(r.Header["X-Multi"], ","))
	}))
	p := startTestProxy(t, backend)
	req, _ := http.NewRequest("GET", "http://"+p.addr+"/", nil)
	req.Host = "svc.ns"
	req.Header.Add("X-Multi", "a")
	req.Header.Add("X-Multi", "b")
	res, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if string(b) != "GET svc.ns a,b" {
		t.Errorf("body %q", b)
	}
	if res.Header.Get("Date") != "Mon, 07 Dec 2026 09:00:00 GMT" || res.Header.Get("Server") != "tiny/1.0" {
		t.Errorf("Date %q, Server %q: want the target's", res.Header.Get("Date"), res.Header.Get("Server"))
	}
}

// TestRequestTrailersAndContinue: a request that waits for 100 Continue
// gets the target's, and its trailers reach the target after its body.
func TestRequestTrailersAndContinue(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s trailer=%s", body, r.Trailer.Get("X-Req-Sum"))
	}))
	p := startTestProxy(t, backend)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", "http://"+p.addr+"/", pr)
	req.Header.Set("Expect", "100-continue")
	req.Trailer = http.Header{"X-Req-Sum": nil}
	go func() {
		io.WriteString(pw, "payload")
		req.Trailer.Set("X-Req-Sum", "42")
		pw.Close()
	}()
	client := h2cClient(t)
	// The body waits for the 100 this long; long enough that a lost 100
	// shows.
	client.Transport.(*http.Transport).ExpectContinueTimeout = 5 * time.Second
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if string(b) != "payload trailer=42" {
		t.Errorf("target saw %q", b)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %v: the client waited out its 100 Continue", took)
	}
}
