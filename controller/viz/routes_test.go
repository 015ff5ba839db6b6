package viz

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// The shop's catalog: a Service with an HTTPRoute sending some requests
// to catalog-v2 (rule "canary") and the rest to catalog-v1 (rule "0"),
// and a GRPCRoute of the clients' own namespace sending one method to
// catalog-v2; backend has only its own retry policy (route_kind
// Service). The route_* labels are the proxies' (docs/metrics.md).
var (
	toCatalogV1 = labels{
		Direction: outbound, Authority: "catalog.shop:80", TargetAddr: "10.96.0.30:80",
		DstNamespace: "shop", DstWorkload: "deployment/catalog-v1", DstService: "catalog-v1",
		RouteKind: "HTTPRoute", RouteNamespace: "shop", RouteName: "catalog-split", RouteRule: "0",
	}
	toCatalogV2    = withRule(withDst(toCatalogV1, "catalog-v2"), "canary")
	catalogByGRPC  = withRoute(withDst(toCatalogV1, "catalog-v2"), "GRPCRoute", "catalog-methods", "list")
	backendPolicy  = labels{Direction: outbound, Authority: "backend:80", TargetAddr: "10.96.0.20:80", DstNamespace: "shop", DstWorkload: "deployment/backend", DstService: "backend", ServerID: backendID, RouteKind: "Service", RouteNamespace: "shop", RouteName: "backend"}
	toExample      = labels{Direction: outbound, Authority: "api.example.com:443", TargetAddr: "93.184.216.34:443"}
	overflowRoutes = labels{Direction: outbound, Authority: "other", TargetAddr: "other", DstNamespace: "other", DstWorkload: "other", DstService: "other",
		ServerID: "other", RouteKind: "other", RouteNamespace: "other", RouteName: "other", RouteRule: "other"}
)

func withDst(l labels, svc string) labels {
	l.DstWorkload, l.DstService = "deployment/"+svc, svc
	return l
}

func withRule(l labels, rule string) labels {
	l.RouteRule = rule
	return l
}

func withRoute(l labels, kind, name, rule string) labels {
	l.RouteKind, l.RouteName, l.RouteRule = kind, name, rule
	return l
}

// routed starts viz on the shop and its catalog and runs two scrape
// rounds 5s apart, as scraped does, with the shop's traffic between them
// and the web pods' calls through routes: web-a's to backend without a
// route, web-b's through backend's own policy; both pods' through
// catalog's routes, among them three requests of web-b's that the proxy
// answered itself for want of a catalog-v2 endpoint (no target, no
// destination); web-a's to an address outside the mesh, and through
// label sets the proxy's caps folded into its overflow set; and a TCP
// connection of web-a's, which has no route.
func (s *shop) routed(t testing.TB) string {
	t.Helper()
	s.addService("shop", "catalog", "10.96.0.30", nil)
	s.addService("shop", "catalog-v1", "10.96.0.31", nil)
	s.addService("shop", "catalog-v2", "10.96.0.32", nil)
	s.webA.serve(webInbound, 7, 200, time.Millisecond) // before the first scrape
	v, base := s.start(t, nil)
	now := time.Now()
	v.round(context.Background(), now)
	s.traffic()
	s.webA.serve(toCatalogV1, 40, 200, 18*time.Millisecond)
	s.webB.serve(toCatalogV1, 20, 200, 18*time.Millisecond)
	s.webA.serve(toCatalogV2, 8, 200, 18*time.Millisecond)
	s.webA.serve(toCatalogV2, 2, 503, 300*time.Millisecond)
	noEndpoint := toCatalogV2
	noEndpoint.TargetAddr, noEndpoint.DstNamespace, noEndpoint.DstWorkload, noEndpoint.DstService = "", "", "", ""
	s.webB.serve(noEndpoint, 3, 503, 18*time.Millisecond)
	s.webB.serve(catalogByGRPC, 5, 200, 18*time.Millisecond)
	s.webB.serve(backendPolicy, 10, 200, 5*time.Millisecond)
	s.webA.serve(toExample, 10, 200, 35*time.Millisecond)
	s.webA.serve(overflowRoutes, 5, 200, 18*time.Millisecond)
	s.webA.connect(labels{Direction: outbound, TargetAddr: "10.96.0.40:5432", DstNamespace: "shop", DstWorkload: "statefulset/db"}, 2, 1, 100, 300)
	v.round(context.Background(), now.Add(testInterval))
	return base
}

func TestRoutes(t *testing.T) {
	base := newShop(t).routed(t)
	// Requests in one bucket: (15ms, 20ms], (2.5ms, 5ms] or (30ms, 40ms].
	at18ms := func(n uint64) vizv1.Stats {
		return vizv1.Stats{Requests: n, Successes: n, SuccessRate: ptr(1.0), RPS: float64(n) / 5,
			LatencyP50: ptr(17.5), LatencyP95: ptr(19.75), LatencyP99: ptr(19.95), TotalRequests: n}
	}
	at5ms := func(n uint64) vizv1.Stats {
		return vizv1.Stats{Requests: n, Successes: n, SuccessRate: ptr(1.0), RPS: float64(n) / 5,
			LatencyP50: ptr(2.5 + 2.5*0.5), LatencyP95: ptr(2.5 + 2.5*0.95), LatencyP99: ptr(2.5 + 2.5*0.99), TotalRequests: n}
	}
	exampleCalls := vizv1.Stats{Requests: 10, Successes: 10, SuccessRate: ptr(1.0), RPS: 2,
		LatencyP50: ptr(35.0), LatencyP95: ptr(39.5), LatencyP99: ptr(39.9), TotalRequests: 10}
	// Both pods: 11 in (15ms, 20ms], web-a's 2 failures in (250ms,
	// 500ms], and web-b's 3 failures the proxy answered.
	canary := vizv1.Stats{Requests: 13, Successes: 8, SuccessRate: ptr(8.0 / 13), RPS: 13.0 / 5,
		LatencyP50: ptr(15 + 5*6.5/11), LatencyP95: ptr(250 + 250*1.35/2), LatencyP99: ptr(250 + 250*1.87/2), TotalRequests: 13}
	webACanary := vizv1.Stats{Requests: 10, Successes: 8, SuccessRate: ptr(0.8), RPS: 2,
		LatencyP50: ptr(15 + 5*5.0/8), LatencyP95: ptr(250 + 250*1.5/2), LatencyP99: ptr(250 + 250*1.9/2), TotalRequests: 10}

	backend := &vizv1.Resource{Kind: "service", Namespace: "shop", Name: "backend"}
	catalog := &vizv1.Resource{Kind: "service", Namespace: "shop", Name: "catalog"}
	split := &vizv1.Resource{Kind: vizv1.KindHTTPRoute, Namespace: "shop", Name: "catalog-split"}
	methods := &vizv1.Resource{Kind: vizv1.KindGRPCRoute, Namespace: "shop", Name: "catalog-methods"}
	folded := &vizv1.Resource{Kind: "other", Namespace: "other", Name: "other"}
	web := vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "web"}
	webA := vizv1.Resource{Kind: "pod", Namespace: "shop", Name: "web-5d8f7c-a"}
	shopNS := vizv1.Resource{Kind: "namespace", Name: "shop"}
	// routes are web's, both pods' together, for r.
	routes := func(r vizv1.Resource) []vizv1.Route {
		return []vizv1.Route{
			{Resource: r, Parent: backend, Stats: at5ms(40)},
			{Resource: r, Parent: catalog, Route: methods, Rule: "list", Stats: at18ms(5)},
			{Resource: r, Parent: catalog, Route: split, Rule: "0", Stats: at18ms(60)},
			{Resource: r, Parent: catalog, Route: split, Rule: "canary", Stats: canary},
			{Resource: r, Route: folded, Rule: "other", Stats: at18ms(5)},
			{Resource: r, Stats: exampleCalls},
		}
	}
	tests := []struct {
		name string
		q    url.Values
		want []vizv1.Route
	}{
		{
			name: "a deployment's, over its pods: per route rule and Service, [default] last, without TCP figures",
			q:    values("kind", "deploy", "namespace", "shop", "name", "web"),
			want: routes(web),
		},
		{
			name: "one pod",
			q:    values("kind", "po", "namespace", "shop", "name", "web-5d8f7c-a", "window", "30s"),
			want: []vizv1.Route{
				{Resource: webA, Parent: backend, Stats: at5ms(30)},
				{Resource: webA, Parent: catalog, Route: split, Rule: "0", Stats: at18ms(40)},
				{Resource: webA, Parent: catalog, Route: split, Rule: "canary", Stats: webACanary},
				{Resource: webA, Route: folded, Rule: "other", Stats: at18ms(5)},
				{Resource: webA, Stats: exampleCalls},
			},
		},
		{
			name: "every deployment of a namespace; those that send nothing have none",
			q:    values("kind", "deploy", "namespace", "shop"),
			want: routes(web),
		},
		{
			name: "a namespace",
			q:    values("kind", "ns", "name", "shop"),
			want: routes(shopNS),
		},
		{
			name: "a deployment without traffic",
			q:    values("kind", "deploy", "namespace", "shop", "name", "legacy"),
			want: []vizv1.Route{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got vizv1.RouteList
			if code := getJSON(t, base, vizv1.PathRoutes, tc.q, &got); code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			// An empty list is [], not null: cmp tells them apart.
			if diff := cmp.Diff(tc.want, got.Routes, approx); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
			wantWindow := tc.q.Get("window")
			if wantWindow == "" {
				wantWindow = "1m"
			}
			if got.Collected.IsZero() || got.Window != wantWindow {
				t.Errorf("collected %v, window %q; want a time and %q", got.Collected, got.Window, wantWindow)
			}
		})
	}
}

// TestRouteParent: the Service a route's requests went to, from each
// source in turn, and none where nothing tells.
func TestRouteParent(t *testing.T) {
	c := newCluster("shop", "data")
	c.addService("shop", "catalog", "10.96.0.30", nil)
	c.addService("data", "db", "fd00::30", nil)
	c.addService("data", "headless", "None", nil)
	v, _ := c.start(t, nil)
	catalog, db, headless := serviceResource("shop", "catalog"), serviceResource("data", "db"), serviceResource("data", "headless")
	route := labels{Direction: outbound, RouteKind: "HTTPRoute", RouteNamespace: "shop", RouteName: "split", RouteRule: "0"}
	with := func(l labels, mod func(*labels)) labels {
		mod(&l)
		return l
	}
	for _, tc := range []struct {
		name string
		l    labels
		want vizv1.Resource
	}{
		{"the cluster IP of the target", with(route, func(l *labels) { l.TargetAddr = "10.96.0.30:80"; l.Authority = "web.data" }), catalog},
		{"an IPv6 cluster IP", with(route, func(l *labels) { l.TargetAddr = "[fd00:0::30]:5432" }), db},
		{"a Service rule names its Service", labels{Direction: outbound, TargetAddr: "10.1.1.1:80", RouteKind: "Service", RouteNamespace: "data", RouteName: "headless"}, headless},
		{"no route: the endpoint's Service", labels{Direction: outbound, TargetAddr: "10.244.0.9:80", DstNamespace: "data", DstService: "headless"}, headless},
		{"a route's endpoint is not its parent", with(route, func(l *labels) { l.TargetAddr = "10.244.0.9:80"; l.DstNamespace, l.DstService = "data", "db" }), vizv1.Resource{}},
		{"no target: NAME in the client's namespace", with(route, func(l *labels) { l.Authority = "catalog:80" }), catalog},
		{"no target: NAME.NAMESPACE", with(route, func(l *labels) { l.Authority = "db.data" }), db},
		{"no target: the full name, any case, with a port", with(route, func(l *labels) { l.Authority = "DB.data.svc.cluster.local.:5432" }), db},
		{"no target: a cluster IP", with(route, func(l *labels) { l.Authority = "10.96.0.30" }), catalog},
		{"no target: a Service that does not exist", with(route, func(l *labels) { l.Authority = "nope.shop:80" }), vizv1.Resource{}},
		{"no target: a name outside the cluster", with(route, func(l *labels) { l.Authority = "api.example.com" }), vizv1.Resource{}},
		{"no target: not a name", with(route, func(l *labels) { l.Authority = "we b:80" }), vizv1.Resource{}},
		{"a folded target and authority", with(route, func(l *labels) { l.TargetAddr, l.Authority = "other", "other" }), vizv1.Resource{}},
		{"a folded Service rule", labels{Direction: outbound, RouteKind: "Service", RouteNamespace: "other", RouteName: "other"}, vizv1.Resource{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &seriesKey{Namespace: "shop", labels: tc.l}
			if got := v.parentFinder().parent(k); got != tc.want {
				t.Errorf("parent %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestCompareRules: rules by index come in order, before named ones.
func TestCompareRules(t *testing.T) {
	rules := []string{"canary", "10", "2", "", "0", "a"}
	slices.SortFunc(rules, compareRules)
	if diff := cmp.Diff([]string{"0", "2", "10", "", "a", "canary"}, rules); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}
