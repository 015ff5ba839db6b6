package proxy

// Behaviours proxy/httpproxy's tests covered for its net/http HTTP/1 path,
// which proxy/h1 replaced, checked through the whole proxy.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/h1"
	"github.com/mesh-dev/mesh/proxy/h2"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/tap"
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
		req, _ := http.NewRequest("POST", "http://"+out.String()+"/order", strings.NewReader("hello"))
		// A connection of its own per request: h1 closes the client's
		// connection after such a 502 without saying Connection: close, so
		// a reused one would fail the next request (reported, to be fixed
		// in proxy/h1; this test is about where the request went).
		req.Close = true
		res, err := h1.Do(req)
		if err != nil {
			t.Fatalf("request %d (the breaking endpoint's %d, before %d; others %d before %d): %v", i, breaking.accepted.Load(), hitsBefore, others.Load(), before, err)
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
			// The whole request, body and all, so that it is entirely out
			// of the proxy when the connection breaks.
			if req, err := http.ReadRequest(br); err == nil {
				if _, err := io.Copy(io.Discard, req.Body); err == nil {
					b.accepted.Add(1)
				}
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return b
}

// TestUnreachedRequestsNameNoTarget is issue 12's "no series for
// connections that never reached an application" for the HTTP series:
// requests the proxy answers itself, 502 because the target refused the
// connection and 504 because connecting timed out, are counted without
// their target_addr, so that a sweep of closed ports adds no series per
// port; a request that reached its target keeps its target_addr. Both
// HTTP/1.1 (h1) and h2c (h2).
func TestUnreachedRequestsNameNoTarget(t *testing.T) {
	reached := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for _, proto := range []struct {
		name string
		get  func(testing.TB, string) int
	}{
		{"HTTP/1.1", getOnce},
		{"h2c", getOnceH2},
	} {
		for _, tc := range []struct {
			name   string
			target string
			want   int
			named  bool
		}{
			{name: "refused", target: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), closedPort(t)).String(), want: http.StatusBadGateway},
			{name: "timed out", target: silentAddr(t), want: http.StatusGatewayTimeout},
			{name: "reached", target: reached, want: http.StatusOK, named: true},
		} {
			t.Run(proto.name+" "+tc.name, func(t *testing.T) {
				p := startProxy(t, tc.target, func(c *Config) { c.ConnectTimeout = 300 * time.Millisecond })
				if got := proto.get(t, p.inbound); got != tc.want {
					t.Fatalf("status %d, want %d", got, tc.want)
				}
				for _, name := range []string{"mesh_proxy_http_requests_total", "mesh_proxy_http_responses_total"} {
					named, unnamed := p.counter(t, name, "target_addr", tc.target), p.counter(t, name, "target_addr", "")
					if tc.named && (named != 1 || unnamed != 0) {
						t.Errorf("%s: %v under its target, %v under none; want 1 under its target", name, named, unnamed)
					}
					if !tc.named && (named != 0 || unnamed != 1) {
						t.Errorf("%s: %v under its target, %v under none; want 1 under none", name, named, unnamed)
					}
				}
			})
		}
	}
}

// silentAddr returns a loopback address where connecting times out: a
// listener with an accept backlog of 0 that never accepts, its queue
// filled first. Linux drops the SYNs a full accept queue cannot take, as
// for a target that vanished from the network.
func silentAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	in4 := sa.(*syscall.SockaddrInet4)
	addr := netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)).String()
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return addr
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("%s accepted 8 connections into a backlog of 0", addr)
	return addr
}

// TestTapShowsTheEndpointReached: a request tried on an endpoint that
// refused the connection, then on another, is tapped once, at the
// endpoint it reached, with its response; over HTTP/1.1 (h1) and h2c (h2).
func TestTapShowsTheEndpointReached(t *testing.T) {
	live := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	for _, tc := range []struct {
		name   string
		client *http.Client
	}{{"HTTP/1.1", h1Client(t)}, {"h2c", h2cClient(t)}} {
		t.Run(tc.name, func(t *testing.T) {
			dead := refusingAddr(t)
			service := "127.0.0.1:1" // never dialled: the proxy balances over the endpoints
			controller := startDestination(t, &fakeDestination{sets: map[string][]string{service: {live, dead}}})
			p := startProxy(t, service, func(c *Config) { c.DestinationAddr = controller })
			waitReady(t, p)
			_, out, admin := p.Addrs()
			w, err := p.tapHub.Watch(tap.Filter{PathPrefix: "/"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(w.Close)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			// The balancer picks either endpoint first; once a request
			// tried the refusing one, the balancer ejects it.
			retried := false
			for i := 0; !retried && i < 50; i++ {
				res, err := tc.client.Get("http://" + out.String() + "/order")
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					t.Fatalf("request %d: %d, want 200", i, res.StatusCode)
				}
				req, err := w.Next(ctx)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := w.Next(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if req.Response != nil || req.Request.Dst != live {
					t.Errorf("request %d: first event %+v, want the request at %s", i, req.Request, live)
				}
				if resp.Response == nil || resp.ID != req.ID || resp.Response.Status != 200 {
					t.Errorf("request %d: second event %+v, want the request's 200", i, resp)
				}
				retried = destinationEjected(t, admin.String(), dead)
			}
			if !retried {
				t.Fatal("no request tried the refusing endpoint")
			}
			// No third event: a request is tapped once, whatever it tried.
			short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancelShort()
			if ev, err := w.Next(short); err == nil {
				t.Errorf("an event past the request's two: %+v", ev)
			}
		})
	}
}

// forwarder is what proxy/h1 and proxy/h2 both are to the proxy's sides.
type forwarder interface {
	Serve(c net.Conn, info httpproxy.ConnInfo)
	Shutdown(ctx context.Context) error
}

// TestForwarderShutdownPastDeadline: when Shutdown's ctx ends before a
// request does, the forwarder closes the client connection, its Serve
// returns, the client's request fails, and Shutdown says why; for h1 and
// h2 alike.
func TestForwarderShutdownPastDeadline(t *testing.T) {
	for _, tc := range []struct {
		name   string
		new    func(httpproxy.Config) forwarder
		client func(testing.TB) *http.Client
	}{
		{"h1", func(c httpproxy.Config) forwarder { return h1.New(c) }, h1Client},
		{"h2", func(c httpproxy.Config) forwarder { return h2.New(c) }, h2cClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started := make(chan struct{})
			var once sync.Once
			target := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				once.Do(func() { close(started) })
				<-r.Context().Done()
			}))
			f := tc.new(httpproxy.Config{Direction: metrics.Inbound, Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler)})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			served := make(chan struct{})
			go func() {
				defer close(served)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				f.Serve(c, httpproxy.ConnInfo{Target: netip.MustParseAddrPort(target)})
			}()
			failed := make(chan error, 1)
			go func() {
				res, err := tc.client(t).Get("http://" + ln.Addr().String() + "/stuck")
				if err == nil {
					_, err = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				failed <- err
			}()
			<-started
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			if err := f.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Shutdown = %v, want %v", err, context.DeadlineExceeded)
			}
			select {
			case <-served:
			case <-time.After(5 * time.Second):
				t.Fatal("Serve still runs 5s after Shutdown gave up")
			}
			if err := <-failed; err == nil {
				t.Error("the request on the closed connection succeeded")
			}
		})
	}
}

// TestNonUTF8AuthorityAnswered: an absolute-form target sets the
// authority without the Host field's checks; a non-UTF-8 one is no valid
// Prometheus label value, which once made the metrics panic and the
// connection drop unanswered. The request is answered and the metrics
// still gather.
func TestNonUTF8AuthorityAnswered(t *testing.T) {
	target := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	p := startProxy(t, target)
	c, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET http://\xff/ HTTP/1.1\r\nHost: a\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d, want 200 (forwarded) or 400 (refused)", res.StatusCode)
	}
	if _, err := p.metrics.Registry().Gather(); err != nil {
		t.Errorf("the metrics no longer gather: %v", err)
	}
}
