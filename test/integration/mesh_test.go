package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
	"github.com/mesh-dev/mesh/test/netnstest"
)

// proxyUID is the UID `mesh-proxy init` exempts by default (DESIGN.md).
const proxyUID = 2102

// meshPod is a pod with interception installed and a proxy running.
type meshPod struct {
	*netnstest.Pod
	proxy *netnstest.Process
	admin *http.Client // talks to the proxy's admin port from inside the pod
}

// newLab returns a lab with a meshed client pod and a meshed server pod.
func newLab(t *testing.T, proxyArgs ...string) (lab *netnstest.Lab, client, server *meshPod) {
	t.Helper()
	lab = netnstest.New(t)
	netnstest.RequireTools(t, "iptables", "setpriv")
	return lab, mesh(t, lab, "client", proxyArgs...), mesh(t, lab, "server", proxyArgs...)
}

// mesh adds a pod named name, runs `mesh-proxy init` in it with no flags
// and starts the proxy as UID 2102 with no flags but args, exactly as the
// injected pod will, and waits until the proxy says it is ready.
func mesh(t *testing.T, lab *netnstest.Lab, name string, args ...string) *meshPod {
	t.Helper()
	pod := lab.Pod(name)
	pod.Run(t, bins.proxy, "init")
	args = append([]string{"--log-format=text", "--shutdown-grace=2s"}, args...)
	proc := lab.Start(name+"/mesh-proxy", pod.CommandAs(context.Background(), proxyUID, bins.proxy, args...))
	mp := &meshPod{Pod: pod, proxy: proc, admin: &http.Client{
		Transport: &http.Transport{DialContext: pod.DialContext, DisableKeepAlives: true},
		Timeout:   5 * time.Second,
	}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if exited, err := proc.Exited(); exited {
			t.Fatalf("mesh-proxy in %s exited: %v\n%s", name, err, proc.Output())
		}
		res, err := mp.admin.Get("http://127.0.0.1:4191/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return mp
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("mesh-proxy in %s not ready after 10s: %v\n%s", name, err, proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metrics is one scrape of a proxy's /metrics.
type metrics = metricstest.Families

func (p *meshPod) scrape(t testing.TB) metrics {
	t.Helper()
	res, err := p.admin.Get("http://127.0.0.1:4191/metrics")
	if err != nil {
		t.Fatalf("scraping the proxy in %s: %v", p.Name, err)
	}
	defer res.Body.Close()
	fams, err := metricstest.Parse(res.Body)
	if err != nil {
		t.Fatalf("the proxy in %s: %v", p.Name, err)
	}
	return fams
}

// crossing snapshots both proxies' counters, so a test can assert later
// that its traffic went through the client's outbound side and the
// server's inbound side.
type crossing struct {
	client, server *meshPod
	before         [2]metrics
}

func watch(t testing.TB, client, server *meshPod) *crossing {
	return &crossing{client: client, server: server, before: [2]metrics{client.scrape(t), server.scrape(t)}}
}

// requests asserts that at least n HTTP requests crossed both proxies.
// ("At least": the client's own retries and probes may add some.)
func (c *crossing) requests(t testing.TB, n int) {
	t.Helper()
	c.atLeast(t, "mesh_proxy_http_requests_total", float64(n))
}

// connections asserts that at least n TCP connections crossed both proxies.
func (c *crossing) connections(t testing.TB, n int) {
	t.Helper()
	c.atLeast(t, "mesh_proxy_tcp_open_total", float64(n))
}

// detected asserts that both proxies detected protocol on at least n
// connections, for the reason given ("" matches any reason).
func (c *crossing) detected(t testing.TB, protocol, reason string, n int) {
	t.Helper()
	labels := []string{"protocol", protocol}
	if reason != "" {
		labels = append(labels, "reason", reason)
	}
	c.atLeast(t, "mesh_proxy_protocol_detections_total", float64(n), labels...)
}

// clientRequests asserts that at least n HTTP requests reached the client's
// proxy, for cases where the client may cancel before the request goes on.
func (c *crossing) clientRequests(t testing.TB, n int) {
	t.Helper()
	c.check(t, "mesh_proxy_http_requests_total", float64(n), false)
}

func (c *crossing) atLeast(t testing.TB, name string, n float64, labels ...string) {
	t.Helper()
	c.check(t, name, n, true, labels...)
}

func (c *crossing) check(t testing.TB, name string, n float64, serverToo bool, labels ...string) {
	t.Helper()
	// Counters for a connection are written when it closes; allow the
	// proxies a moment to see the client's FIN.
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := [2]metrics{c.client.scrape(t), c.server.scrape(t)}
		out := append([]string{"direction", "outbound"}, labels...)
		in := append([]string{"direction", "inbound"}, labels...)
		gotOut := after[0].Sum(name, out...) - c.before[0].Sum(name, out...)
		gotIn := after[1].Sum(name, in...) - c.before[1].Sum(name, in...)
		if gotOut >= n && (gotIn >= n || !serverToo) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s{%s}: client proxy (outbound) counted %v, server proxy (inbound) %v; want at least %v on both: the traffic did not cross both proxies",
				name, strings.Join(labels, ","), gotOut, gotIn, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// peakRSS is the proxy's peak resident set size in bytes (VmHWM).
func (p *meshPod) peakRSS(t testing.TB) int64 { return p.status(t, "VmHWM") }

// rss is the proxy's current resident set size in bytes (VmRSS).
func (p *meshPod) rss(t testing.TB) int64 { return p.status(t, "VmRSS") }

func (p *meshPod) status(t testing.TB, field string) int64 {
	t.Helper()
	// nsenter and setpriv exec the proxy in place, so the pid we started is the proxy's.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.proxy.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s in /proc/%d/status: %v", field, p.proxy.Pid(), err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, p.proxy.Pid())
	return 0
}

// serveHTTP runs h in-process on a listener inside pod (HTTP/1.1 and h2c)
// and returns its port.
func serveHTTP(t testing.TB, pod *meshPod, h http.Handler) int {
	t.Helper()
	ln, err := pod.Listen(":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv.Protocols = &protocols
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// netnstestRequire fails the test when a tool is missing (never skips).
func netnstestRequire(t testing.TB, tools ...string) {
	t.Helper()
	netnstest.RequireTools(t, tools...)
}
