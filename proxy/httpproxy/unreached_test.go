package httpproxy_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// TestUnreachedRequestsNameNoTarget is issue 12's "no series for
// connections that never reached an app" for HTTP: requests the proxy
// answers itself, 502 because the target refused the connection and 504
// because connecting timed out, are counted without their target_addr, so
// that a sweep of closed ports adds no series per port. A request that
// reached its target keeps its target_addr. So do the 503s for a
// destination without endpoints.
func TestUnreachedRequestsNameNoTarget(t *testing.T) {
	const connectTimeout = 300 * time.Millisecond
	m := metrics.New()
	empty := closedPort(t) // a destination the mesh knows, with no endpoint
	p := httpproxy.New(httpproxy.Config{
		Direction: metrics.Outbound, Metrics: m, Log: slog.New(&panicLog{}), ConnectTimeout: connectTimeout,
		Pick: func(_ context.Context, target netip.AddrPort) (httpproxy.Endpoint, error) {
			if target == empty {
				return httpproxy.Endpoint{}, httpproxy.ErrNoEndpoints
			}
			return httpproxy.Endpoint{}, errNotInMesh
		},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	ln := loopback(t)
	const closed = 20
	var unreached []netip.AddrPort
	wantStatus := map[netip.AddrPort]int{}
	for range closed {
		a := closedPort(t)
		unreached = append(unreached, a)
		wantStatus[a] = http.StatusBadGateway
	}
	silent := unresponsive(t)
	unreached = append(unreached, silent)
	wantStatus[silent] = http.StatusGatewayTimeout
	unreached = append(unreached, empty)
	wantStatus[empty] = http.StatusServiceUnavailable
	reached := newTarget(t).addr
	wantStatus[reached] = http.StatusOK

	for to, want := range wantStatus {
		raw := []byte("GET / HTTP/1.1\r\nHost: api\r\n\r\n")
		reqs, _ := parseRequests(raw)
		res, err := responses(exchange(t, p, ln, to, raw), reqs)
		if err != nil || len(res) != 1 {
			t.Fatalf("GET to %s: %d responses, %v", to, len(res), err)
		}
		if res[0].StatusCode != want {
			t.Errorf("GET to %s: %s, want %d", to, res[0].Status, want)
		}
	}

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	fams, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mesh_proxy_http_requests_total", "mesh_proxy_http_responses_total", "mesh_proxy_http_response_latency_seconds"} {
		for _, to := range unreached {
			if n := fams.Sum(name, "target_addr", to.String()); n != 0 {
				t.Errorf("%s{target_addr=%q} = %v: a request that never reached an application named its target", name, to, n)
			}
		}
		if got, want := fams.Sum(name, "target_addr", "", "authority", "api"), float64(len(unreached)); got != want {
			t.Errorf("%s{target_addr=\"\"} = %v, want %v: every unreached request is counted", name, got, want)
		}
		if got := fams.Sum(name, "target_addr", reached.String()); got != 1 {
			t.Errorf("%s{target_addr=%q} = %v, want 1", name, reached, got)
		}
	}
	for _, tc := range []struct {
		class string
		want  float64
	}{{"5xx", float64(len(unreached))}, {"2xx", 1}} {
		if got := fams.Sum("mesh_proxy_http_responses_total", "status_class", tc.class); got != tc.want {
			t.Errorf("responses %s = %v, want %v", tc.class, got, tc.want)
		}
	}
}

// errNotInMesh is the Picker's answer for a destination the mesh does not
// know: the request goes to its connection's target.
var errNotInMesh = errors.New("not in the mesh")

// closedPort returns a loopback address where connecting is refused: a
// socket bound to it that never listens, closed at cleanup. A port that was
// merely free could be taken meanwhile, by another process's listener or as
// the ephemeral port of a connection to itself (a TCP self-connect), and
// answer; a bound one is neither.
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

// unresponsive returns a loopback address where connecting times out: a
// listener with an accept backlog of 0, never accepting, whose queue is
// filled first. Linux drops the SYNs a full accept queue cannot take, so
// the client's connect waits for a SYN-ACK that never comes, as for a
// target that vanished from the network.
func unresponsive(tb testing.TB) netip.AddrPort {
	tb.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		tb.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		tb.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4(sa.(*syscall.SockaddrInet4).Addr), uint16(sa.(*syscall.SockaddrInet4).Port))
	for range 8 {
		c, err := net.DialTimeout("tcp", addr.String(), 200*time.Millisecond)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return addr
		}
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
	}
	tb.Fatalf("%s accepted 8 connections into a backlog of 0", addr)
	return addr
}

// countedConn is an accepted connection whose Close counts the end of its
// TCP series, as the proxy's sides do.
type countedConn struct {
	net.Conn
	tcp  *metrics.Conn
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.tcp.Close(0, 0) })
	return c.Conn.Close()
}

// TestConnReachReported: a connection's requests tell its TCP series
// whether they reached an application. One whose only request the proxy
// answered itself (refused, no endpoint, nothing listening) is counted
// unreached for that reason, with no TCP series naming its target; one
// whose request reached the application is counted open and closed under
// it.
func TestConnReachReported(t *testing.T) {
	empty := closedPort(t) // a destination the mesh knows, with no endpoint
	app := newTarget(t).addr
	for _, tc := range []struct {
		name  string
		to    netip.AddrPort
		authz httpproxy.Authorizer
		path  string
		// why is the reason the connection is counted unreached for; ""
		// when it reached the application.
		why metrics.UnreachedReason
	}{
		{name: "nothing listening", to: closedPort(t), path: "/", why: metrics.ConnectFailed},
		{name: "no endpoint", to: empty, path: "/", why: metrics.NoEndpoint},
		{name: "denied", to: app, authz: denyPrefix{}, path: "/deny/x", why: metrics.PolicyDenied},
		{name: "reached", to: app, authz: denyPrefix{}, path: "/ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := metrics.New()
			p := httpproxy.New(httpproxy.Config{
				Direction: metrics.Inbound, Metrics: m, Log: slog.New(&panicLog{}),
				Pick: func(_ context.Context, target netip.AddrPort) (httpproxy.Endpoint, error) {
					if target == empty {
						return httpproxy.Endpoint{}, httpproxy.ErrNoEndpoints
					}
					return httpproxy.Endpoint{}, errNotInMesh
				},
			})
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				p.Shutdown(ctx)
			})
			ln := loopback(t)
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			tcp := m.Conn(metrics.Inbound, tc.to.String())
			tcp.OpenOnReach(metrics.ConnKey{})
			info := httpproxy.ConnInfo{Target: tc.to, TCP: tcp}
			if tc.authz != nil {
				info.Authz = tc.authz
			}
			p.ServeHTTP1(&countedConn{Conn: server, tcp: tcp}, info)

			client.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(client, "GET "+tc.path+" HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
			// The proxy closes the connection after its answer; the
			// series are counted by then.
			if _, err := io.Copy(io.Discard, client); err != nil {
				t.Fatal(err)
			}

			rec := httptest.NewRecorder()
			m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			fams, err := metricstest.Parse(rec.Body)
			if err != nil {
				t.Fatal(err)
			}
			wantUnreached, wantOpen := 1.0, 0.0
			if tc.why == "" {
				wantUnreached, wantOpen = 0, 1
			}
			if got := fams.Sum("mesh_proxy_tcp_unreached_total", "reason", string(tc.why)); got != wantUnreached {
				t.Errorf("unreached{reason=%q} = %v, want %v", tc.why, got, wantUnreached)
			}
			for _, name := range []string{"mesh_proxy_tcp_open_total", "mesh_proxy_tcp_close_total"} {
				if got := fams.Sum(name, "target_addr", tc.to.String()); got != wantOpen {
					t.Errorf("%s{target_addr=%q} = %v, want %v", name, tc.to, got, wantOpen)
				}
			}
		})
	}
}
