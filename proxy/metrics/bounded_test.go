package metrics_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newClocked(t testing.TB, cfg metrics.Config) (*metrics.Metrics, *fakeClock) {
	t.Helper()
	m := metrics.NewWithConfig(cfg)
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	metrics.SetClock(m, clock.Now)
	return m, clock
}

func parse(t testing.TB, b []byte) metricstest.Families {
	t.Helper()
	fams, err := metricstest.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// ownSeries counts the series of the families package metrics declares:
// all but the Go runtime's and the process's.
func ownSeries(fams metricstest.Families) int {
	n := 0
	for name, f := range fams {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		for _, s := range f.GetMetric() {
			n++
			if h := s.GetHistogram(); h != nil {
				// One line per bucket, +Inf among them once parsed, then
				// _sum and _count, counted here instead of the one above.
				n += len(h.GetBucket()) + 1
			}
			n += len(s.GetSummary().GetQuantile())
		}
	}
	return n
}

// values lists the distinct values of label on the family's series.
func values(f *dto.MetricFamily, label string) map[string]bool {
	out := map[string]bool{}
	for _, s := range f.GetMetric() {
		for _, l := range s.GetLabel() {
			if l.GetName() == label {
				out[l.GetValue()] = true
			}
		}
	}
	return out
}

// TestSweepBounded is a port sweep and pod churn at once: 5,000 distinct
// targets, each with a connection that reached its application and an
// HTTP request, or a connection whose dial failed, with identities,
// workloads and routes that churn too. The exposition stays under MaxSeries, passes
// promtool, and no failed dial left a series naming its target.
func TestSweepBounded(t *testing.T) {
	m := metrics.New()
	exercise(m)
	failed := map[string]bool{}
	for i := range 5000 {
		target := fmt.Sprintf("10.%d.%d.%d:%d", 100+i/65536, i/256%256, i%256, 1024+i)
		dir := metrics.Direction([]metrics.Direction{metrics.Inbound, metrics.Outbound}[i%2])
		c := m.Conn(dir, target)
		if i%3 == 0 {
			c.Unreached(metrics.ConnectFailed)
			c.Close(0, 0)
			failed[target] = true
			continue
		}
		dst := metrics.Dst{Namespace: fmt.Sprintf("ns%d", i%300), Workload: fmt.Sprintf("deployment/w%d", i), Service: fmt.Sprintf("s%d", i)}
		c.Open(metrics.ConnKey{Dst: dst, ClientID: fmt.Sprintf("spiffe://cluster.local/ns/n/sa/%d", i)})
		r := m.Route(metrics.RouteKey{Direction: dir, Authority: fmt.Sprintf("h%d.example:%d", i, i), Target: target, Dst: dst,
			ClientID: fmt.Sprintf("spiffe://cluster.local/ns/n/sa/%d", i), ServerID: fmt.Sprintf("spiffe://cluster.local/ns/m/sa/%d", i),
			Route: metrics.RouteRef{Kind: "HTTPRoute", Namespace: fmt.Sprintf("ns%d", i%300), Name: fmt.Sprintf("route-%d", i), Rule: strconv.Itoa(i % 7)}})
		r.Request()
		for code := 100; code < 700; code += 100 { // every status class, both ways
			r.Response(code, code%200 == 0, time.Duration(i)*time.Millisecond)
		}
		r.Request()
		c.Close(10, 20)
		m.HTTPAuthz(metrics.AuthzKey{Server: fmt.Sprintf("srv%d", i), Authz: fmt.Sprintf("a%d", i), ClientID: strconv.Itoa(i), Decision: metrics.Deny}).Inc()
		m.TCPAuthz(metrics.AuthzKey{Server: fmt.Sprintf("srv%d", i), Authz: fmt.Sprintf("a%d", i), ClientID: strconv.Itoa(i), Decision: metrics.Allow}).Inc()
		m.Detected(dir, fmt.Sprintf("p%d", i), "r")
	}
	body := scrape(t, m)
	fams := parse(t, body)
	if n := ownSeries(fams); n > metrics.MaxSeries {
		t.Errorf("%d series, over the bound of %d (docs/metrics.md)", n, metrics.MaxSeries)
	} else {
		t.Logf("%d series (bound %d), %d bytes", n, metrics.MaxSeries, len(body))
	}
	if routes := values(fams["mesh_proxy_http_requests_total"], "route_name"); len(routes) > metrics.MaxLabelValues+2 {
		t.Errorf("%d route_name values, want at most %d, other and none", len(routes), metrics.MaxLabelValues)
	}
	for _, name := range []string{"mesh_proxy_tcp_open_total", "mesh_proxy_http_requests_total"} {
		targets := values(fams[name], "target_addr")
		if len(targets) > metrics.MaxLabelValues+1 {
			t.Errorf("%s: %d target_addr values, want at most %d and other", name, len(targets), metrics.MaxLabelValues)
		}
		for v := range targets {
			if failed[v] {
				t.Errorf("%s has a series for %s, whose dial failed", name, v)
			}
		}
	}
	if got, want := fams.Sum("mesh_proxy_tcp_unreached_total", "reason", "connect"), 1667.0; got != want {
		t.Errorf("unreached = %v, want %v", got, want)
	}
	if got, want := fams.Sum("mesh_proxy_tcp_open_total"), 2.0+3333; got != want {
		t.Errorf("opened = %v, want %v: folding loses no count", got, want)
	}
	if got := fams.Sum("mesh_proxy_tcp_open_connections"); got != 1 {
		t.Errorf("open connections = %v, want exercise's 1", got)
	}
	promtool(t, body)
}

// promtool lints an exposition with Prometheus' own checker, which CI
// installs; a missing promtool fails (see TestPromtool).
func promtool(t *testing.T, body []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (make deps)")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestIdleExpiry: label sets unused for the idle timeout disappear at the
// next scrape and free their place under the caps; those with a request
// in flight or a connection open stay, and count on.
func TestIdleExpiry(t *testing.T) {
	m, clock := newClocked(t, metrics.Config{IdleTimeout: time.Minute})
	route := func(target string) *metrics.Route {
		return m.Route(metrics.RouteKey{Direction: metrics.Outbound, Authority: "web:80", Target: target})
	}
	// TCP and HTTP share the target_addr cap.
	open := m.Conn(metrics.Outbound, "10.0.1.1:5432")
	open.Open(metrics.ConnKey{})
	for i := range metrics.MaxLabelValues + 5 {
		r := route(fmt.Sprintf("10.0.0.%d:80", i))
		r.Request()
		r.Response(200, true, time.Millisecond)
	}
	long := route("10.0.1.2:80")
	long.Request()
	fams := parse(t, scrape(t, m))
	if got := fams.Sum("mesh_proxy_http_requests_total", "target_addr", "other"); got != 7 {
		t.Fatalf("other = %v before expiry, want 7 (6 past the cap, and one in flight)", got)
	}

	clock.Advance(time.Minute + time.Second)
	fams = parse(t, scrape(t, m))
	if got := fams.Sum("mesh_proxy_http_requests_total", "target_addr", "10.0.0.1:80"); got != 0 {
		t.Errorf("an idle route still counted %v", got)
	}
	if got := fams.Sum("mesh_proxy_http_requests_total", "target_addr", "other"); got != 7 {
		t.Errorf("other = %v, want 7: a request in flight keeps its label set", got)
	}
	if got := fams.Sum("mesh_proxy_tcp_open_connections", "target_addr", "10.0.1.1:5432"); got != 1 {
		t.Errorf("the open connection's gauge = %v, want 1", got)
	}
	// The freed places go to new targets.
	route("10.0.2.1:80").Request()
	long.Response(200, true, time.Hour)
	open.Close(1, 2)
	fams = parse(t, scrape(t, m))
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"mesh_proxy_http_requests_total", []string{"target_addr", "10.0.2.1:80"}, 1},
		{"mesh_proxy_http_responses_total", []string{"target_addr", "other"}, 7},
		{"mesh_proxy_tcp_open_connections", []string{"target_addr", "10.0.1.1:5432"}, 0},
		{"mesh_proxy_tcp_close_total", []string{"target_addr", "10.0.1.1:5432"}, 1},
	} {
		if got := fams.Sum(tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	clock.Advance(2 * time.Minute)
	route("10.0.2.1:80") // the lookup of a request keeps it alive
	fams = parse(t, scrape(t, m))
	if n := len(fams["mesh_proxy_http_requests_total"].GetMetric()); n != 1 {
		t.Errorf("%d request series, want the route just used", n)
	}
	if f := fams["mesh_proxy_tcp_open_total"]; len(f.GetMetric()) != 0 {
		t.Errorf("the closed connection's series did not expire: %v", f)
	}
}

// TestLabelSetsBounded: labels each under their cap can still combine into
// many label sets; past maxLabelSets they are counted, by direction, in
// one set whose other labels are all "other".
func TestLabelSetsBounded(t *testing.T) {
	m := metrics.New()
	for i := range 50 {
		for j := range 20 {
			c := m.Conn(metrics.Inbound, fmt.Sprintf("10.0.0.%d:80", i))
			c.Open(metrics.ConnKey{ClientID: fmt.Sprintf("spiffe://c/%d", j)})
			c.Close(1, 1)
		}
	}
	fams := parse(t, scrape(t, m))
	if n := len(fams["mesh_proxy_tcp_close_total"].GetMetric()); n != metrics.MaxLabelSets+1 {
		t.Errorf("%d label sets, want %d and the overflow", n, metrics.MaxLabelSets)
	}
	if got := fams.Sum("mesh_proxy_tcp_close_total", "target_addr", "other", "client_id", "other", "direction", "inbound"); got != 1000-metrics.MaxLabelSets {
		t.Errorf("overflow = %v, want %d", got, 1000-metrics.MaxLabelSets)
	}
}

// TestUnreached: a connection that never reached an application counts
// once, by reason, and has no TCP series.
func TestUnreached(t *testing.T) {
	m := metrics.New()
	c := m.Conn(metrics.Inbound, "10.0.0.5:80")
	c.Unreached(metrics.PolicyDenied)
	c.Open(metrics.ConnKey{})
	c.Close(5, 5)
	c.Unreached(metrics.PolicyDenied)
	fams := parse(t, scrape(t, m))
	if got := fams.Sum("mesh_proxy_tcp_unreached_total", "direction", "inbound", "reason", "denied"); got != 1 {
		t.Errorf("unreached = %v, want 1", got)
	}
	if _, ok := fams["mesh_proxy_tcp_open_total"]; ok {
		t.Errorf("an unreached connection has TCP series")
	}
}

// TestDocumentedBound: docs/metrics.md states MaxSeries.
func TestDocumentedBound(t *testing.T) {
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	n := strconv.Itoa(metrics.MaxSeries)
	want := "**" + n[:len(n)-3] + "," + n[len(n)-3:] + "**"
	if !bytes.Contains(doc, []byte(want)) {
		t.Errorf("docs/metrics.md does not state the bound %s", want)
	}
}

// TestConcurrentExpiry races requests and connections against scrapes
// that expire them; run it with -race.
func TestConcurrentExpiry(t *testing.T) {
	m, clock := newClocked(t, metrics.Config{IdleTimeout: time.Millisecond})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				target := fmt.Sprintf("10.0.%d.%d:80", g, i%150)
				r := m.Route(metrics.RouteKey{Direction: metrics.Inbound, Target: target})
				r.Request()
				r.Response(200+100*(i%4), i%2 == 0, time.Millisecond)
				c := m.Conn(metrics.Outbound, target)
				c.Open(metrics.ConnKey{})
				c.Close(1, 1)
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			clock.Advance(time.Second)
			scrape(t, m)
		}
	})
	wg.Wait()
	fams := parse(t, scrape(t, m))
	if got := fams.Sum("mesh_proxy_tcp_open_connections"); got != 0 {
		t.Errorf("open connections = %v, want 0", got)
	}
	for _, s := range fams["mesh_proxy_tcp_open_connections"].GetMetric() {
		if v := s.GetGauge().GetValue(); v != 0 {
			t.Errorf("gauge %v = %v", s.GetLabel(), v)
		}
	}
	// Idle now, every label set goes: none was left behind in a vector.
	clock.Advance(time.Second)
	fams = parse(t, scrape(t, m))
	for name, f := range fams {
		if strings.HasPrefix(name, "mesh_proxy_http_") || strings.HasPrefix(name, "mesh_proxy_tcp_") && name != "mesh_proxy_tcp_unreached_total" {
			if n := len(f.GetMetric()); n > 0 {
				t.Errorf("%s: %d series left once idle", name, n)
			}
		}
	}
}

// TestBoundReached fills every family to its cap, and more: the
// exposition then has exactly MaxSeries series, so the bound that
// docs/metrics.md states is reached but not passed.
func TestBoundReached(t *testing.T) {
	m := metrics.New()
	m.CountTapDrops(func() uint64 { return 0 })
	m.InboundPolicy().Updated()
	dirs := []metrics.Direction{metrics.Inbound, metrics.Outbound}
	// 20 targets × 20 identities × 2 directions: 800 label sets of each
	// kind asked for, under the 100-value caps.
	for i := range 800 {
		dir := dirs[i%2]
		target := fmt.Sprintf("10.0.0.%d:80", i/2%20)
		id := fmt.Sprintf("spiffe://cluster.local/ns/n/sa/%d", i/40)
		r := m.Route(metrics.RouteKey{Direction: dir, Authority: "web", Target: target, ClientID: id,
			Route: metrics.RouteRef{Kind: "HTTPRoute", Namespace: "shop", Name: "web", Rule: strconv.Itoa(i % 3)}})
		for _, code := range []int{42, 101, 200, 302, 404, 503} {
			for _, ok := range []bool{true, false} {
				r.Request()
				r.Response(code, ok, time.Millisecond)
			}
		}
		c := m.Conn(dir, target)
		c.Open(metrics.ConnKey{ClientID: id})
		c.Close(1, 1)
	}
	for _, dir := range dirs {
		for _, why := range []metrics.UnreachedReason{metrics.NoPolicy, metrics.PolicyDenied, metrics.MeshTLSFailed, metrics.NoEndpoint, metrics.ConnectFailed, metrics.NoRequest, metrics.RouteAnswered} {
			m.Conn(dir, "10.9.9.9:1").Unreached(why)
		}
		for i := range 40 {
			m.Detected(dir, "p", strconv.Itoa(i))
		}
		for _, why := range []metrics.RetryReason{metrics.NotDelivered, metrics.RetryHTTP, metrics.RetryGRPC, metrics.RetryTimeout} {
			m.Retried(dir, why)
		}
		for _, why := range []metrics.RetrySkip{metrics.SkipBudget, metrics.SkipBody, metrics.SkipLimit} {
			m.RetrySkipped(dir, why)
		}
		for _, t := range []metrics.FaultType{metrics.FaultAbort, metrics.FaultDelay} {
			m.Fault(dir, t)
		}
	}
	for i := range 1000 {
		for _, d := range []metrics.AuthzDecision{metrics.Allow, metrics.Deny, metrics.Audit} {
			k := metrics.AuthzKey{Server: strconv.Itoa(i % 50), Authz: strconv.Itoa(i / 50), ClientID: strconv.Itoa(i), Decision: d}
			m.HTTPAuthz(k).Inc()
			m.TCPAuthz(k).Inc()
		}
	}
	body := scrape(t, m)
	if n := ownSeries(parse(t, body)); n != metrics.MaxSeries {
		t.Errorf("%d series with every cap reached, want MaxSeries = %d", n, metrics.MaxSeries)
	}
	promtool(t, body)
}
