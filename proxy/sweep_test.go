package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/internal/ports"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// fixedSeries bounds the proxy's series that do not depend on traffic: the
// Go and process collectors, discovery, router and identity
// (docs/metrics.md, "Bounds").
const fixedSeries = 100

// TestPortSweepBounded is issue 12's port sweep, in-process: 5,000
// connections to distinct targets through the inbound side, each from its
// own loopback address. 120 reach an application and get its answer; of
// the rest, half are HTTP requests the proxy answers 502 (a closed port),
// half opaque connections whose dial is refused. /metrics stays under the
// documented bound and passes promtool, and no connection that reached no
// application, HTTP or opaque, left a TCP series naming its target.
func TestPortSweepBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 connections")
	}
	const (
		sweep   = 5000
		reached = 120
	)
	apps := make([]netip.AddrPort, reached)
	for i := range apps {
		apps[i] = netip.MustParseAddrPort(backend(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, "ok")
		})))
	}
	closedHTTP, closedOpaque := closedPort(t), closedPort(t)
	// Connection i comes from 127.2.x.y and goes to target(i), where
	// nothing listens but the apps.
	source := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 2, byte(i / 250), byte(i%250 + 1)}) }
	target := func(i int) netip.AddrPort {
		switch {
		case i < reached:
			return apps[i]
		case i%2 == 0:
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(i%250 + 1)}), closedHTTP)
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(i%250 + 1)}), closedOpaque)
	}
	p := startSweptProxy(t, func(c *net.TCPConn) (netip.AddrPort, error) {
		b := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().As4()
		return target(int(b[2])*250 + int(b[3]) - 1), nil
	}, func(c *Config) {
		c.OpaquePorts = ports.New(ports.Range{Lo: closedOpaque, Hi: closedOpaque})
	})

	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				if err := sweepOne(p.inbound, source(i), i, target(i).Port() == closedOpaque); err != nil {
					t.Errorf("connection %d to %s: %v", i, target(i), err)
				}
			}
		})
	}
	for i := range sweep {
		work <- i
	}
	close(work)
	wg.Wait()

	_, _, admin := p.Addrs()
	res, err := http.Get("http://" + admin.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	total, own := 0, 0
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		total++
		if !strings.HasPrefix(line, "go_") && !strings.HasPrefix(line, "process_") {
			own++
		}
	}
	t.Logf("after %d connections: %d series, %d of them traffic and policy; %d bytes", sweep, total, own, len(body))
	if own > metrics.MaxSeries || total > metrics.MaxSeries+fixedSeries {
		t.Errorf("%d series (%d of traffic and policy), over the documented bound of %d + %d", total, own, metrics.MaxSeries, fixedSeries)
	}
	fams, err := metricstest.Parse(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	refused, opaqueRefused := map[string]bool{}, 0
	for i := reached; i < sweep; i++ {
		refused[target(i).String()] = true
		if target(i).Port() == closedOpaque {
			opaqueRefused++
		}
	}
	for _, s := range fams["mesh_proxy_tcp_open_total"].GetMetric() {
		for _, l := range s.GetLabel() {
			if l.GetName() == "target_addr" && refused[l.GetValue()] {
				t.Errorf("a refused dial to %s has TCP series", l.GetValue())
			}
		}
	}
	if got, want := fams.Sum("mesh_proxy_tcp_unreached_total", "direction", "inbound", "reason", "connect"), float64(len(refused)); got != want {
		t.Errorf("unreached = %v, want %v", got, want)
	}
	if got, want := fams.Sum("mesh_proxy_http_requests_total"), float64(sweep-opaqueRefused); got != want {
		t.Errorf("HTTP requests = %v, want %v: folding into other loses no count", got, want)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (make deps)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// sweepOne connects to proxy from src; over HTTP it asks for / with a
// Host of its own and reads the answer, opaque it waits for the proxy to
// reset the connection.
func sweepOne(proxy string, src netip.Addr, i int, opaque bool) error {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", proxy)
	if opaque && err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = io.Copy(io.Discard, c)
		c.Close()
	}
	if opaque {
		// The proxy resets the client, sometimes before connect returns.
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			return err
		}
		return nil
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: h%d.example\r\nConnection: close\r\n\r\n", i)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusBadGateway {
		return fmt.Errorf("status %s", res.Status)
	}
	return nil
}

// closedPort returns a loopback port nothing listens on (it was just
// free).
func closedPort(t testing.TB) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return netip.MustParseAddrPort(ln.Addr().String()).Port()
}
