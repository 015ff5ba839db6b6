package h1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/route"
)

// routedProxy is an outbound h1 Proxy whose target's route table is table
// and whose backends are the addresses in backends, by authority; the
// target itself answers "target".
func routedProxy(t *testing.T, table *destinationv1.RouteTable, backends map[string]string) *testProxy {
	t.Helper()
	compiled, err := route.Compile(table)
	if err != nil {
		t.Fatal(err)
	}
	target := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "target")
	}))
	return startTestProxy(t, target, func(c *Config) {
		c.Routes = func(netip.AddrPort) *route.Table { return compiled }
		c.Pick = func(_ context.Context, target netip.AddrPort, backend string) (httpproxy.Endpoint, error) {
			if backend == "" {
				return httpproxy.Endpoint{Addr: target}, nil
			}
			addr, ok := backends[backend]
			if !ok {
				return httpproxy.Endpoint{}, httpproxy.ErrNoEndpoints
			}
			return httpproxy.Endpoint{Addr: netip.MustParseAddrPort(addr)}, nil
		}
	})
}

// versionBackend answers with its name and the request's head as it came.
func versionBackend(t *testing.T, name string, delay time.Duration) string {
	return startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "%s %s %s host=%s", name, r.Method, r.URL.RequestURI(), r.Host)
		for _, k := range []string{"X-Set", "X-Add", "X-Gone", "X-Backend"} {
			if v, ok := r.Header[k]; ok {
				fmt.Fprintf(w, " %s=%s", strings.ToLower(k), strings.Join(v, ","))
			}
		}
		w.Header().Set("X-App", "app")
	}))
}

func svcRoute(rules ...*destinationv1.Rule) *destinationv1.RouteTable {
	return &destinationv1.RouteTable{Version: 1,
		Parent:    &destinationv1.Resource{Kind: "Service", Namespace: "shop", Name: "web", Port: 8080},
		HttpRules: rules}
}

func rule(name string, m *destinationv1.Match, backends ...string) *destinationv1.Rule {
	r := &destinationv1.Rule{Route: &destinationv1.Resource{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: "shop", Name: "web"},
		RuleName: name}
	if m != nil {
		r.Matches = []*destinationv1.Match{m}
	}
	for _, b := range backends {
		r.Backends = append(r.Backends, &destinationv1.Backend{Authority: b, Weight: 1})
	}
	return r
}

func prefix(p string) *destinationv1.Match {
	return &destinationv1.Match{Path: &destinationv1.Match_Prefix{Prefix: p}}
}

// get sends one request through p and returns the response and its body.
func get(t *testing.T, p *testProxy, path string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.addr+path, nil)
	req.Host = "web.shop:8080"
	for k, v := range header {
		req.Header[k] = v
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout: 5 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestRouteMatchesHeaderAndPath(t *testing.T) {
	canary := &destinationv1.Match{Headers: []*destinationv1.HeaderMatch{{Name: "x-canary", Value: &destinationv1.HeaderMatch_Exact{Exact: "1"}}}}
	p := routedProxy(t, svcRoute(rule("0", canary, "v2"), rule("1", prefix("/"), "v1")),
		map[string]string{"v1": versionBackend(t, "v1", 0), "v2": versionBackend(t, "v2", 0)})
	for range 3 {
		if _, body := get(t, p, "/a", http.Header{"X-Canary": {"1"}}); !strings.HasPrefix(body, "v2 ") {
			t.Errorf("with x-canary: 1: %q, want v2", body)
		}
		if _, body := get(t, p, "/a", nil); !strings.HasPrefix(body, "v1 ") {
			t.Errorf("without x-canary: %q, want v1", body)
		}
	}
}

func TestRouteWeightedSplit(t *testing.T) {
	r := rule("0", prefix("/"), "v1", "v2")
	r.Backends[0].Weight, r.Backends[1].Weight = 90, 10
	p := routedProxy(t, svcRoute(r), map[string]string{"v1": versionBackend(t, "v1", 0), "v2": versionBackend(t, "v2", 0)})
	const n = 1000
	v2 := 0
	for range n {
		if _, body := get(t, p, "/", nil); strings.HasPrefix(body, "v2 ") {
			v2++
		}
	}
	// 10 % of 1,000 has a standard deviation under 1 point: ±5 is 5 σ.
	if share := float64(v2) / n; share < 0.05 || share > 0.15 {
		t.Errorf("v2 got %.1f %% of %d requests, want 10 ± 5", 100*share, n)
	}
}

func TestRouteFilters(t *testing.T) {
	mods := rule("0", prefix("/old"), "v1")
	mods.Filters = []*destinationv1.Filter{
		{Kind: &destinationv1.Filter_RequestHeaders{RequestHeaders: &destinationv1.HeaderModifier{
			Set: []*destinationv1.Header{{Name: "x-set", Value: "set"}}, Add: []*destinationv1.Header{{Name: "x-add", Value: "added"}},
			Remove: []string{"x-gone"}}}},
		{Kind: &destinationv1.Filter_ResponseHeaders{ResponseHeaders: &destinationv1.HeaderModifier{
			Set: []*destinationv1.Header{{Name: "x-app", Value: "replaced"}}, Add: []*destinationv1.Header{{Name: "x-route", Value: "web"}}}}},
		{Kind: &destinationv1.Filter_Rewrite{Rewrite: &destinationv1.Rewrite{Hostname: "rewritten.example",
			Path: &destinationv1.PathModifier{Replace: &destinationv1.PathModifier_Prefix{Prefix: "/new"}}}}},
	}
	mods.Backends[0].Filters = []*destinationv1.Filter{{Kind: &destinationv1.Filter_RequestHeaders{RequestHeaders: &destinationv1.HeaderModifier{
		Set: []*destinationv1.Header{{Name: "x-backend", Value: "v1"}}}}}}
	redirect := rule("1", prefix("/moved"))
	redirect.Filters = []*destinationv1.Filter{{Kind: &destinationv1.Filter_Redirect{Redirect: &destinationv1.Redirect{
		Hostname: "elsewhere.example", StatusCode: 301}}}}
	fail := rule("2", prefix("/broken"))
	fail.Filters = []*destinationv1.Filter{{Kind: &destinationv1.Filter_Fail{Fail: &destinationv1.Fail{Status: 500, Message: "backend not found"}}}}
	empty := rule("3", prefix("/nothing"))
	p := routedProxy(t, svcRoute(mods, redirect, fail, empty), map[string]string{"v1": versionBackend(t, "v1", 0)})

	res, body := get(t, p, "/old/x?q=1", http.Header{"X-Gone": {"bye"}, "X-Set": {"before"}})
	if want := "v1 GET /new/x?q=1 host=rewritten.example x-set=set x-add=added x-backend=v1"; body != want {
		t.Errorf("the backend saw %q, want %q", body, want)
	}
	if got := res.Header.Values("X-App"); len(got) != 1 || got[0] != "replaced" || res.Header.Get("X-Route") != "web" {
		t.Errorf("response headers %v", res.Header)
	}

	res, _ = get(t, p, "/moved/here?x=y", nil)
	if loc := res.Header.Get("Location"); res.StatusCode != 301 || loc != "http://elsewhere.example:8080/moved/here?x=y" {
		t.Errorf("redirect: %d Location %q", res.StatusCode, loc)
	}
	res, body = get(t, p, "/broken", nil)
	if res.StatusCode != 500 || !strings.Contains(body, "backend not found") {
		t.Errorf("failing rule: %d %q", res.StatusCode, body)
	}
	res, _ = get(t, p, "/nothing", nil)
	if res.StatusCode != 500 {
		t.Errorf("rule without backends: %d, want 500", res.StatusCode)
	}
	res, body = get(t, p, "/unmatched", nil)
	if res.StatusCode != 404 || !strings.Contains(body, "no route") {
		t.Errorf("no rule matching: %d %q, want 404", res.StatusCode, body)
	}
}

func TestRouteRequestTimeout(t *testing.T) {
	slow := rule("0", prefix("/"), "slow")
	slow.Timeouts = &destinationv1.Timeouts{Request: durationpb.New(300 * time.Millisecond)}
	p := routedProxy(t, svcRoute(slow), map[string]string{"slow": versionBackend(t, "slow", 2*time.Second)})
	start := time.Now()
	res, _ := get(t, p, "/", nil)
	took := time.Since(start)
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504", res.StatusCode)
	}
	if took < 300*time.Millisecond || took >= 2*time.Second {
		t.Errorf("answered after %s, want from 300ms and well before the backend's 2s", took)
	}
}

func TestEmptyRouteTableIsNoRoute(t *testing.T) {
	p := routedProxy(t, svcRoute(), nil)
	if res, body := get(t, p, "/", nil); res.StatusCode != 200 || body != "target" {
		t.Errorf("%d %q, want the target's answer", res.StatusCode, body)
	}
}

// TestRouteLabels: a routed request is counted under its route and rule
// (docs/metrics.md, route_*), a route's own answer too.
func TestRouteLabels(t *testing.T) {
	p := routedProxy(t, svcRoute(rule("main", prefix("/app"), "v1")), map[string]string{"v1": versionBackend(t, "v1", 0)})
	get(t, p, "/app", nil)
	get(t, p, "/elsewhere", nil) // no rule: 404, no route labels
	mfs, err := p.m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "mesh_proxy_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			seen[labels["route_kind"]+" "+labels["route_namespace"]+"/"+labels["route_name"]+" "+labels["route_rule"]] = true
		}
	}
	for _, want := range []string{"HTTPRoute shop/web main", " / "} {
		if !seen[want] {
			t.Errorf("no request series with route %q; have %v", want, seen)
		}
	}
}

// TestHeadRequestHeader checks the header values a route matches on: a
// field's value, repeated fields joined with ", " in order whatever the
// case of their names, nothing for a field a filter dropped.
func TestHeadRequestHeader(t *testing.T) {
	var r request
	in := "GET /a?b=1 HTTP/1.1\r\nX-A: 1\r\nHost: h\r\nx-a: 2\r\nX-A: 3\r\nOne: v\r\nGone: x\r\nEmpty:\r\n\r\n"
	if err := readHead(bufio.NewReader(strings.NewReader(in)), &r.head, 1<<12); err != nil {
		t.Fatal(err)
	}
	r.dropFields("gone")
	q := headRequest{&r}
	for _, tc := range []struct {
		name, want string
		ok         bool
	}{{"x-a", "1, 2, 3", true}, {"one", "v", true}, {"empty", "", true}, {"gone", "", false}, {"absent", "", false}} {
		if v, ok := q.Header(tc.name); v != tc.want || ok != tc.ok {
			t.Errorf("Header(%q) = %q, %v; want %q, %v", tc.name, v, ok, tc.want, tc.ok)
		}
	}
}
