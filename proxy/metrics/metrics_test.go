package metrics_test

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// exercise touches every series the proxy exports, with labels like a
// meshed pod's.
func exercise(m *metrics.Metrics) {
	m.Detected(metrics.Inbound, "http1", "request-line")
	in := m.Route(metrics.RouteKey{Direction: metrics.Inbound, Authority: "web.shop:80", Target: "10.0.0.5:8080",
		ClientID: "spiffe://cluster.local/ns/shop/sa/loadgen"})
	in.Request()
	in.Response(200, true, 20*time.Millisecond)
	in.Request()
	in.Response(500, false, 21*time.Millisecond)
	out := m.Route(metrics.RouteKey{Direction: metrics.Outbound, Authority: "catalog.shop:9090", Target: "10.96.0.7:9090",
		Dst:      metrics.Dst{Namespace: "shop", Workload: "deployment/catalog", Service: "catalog"},
		ServerID: "spiffe://cluster.local/ns/shop/sa/catalog",
		Route:    metrics.RouteRef{Kind: "HTTPRoute", Namespace: "shop", Name: "catalog-split", Rule: "canary"}})
	out.Request()
	out.Response(200, true, 3*time.Millisecond)
	c := m.Conn(metrics.Outbound, "10.96.0.9:7000")
	c.Open(metrics.ConnKey{Dst: metrics.Dst{Namespace: "shop", Workload: "deployment/payments"}, ServerID: "spiffe://cluster.local/ns/shop/sa/payments"})
	c.Close(10, 20)
	m.Conn(metrics.Inbound, "10.0.0.5:8080").Open(metrics.ConnKey{})
	m.HTTPAuthz(metrics.AuthzKey{Server: "web-http", Authz: "web-clients", ClientID: "spiffe://cluster.local/ns/shop/sa/loadgen", Decision: metrics.Allow}).Inc()
	m.HTTPAuthz(metrics.AuthzKey{Server: "web-http", Authz: "probe", Decision: metrics.Allow}).Inc()
	m.HTTPAuthz(metrics.AuthzKey{Server: "web-http", Decision: metrics.Deny}).Inc()
	m.TCPAuthz(metrics.AuthzKey{Server: "default:audit", ClientID: "spiffe://cluster.local/ns/shop/sa/loadgen", Decision: metrics.Audit}).Inc()
	m.InboundPolicy().Updated()
}

func scrape(t *testing.T, m *metrics.Metrics) []byte {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.Bytes()
}

// TestPromtool checks the exposition with Prometheus' own linter, which
// CI installs (Debian's prometheus package): a missing promtool fails.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (make deps)")
	}
	m := metrics.New()
	exercise(m)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape(t, m))
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestNotCompressed: a scraper that accepts gzip, as Prometheus does, gets
// the page as plain text; compressing it would cost the proxy a pooled
// compressor of about 1 MB (Handler).
func TestNotCompressed(t *testing.T) {
	m := metrics.New()
	exercise(m)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip, deflate")
	m.Handler().ServeHTTP(rec, req)
	if enc := rec.Header().Get("Content-Encoding"); enc != "" {
		t.Errorf("Content-Encoding %q, want none", enc)
	}
	if body := rec.Body.String(); !strings.Contains(body, "# TYPE ") {
		t.Errorf("body is not the text format: %.100q", body)
	}
}

func TestSeries(t *testing.T) {
	m := metrics.New()
	exercise(m)
	fams, err := metricstest.Parse(bytes.NewReader(scrape(t, m)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"mesh_proxy_http_requests_total", []string{"direction", "inbound", "client_id", "spiffe://cluster.local/ns/shop/sa/loadgen", "dst_workload", ""}, 2},
		{"mesh_proxy_http_responses_total", []string{"direction", "inbound", "classification", "failure", "status_class", "5xx"}, 1},
		{"mesh_proxy_http_response_latency_seconds", []string{"direction", "outbound", "dst_workload", "deployment/catalog", "dst_service", "catalog"}, 1},
		{"mesh_proxy_http_requests_total", []string{"direction", "outbound", "route_kind", "HTTPRoute", "route_namespace", "shop", "route_name", "catalog-split", "route_rule", "canary"}, 1},
		{"mesh_proxy_http_responses_total", []string{"route_name", "catalog-split", "route_rule", "canary", "status_class", "2xx"}, 1},
		{"mesh_proxy_http_requests_total", []string{"direction", "inbound", "route_kind", "", "route_namespace", "", "route_name", "", "route_rule", ""}, 2},
		{"mesh_proxy_tcp_open_total", []string{"dst_workload", "deployment/payments", "server_id", "spiffe://cluster.local/ns/shop/sa/payments"}, 1},
		{"mesh_proxy_tcp_close_total", []string{"dst_workload", "deployment/payments"}, 1},
		{"mesh_proxy_tcp_write_bytes_total", []string{"dst_workload", "deployment/payments"}, 20},
		{"mesh_proxy_tcp_open_connections", []string{"direction", "inbound"}, 1},
		{"mesh_proxy_tcp_open_connections", []string{"direction", "outbound"}, 0},
		{"mesh_proxy_inbound_http_authz_total", []string{"server", "web-http", "decision", "allow"}, 2},
		{"mesh_proxy_inbound_http_authz_total", []string{"authz", "", "client_id", "", "decision", "deny"}, 1},
		{"mesh_proxy_inbound_tcp_authz_total", []string{"server", "default:audit", "decision", "audit"}, 1},
		{"mesh_proxy_inbound_policy_ready", nil, 1},
		{"mesh_proxy_inbound_policy_updates_total", nil, 1},
	} {
		if got := fams.Sum(tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// 19 buckets, as docs/metrics.md says, and +Inf.
	h := fams["mesh_proxy_http_response_latency_seconds"].GetMetric()[0].GetHistogram()
	if n := len(h.GetBucket()); n != 20 {
		t.Errorf("latency histogram has %d buckets, want 19 and +Inf", n)
	}
}

// TestConnCountedOnce: a connection closed before its labels were known is
// opened and closed with the labels it had, and a second Close is ignored.
func TestConnCountedOnce(t *testing.T) {
	m := metrics.New()
	c := m.Conn(metrics.Inbound, "10.0.0.5:80")
	c.Close(1, 2)
	c.Close(1, 2)
	c.Open(metrics.ConnKey{ClientID: "spiffe://x/late"})
	fams, err := metricstest.Parse(bytes.NewReader(scrape(t, m)))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"mesh_proxy_tcp_open_total": 1, "mesh_proxy_tcp_close_total": 1,
		"mesh_proxy_tcp_open_connections": 0, "mesh_proxy_tcp_read_bytes_total": 1,
	} {
		if got := fams.Sum(name, "target_addr", "10.0.0.5:80", "client_id", ""); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// TestAuthorityBounded: a client choosing a new Host per request cannot
// grow the series without bound.
func TestAuthorityBounded(t *testing.T) {
	m := metrics.New()
	for i := range 500 {
		m.Route(metrics.RouteKey{Direction: metrics.Inbound, Authority: fmt.Sprintf("h%d.example", i), Target: "10.0.0.5:80"}).Request()
	}
	m.Route(metrics.RouteKey{Direction: metrics.Inbound, Authority: "h1.example", Target: "10.0.0.5:80"}).Request()
	m.Route(metrics.RouteKey{Direction: metrics.Inbound, Authority: strings.Repeat("a", 1000) + "\xff", Target: "10.0.0.5:80"}).Request()
	fams, err := metricstest.Parse(bytes.NewReader(scrape(t, m)))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(fams["mesh_proxy_http_requests_total"].GetMetric()); n != 101 {
		t.Errorf("%d request series, want 100 authorities and other", n)
	}
	if got := fams.Sum("mesh_proxy_http_requests_total", "authority", "other"); got != 401 {
		t.Errorf("other = %v, want 401", got)
	}
	if got := fams.Sum("mesh_proxy_http_requests_total", "authority", "h1.example"); got != 2 {
		t.Errorf("h1.example = %v, want 2 (a known authority keeps its label)", got)
	}
}

// TestClientIDBounded: the identities of a large cluster cannot grow the
// authorization series without bound; plain text is one value.
func TestClientIDBounded(t *testing.T) {
	m := metrics.New()
	for i := range 300 {
		m.HTTPAuthz(metrics.AuthzKey{Server: "s", ClientID: fmt.Sprintf("spiffe://cluster.local/ns/n/sa/%d", i), Decision: metrics.Deny}).Inc()
	}
	m.HTTPAuthz(metrics.AuthzKey{Server: "s", ClientID: "spiffe://cluster.local/ns/n/sa/1", Decision: metrics.Deny}).Inc()
	m.TCPAuthz(metrics.AuthzKey{Server: "s", Decision: metrics.Deny}).Inc()
	fams, err := metricstest.Parse(bytes.NewReader(scrape(t, m)))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(fams["mesh_proxy_inbound_http_authz_total"].GetMetric()); n != 101 {
		t.Errorf("%d series, want 100 identities and other", n)
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{name: "mesh_proxy_inbound_http_authz_total", labels: []string{"client_id", "other"}, want: 200},
		{name: "mesh_proxy_inbound_http_authz_total", labels: []string{"client_id", "spiffe://cluster.local/ns/n/sa/1"}, want: 2},
		{name: "mesh_proxy_inbound_tcp_authz_total", labels: []string{"client_id", ""}, want: 1},
	} {
		if got := fams.Sum(tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

// TestRouteLabels: the route rule a request matched labels its HTTP
// series, each rule its own label set; a Service's own rule and no route
// at all are told apart; and the route labels are capped like the others
// (docs/metrics.md, Bounds).
func TestRouteLabels(t *testing.T) {
	m := metrics.New()
	key := func(r metrics.RouteRef) metrics.RouteKey {
		return metrics.RouteKey{Direction: metrics.Outbound, Authority: "web.shop:80", Target: "10.96.0.5:80",
			Dst: metrics.Dst{Namespace: "shop", Workload: "deployment/web", Service: "web"}, Route: r}
	}
	count := func(r metrics.RouteRef, n int, code int) {
		rt := m.Route(key(r))
		for range n {
			rt.Request()
			rt.Response(code, code < 500, time.Millisecond)
		}
	}
	v1 := metrics.RouteRef{Kind: "HTTPRoute", Namespace: "shop", Name: "web-split", Rule: "0"}
	v2 := metrics.RouteRef{Kind: "HTTPRoute", Namespace: "shop", Name: "web-split", Rule: "canary"}
	count(v1, 9, 200)
	count(v2, 3, 503)
	count(metrics.RouteRef{Kind: "Service", Namespace: "shop", Name: "web"}, 4, 200)
	count(metrics.RouteRef{}, 2, 200)
	// More route names than the cap: 100 are kept, later ones are other.
	for i := range 150 {
		count(metrics.RouteRef{Kind: "GRPCRoute", Namespace: "shop", Name: fmt.Sprintf("r%d", i), Rule: "0"}, 1, 200)
	}
	fams := parse(t, scrape(t, m))
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"mesh_proxy_http_requests_total", []string{"route_kind", "HTTPRoute", "route_namespace", "shop", "route_name", "web-split", "route_rule", "0"}, 9},
		{"mesh_proxy_http_responses_total", []string{"route_name", "web-split", "route_rule", "canary", "classification", "failure"}, 3},
		{"mesh_proxy_http_response_latency_seconds", []string{"route_name", "web-split"}, 12},
		{"mesh_proxy_http_requests_total", []string{"route_kind", "Service", "route_namespace", "shop", "route_name", "web", "route_rule", ""}, 4},
		{"mesh_proxy_http_requests_total", []string{"route_kind", "", "route_namespace", "", "route_name", "", "route_rule", ""}, 2},
		{"mesh_proxy_http_requests_total", []string{"route_kind", "GRPCRoute", "route_name", "other", "route_rule", "0"}, 52},
	} {
		if got := fams.Sum(tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if names := values(fams["mesh_proxy_http_requests_total"], "route_name"); len(names) != metrics.MaxLabelValues+2 {
		t.Errorf("%d route_name values, want the cap (%d: web-split, web, 98 GRPCRoutes), other, and none", len(names), metrics.MaxLabelValues)
	}
}

// TestRouteLabelsOverflow: past maxLabelSets, a request is counted in its
// direction's overflow set, whose route labels are other like the rest.
func TestRouteLabelsOverflow(t *testing.T) {
	m := metrics.New()
	// 26 routes of 10 rules: 260 label sets, each label under its cap.
	for i := range 26 {
		for j := range 10 {
			r := m.Route(metrics.RouteKey{Direction: metrics.Outbound, Authority: "web.shop:80", Target: "10.96.0.5:80",
				Route: metrics.RouteRef{Kind: "HTTPRoute", Namespace: "shop", Name: fmt.Sprintf("route-%d", i), Rule: strconv.Itoa(j)}})
			r.Request()
			r.Response(200, true, time.Millisecond)
		}
	}
	fams := parse(t, scrape(t, m))
	if n := len(fams["mesh_proxy_http_requests_total"].GetMetric()); n != metrics.MaxLabelSets+1 {
		t.Errorf("%d label sets, want %d and the overflow", n, metrics.MaxLabelSets)
	}
	overflow := []string{"direction", "outbound", "authority", "other", "route_kind", "other", "route_namespace", "other", "route_name", "other", "route_rule", "other"}
	if got := fams.Sum("mesh_proxy_http_requests_total", overflow...); got != 260-metrics.MaxLabelSets {
		t.Errorf("overflow = %v, want %d", got, 260-metrics.MaxLabelSets)
	}
}
