package proxy

// Behaviours proxy/httpproxy's tests covered for its net/http HTTP/1 path,
// which proxy/h1 replaced, checked through the whole proxy.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestOrigProtoMarkFromClientDropped: the mesh's own mark of an HTTP/1.1
// request carried over HTTP/2 between proxies (Mesh-Orig-Proto) is never
// taken from an application: neither forwarder passes it on.
func TestOrigProtoMarkFromClientDropped(t *testing.T) {
	target := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s mark=%q", r.Proto, r.Header.Get("Mesh-Orig-Proto"))
	}))
	p := startProxy(t, target)
	for _, tc := range []struct {
		name   string
		client *http.Client
		want   string
	}{
		{name: "HTTP/1.1", client: h1Client(t), want: `HTTP/1.1 mark=""`},
		{name: "h2c", client: h2cClient(t), want: `HTTP/2.0 mark=""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+p.inbound+"/", nil)
			req.Header.Set("Mesh-Orig-Proto", "HTTP/1.1")
			res, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if string(got) != tc.want {
				t.Errorf("the target saw %q, want %q", got, tc.want)
			}
		})
	}
}

// TestOptionsAsteriskReachesTarget: OPTIONS * (RFC 9110 9.3.7) over
// HTTP/1.1 goes to the target like any request; the proxy does not answer
// it itself.
func TestOptionsAsteriskReachesTarget(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Target", r.Method+" "+r.RequestURI)
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.DisableGeneralOptionsHandler = true // net/http's server would answer it itself
	srv.Start()
	t.Cleanup(srv.Close)
	p := startProxy(t, srv.Listener.Addr().String())
	c, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "OPTIONS * HTTP/1.1\r\nHost: api\r\n\r\n")
	req, _ := http.NewRequest("OPTIONS", "*", nil)
	res, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("X-Target"); res.StatusCode != http.StatusNoContent || got != "OPTIONS *" {
		t.Errorf("%s, the target saw %q; want 204 from the target, which saw OPTIONS *", res.Status, got)
	}
}

// TestHTTP1NoRetryOnceSent: an HTTP/1 request whose connection to its
// endpoint broke after the request went out is answered 502, not sent to
// another endpoint of its Service: the first may have acted on it.
// (proxy/h2's TestNoRetryOnceSent is the same for HTTP/2.)
func TestHTTP1NoRetryOnceSent(t *testing.T) {
	var others atomic.Int64
	other := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		others.Add(1)
		io.WriteString(w, "ok")
	}))
	breaking := breakingEndpoint(t)
	service := "127.0.0.1:1" // never dialled: the proxy balances over the endpoints
	dest := &fakeDestination{sets: map[string][]string{service: {other, breaking.addr}}}
	controller := startDestination(t, dest)
	client := startProxy(t, service, func(c *Config) { c.DestinationAddr = controller })
	waitReady(t, client)
	_, out, _ := client.Addrs()
	h1 := h1Client(t)
	// The balancer picks either endpoint; go on until the breaking one
	// has had a few requests.
	for i := 0; breaking.accepted.Load() < 3 && i < 200; i++ {
		before, hitsBefore := others.Load(), breaking.accepted.Load()
		res, err := h1.Post("http://"+out.String()+"/order", "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		hit := breaking.accepted.Load() > hitsBefore
		switch {
		case hit && res.StatusCode != http.StatusBadGateway:
			t.Errorf("a request the breaking endpoint took: %d, want 502", res.StatusCode)
		case hit && others.Load() != before:
			t.Errorf("a request the breaking endpoint took was sent again, to the other endpoint")
		case !hit && res.StatusCode != http.StatusOK:
			t.Errorf("a request to the other endpoint: %d, want 200", res.StatusCode)
		}
	}
	if breaking.accepted.Load() == 0 {
		t.Fatal("the balancer never picked the breaking endpoint")
	}
}

// breaking is an endpoint that reads a request and resets its connection
// without an answer: a process that crashed on it.
type breaking struct {
	addr     string
	accepted atomic.Int64
}

func breakingEndpoint(t testing.TB) *breaking {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &breaking{addr: ln.Addr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			if _, err := http.ReadRequest(br); err == nil {
				b.accepted.Add(1)
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return b
}
