package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// tcpFamilies are the families of the TCP series, which name a target.
var tcpFamilies = []string{
	"mesh_proxy_tcp_open_total", "mesh_proxy_tcp_close_total", "mesh_proxy_tcp_open_connections",
	"mesh_proxy_tcp_read_bytes_total", "mesh_proxy_tcp_write_bytes_total",
}

// tcpSeriesNaming returns the TCP families with a series whose
// target_addr is target.
func (p *testProxy) tcpSeriesNaming(t testing.TB, target string) []string {
	t.Helper()
	families, err := p.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var named []string
	for _, f := range families {
		if !slices.Contains(tcpFamilies, f.GetName()) {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "target_addr" && l.GetValue() == target {
					named = append(named, f.GetName())
				}
			}
		}
	}
	return named
}

// getOnce sends one HTTP/1.1 request on a connection of its own to the
// proxy, reads the answer and closes the connection.
func getOnce(t testing.TB, proxy string) int {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// getOnceH2 is getOnce over HTTP/2 with prior knowledge (h2c).
func getOnceH2(t testing.TB, proxy string) int {
	t.Helper()
	tr := &http.Transport{Protocols: h2cOnly()}
	defer tr.CloseIdleConnections() // the proxy sees the connection close
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + proxy + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// TestHTTPToClosedPortNamesNoTarget is issue 12's port sweep over HTTP,
// one port: a request through the inbound side to a port where nothing
// listens gets 502, and its connection, which reached no application, is
// counted in mesh_proxy_tcp_unreached_total, with no TCP series naming the
// port, as an opaque connection would be.
func TestHTTPToClosedPortNamesNoTarget(t *testing.T) {
	for _, tc := range []struct {
		name string
		get  func(testing.TB, string) int
	}{
		{"HTTP/1.1", getOnce},
		{"h2c", getOnceH2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			closed := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), closedPort(t))
			p := startProxy(t, closed.String())
			if code := tc.get(t, p.inbound); code != http.StatusBadGateway {
				t.Errorf("request to a closed port: %d, want 502", code)
			}
			// Counted once the proxy saw the connection close, either way.
			waitFor(t, func() bool {
				return p.counter(t, "mesh_proxy_tcp_unreached_total")+p.counter(t, "mesh_proxy_tcp_close_total") == 1
			})
			if named := p.tcpSeriesNaming(t, closed.String()); len(named) > 0 {
				t.Errorf("an HTTP connection that reached no application has TCP series naming %s: %v", closed, named)
			}
			if got := p.counter(t, "mesh_proxy_tcp_unreached_total", "direction", "inbound", "reason", "connect"); got != 1 {
				t.Errorf("unreached{reason=connect} = %v, want 1", got)
			}
		})
	}
}

// TestHTTPConnOpensOnceReached: an HTTP connection's TCP series open when
// one of its requests reaches the application, not before, and then count
// the whole connection: open and closed once, with every byte it moved.
// Its first request finds the port closed (502); its second reaches the
// application, which started listening in between.
func TestHTTPConnOpensOnceReached(t *testing.T) {
	port := closedPort(t)
	target := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String()
	p := startProxy(t, target)
	c, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	get := func(last bool) int {
		t.Helper()
		req := "GET / HTTP/1.1\r\nHost: web\r\n\r\n"
		if last {
			req = "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
		}
		fmt.Fprint(c, req)
		res, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}

	if code := get(false); code != http.StatusBadGateway {
		t.Fatalf("first request, to a closed port: %d, want 502", code)
	}
	if named := p.tcpSeriesNaming(t, target); len(named) > 0 {
		t.Errorf("after a 502 only, TCP series name %s: %v", target, named)
	}
	ln, err := net.Listen("tcp", target)
	if err != nil {
		t.Fatalf("listening on the port that was closed: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	if code := get(true); code != http.StatusOK {
		t.Fatalf("second request, once the application listens: %d, want 200", code)
	}
	c.Close()

	waitFor(t, func() bool { return p.counter(t, "mesh_proxy_tcp_close_total", "target_addr", target) == 1 })
	for _, want := range []struct {
		name string
		v    float64
	}{
		{"mesh_proxy_tcp_open_total", 1},
		{"mesh_proxy_tcp_unreached_total", 0},
	} {
		if got := p.counter(t, want.name); got != want.v {
			t.Errorf("%s = %v, want %v", want.name, got, want.v)
		}
	}
	if got := p.gauge(t, "mesh_proxy_tcp_open_connections", "target_addr", target); got != 0 {
		t.Errorf("open connections = %v, want 0 once closed", got)
	}
	// Both requests' bytes, the one that went nowhere too.
	if got := p.counter(t, "mesh_proxy_tcp_read_bytes_total", "target_addr", target); got < 2*float64(len("GET / HTTP/1.1\r\nHost: web\r\n\r\n")) {
		t.Errorf("read bytes = %v, want both requests", got)
	}
}

// TestHTTPConnWithoutRequestNamesNoTarget: an HTTP connection whose
// client leaves before a whole request is counted unreached, for
// no-request, without a series naming its target.
func TestHTTPConnWithoutRequestNamesNoTarget(t *testing.T) {
	target := backend(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	p := startProxy(t, target)
	c, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "GET / HTTP/1.1\r\n") // detected as HTTP/1, then cut short
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, c)
	c.Close()
	waitFor(t, func() bool {
		return p.counter(t, "mesh_proxy_tcp_unreached_total")+p.counter(t, "mesh_proxy_tcp_close_total") == 1
	})
	if named := p.tcpSeriesNaming(t, target); len(named) > 0 {
		t.Errorf("an HTTP connection without a request has TCP series naming %s: %v", target, named)
	}
	if got := p.counter(t, "mesh_proxy_tcp_unreached_total", "direction", "inbound", "reason", "no-request"); got != 1 {
		t.Errorf("unreached{reason=no-request} = %v, want 1", got)
	}
}

// gauge returns the sum of gauge name's series whose label is value.
func (p *testProxy) gauge(t testing.TB, name, label, value string) float64 {
	t.Helper()
	families, err := p.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					total += m.GetGauge().GetValue()
				}
			}
		}
	}
	return total
}
