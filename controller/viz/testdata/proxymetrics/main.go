// Command proxymetrics writes the goldens of controller/viz's parser
// tests: the /metrics a real proxy metrics registry (proxy/metrics) serves
// after some traffic. The controller never imports the proxy (DESIGN.md),
// so the tests read the proxy's output from these files; this program,
// under testdata and so outside the build, is the one place the two meet.
//
// Run it from the repository root after changing proxy/metrics:
//
//	go run ./controller/viz/testdata/proxymetrics
//
// It writes:
//
//   - proxy-metrics.txt: a busy pod's proxy, serving web and calling a
//     backend through the rules of an HTTPRoute, a database and an
//     address outside the mesh; among its clients one sending
//     authorities with quotes, backslashes and a newline, which the
//     exposition escapes.
//   - proxy-metrics-bound.txt.gz: a proxy whose every cap is reached
//     (docs/metrics.md, Bounds), with names of the lengths a cluster's
//     usually have: the largest exposition a proxy serves in practice,
//     which the scrape's body cap must fit.
package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mesh-dev/mesh/proxy/metrics"
)

const dir = "controller/viz/testdata"

func main() {
	if err := write(filepath.Join(dir, "proxy-metrics.txt"), busy(), false); err != nil {
		log.Fatal(err)
	}
	if err := write(filepath.Join(dir, "proxy-metrics-bound.txt.gz"), bound(), true); err != nil {
		log.Fatal(err)
	}
}

// scrape returns m's /metrics as viz asks for it.
func scrape(m *metrics.Metrics) []byte {
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, req)
	return rec.Body.Bytes()
}

func write(path string, body []byte, compress bool) error {
	if compress {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zw.Write(body)
		if err := zw.Close(); err != nil {
			return err
		}
		body = buf.Bytes()
	}
	fmt.Printf("%s: %d bytes\n", path, len(body))
	return os.WriteFile(path, body, 0o644)
}

const (
	webID     = "spiffe://cluster.local/ns/shop/sa/web"
	backendID = "spiffe://cluster.local/ns/shop/sa/backend"
	gatewayID = "spiffe://cluster.local/ns/ingress/sa/gateway"
	jobID     = "spiffe://cluster.local/ns/batch/sa/report"
)

// request counts n requests under k answered with code after took.
func request(m *metrics.Metrics, k metrics.RouteKey, n, code int, ok bool, took time.Duration) {
	r := m.Route(k)
	for range n {
		r.Request()
		r.Response(code, ok, took)
	}
}

// connect counts n connections under k to target, closed ones moving
// read and written bytes each, and open more left open.
func connect(m *metrics.Metrics, dir metrics.Direction, target string, k metrics.ConnKey, closed, open int, read, written int64) {
	for range closed {
		c := m.Conn(dir, target)
		c.Open(k)
		c.Close(read, written)
	}
	for range open {
		m.Conn(dir, target).Open(k)
	}
}

// busy is web's proxy after a while of ordinary traffic.
func busy() []byte {
	m := metrics.New()
	m.CountTapDrops(func() uint64 { return 3 })
	m.InboundPolicy().Updated()
	in := func(authority, client string) metrics.RouteKey {
		return metrics.RouteKey{Direction: metrics.Inbound, Authority: authority, Target: "10.244.1.7:8080", ClientID: client}
	}
	const web = "web.shop.svc.cluster.local:8080"
	request(m, in(web, gatewayID), 120, 200, true, 12*time.Millisecond)
	request(m, in(web, gatewayID), 7, 404, true, 3*time.Millisecond)
	request(m, in(web, gatewayID), 2, 503, false, 2*time.Second)
	request(m, in(web, jobID), 40, 200, true, 45*time.Millisecond)
	request(m, in(web, jobID), 1, 200, false, 70*time.Millisecond) // a gRPC error
	request(m, in("10.244.1.7:8080", ""), 30, 200, true, 400*time.Microsecond)
	request(m, in(`we"b\shop`, ""), 2, 400, true, time.Millisecond)
	request(m, in("web\nshop", ""), 1, 400, true, time.Millisecond)
	back := metrics.RouteKey{Direction: metrics.Outbound, Authority: "backend.shop.svc.cluster.local:9090", Target: "10.96.0.20:9090",
		Dst:      metrics.Dst{Namespace: "shop", Workload: "deployment/backend", Service: "backend"},
		ServerID: backendID, Route: metrics.RouteRef{Kind: "HTTPRoute", Namespace: "shop", Name: "backend-split", Rule: "0"}}
	request(m, back, 150, 200, true, 8*time.Millisecond)
	request(m, back, 5, 500, false, 30*time.Millisecond)
	request(m, back, 1, 504, false, 10*time.Second)
	canary := back
	canary.Dst, canary.Route.Rule = metrics.Dst{Namespace: "shop", Workload: "deployment/backend-v2", Service: "backend-v2"}, "canary"
	request(m, canary, 17, 200, true, 9*time.Millisecond)
	ext := metrics.RouteKey{Direction: metrics.Outbound, Authority: "api.example.com", Target: "93.184.216.34:80"}
	request(m, ext, 9, 302, true, 90*time.Millisecond)

	connect(m, metrics.Inbound, "10.244.1.7:8080", metrics.ConnKey{ClientID: gatewayID}, 30, 4, 18_000, 420_000)
	connect(m, metrics.Inbound, "10.244.1.7:8080", metrics.ConnKey{ClientID: jobID}, 8, 0, 3_000, 90_000)
	connect(m, metrics.Outbound, "10.96.0.20:9090", metrics.ConnKey{Dst: metrics.Dst{Namespace: "shop", Workload: "deployment/backend"}, ServerID: backendID}, 12, 2, 60_000, 700_000)
	connect(m, metrics.Outbound, "10.96.0.30:5432", metrics.ConnKey{Dst: metrics.Dst{Namespace: "shop", Workload: "statefulset/db"}, ServerID: "spiffe://cluster.local/ns/shop/sa/db"}, 3, 5, 900_000, 12_000_000)
	m.Conn(metrics.Inbound, "10.244.1.7:9999").Unreached(metrics.ConnectFailed)
	m.Conn(metrics.Inbound, "10.244.1.7:8080").Unreached(metrics.PolicyDenied)

	for _, d := range []struct {
		dir              metrics.Direction
		protocol, reason string
		n                int
	}{
		{metrics.Inbound, "http/1", "detected", 30},
		{metrics.Inbound, "h2", "detected", 12},
		{metrics.Outbound, "http/1", "detected", 14},
		{metrics.Outbound, "opaque", "opaque-port", 8},
	} {
		for range d.n {
			m.Detected(d.dir, d.protocol, d.reason)
		}
	}
	for _, a := range []struct {
		http bool
		k    metrics.AuthzKey
		n    int
	}{
		{true, metrics.AuthzKey{Server: "web-http", Authz: "web-from-gateway", ClientID: gatewayID, Decision: metrics.Allow}, 129},
		{true, metrics.AuthzKey{Server: "web-http", Authz: "web-from-batch", ClientID: jobID, Decision: metrics.Allow}, 41},
		{true, metrics.AuthzKey{Server: "web-http", Authz: "probe", Decision: metrics.Allow}, 30},
		{true, metrics.AuthzKey{Server: "web-http", ClientID: webID, Decision: metrics.Deny}, 6},
		{true, metrics.AuthzKey{Server: "web-http", Decision: metrics.Deny}, 3},
		{false, metrics.AuthzKey{Server: "default:all-unauthenticated", Authz: "default:all-unauthenticated", Decision: metrics.Allow}, 2},
		{false, metrics.AuthzKey{Server: "web-admin", ClientID: jobID, Decision: metrics.Deny}, 4},
		{false, metrics.AuthzKey{Server: "web-admin", ClientID: backendID, Decision: metrics.Audit}, 1},
	} {
		c := m.TCPAuthz(a.k)
		if a.http {
			c = m.HTTPAuthz(a.k)
		}
		c.Add(float64(a.n))
	}
	return scrape(m)
}

// bound is a proxy whose every cap is reached, with the names of a
// cluster: namespaces of about 10 characters, workloads and services of
// about 20, identities of about 50, authorities of about 35, routes of
// about 20 and rules of about 10.
func bound() []byte {
	m := metrics.New()
	m.CountTapDrops(func() uint64 { return 0 })
	m.InboundPolicy().Updated()
	dirs := []metrics.Direction{metrics.Inbound, metrics.Outbound}
	for i := range 1000 {
		id := fmt.Sprintf("spiffe://cluster.local/ns/shop-%d/sa/frontend-%d", i%20, i%7)
		target := fmt.Sprintf("10.244.%d.%d:8080", i%20, i/20%250)
		dst := metrics.Dst{Namespace: fmt.Sprintf("shop-%d", i%20), Workload: fmt.Sprintf("deployment/backend-%d", i%40), Service: fmt.Sprintf("backend-%d", i%40)}
		k := metrics.RouteKey{Direction: dirs[i%2], Authority: fmt.Sprintf("svc-%d.shop.svc.cluster.local:8080", i%100), Target: target,
			Dst: dst, ClientID: id, ServerID: strings.Replace(id, "frontend", "backend", 1),
			Route: metrics.RouteRef{Kind: "HTTPRoute", Namespace: dst.Namespace, Name: fmt.Sprintf("backend-%d-split", i%40), Rule: fmt.Sprintf("rule-%d", i%10)}}
		for _, code := range []int{42, 101, 200, 302, 404, 503} {
			request(m, k, 1, code, true, time.Millisecond)
			request(m, k, 1, code, false, time.Second)
		}
		connect(m, k.Direction, target, metrics.ConnKey{Dst: dst, ClientID: k.ClientID, ServerID: k.ServerID}, 1, 0, 1, 1)
	}
	for _, dir := range dirs {
		for _, why := range []metrics.UnreachedReason{metrics.NoPolicy, metrics.PolicyDenied, metrics.MeshTLSFailed, metrics.NoEndpoint, metrics.ConnectFailed} {
			m.Conn(dir, "10.9.9.9:1").Unreached(why)
		}
		for i := range 40 {
			m.Detected(dir, "http/1", fmt.Sprintf("reason-%d", i))
		}
	}
	for i := range 1000 {
		for _, d := range []metrics.AuthzDecision{metrics.Allow, metrics.Deny, metrics.Audit} {
			k := metrics.AuthzKey{Server: fmt.Sprintf("server-%d", i%50), Authz: fmt.Sprintf("authz-policy-%d", i/50),
				ClientID: fmt.Sprintf("spiffe://cluster.local/ns/namespace-%d/sa/service-account-%d", i%30, i), Decision: d}
			m.HTTPAuthz(k).Inc()
			m.TCPAuthz(k).Inc()
		}
	}
	return scrape(m)
}
