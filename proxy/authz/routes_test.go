package authz

import (
	"strings"
	"testing"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	at "github.com/mesh-dev/mesh/proxy/authz/authztest"
)

// routedPolicy has Server web-http on 8080 with three HTTPRoutes, rules
// in the controller's order: "admin" (GET /admin exactly, for ops),
// "canary" (any path with x-canary: 1), "api" (prefix /api, or a query
// debug=1 on /dbg; for web), then "rest" (every path, for no one of its
// own). Port 9090 has a Server without routes.
func routedPolicy() *inboundv1.PodPolicy {
	getAdmin := at.Exact("/admin")
	getAdmin.Method = "GET"
	canary := at.Prefix("/")
	canary.Headers = []*destinationv1.HeaderMatch{at.Header("x-canary", "1")}
	debug := at.Exact("/dbg")
	debug.Query = []*destinationv1.HeaderMatch{at.Header("debug", "1")}
	return &inboundv1.PodPolicy{
		Revision: "routed", DefaultPolicy: "deny",
		Ports: []*inboundv1.PortPolicy{
			{
				Port: 8080, Server: "web-http", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP1,
				Authorizations: []*inboundv1.Authorization{at.Authz("cluster", at.Networks("n", at.CIDR("10.0.0.0/8")))},
				Routes: []*inboundv1.InboundRoute{
					at.Route("HTTPRoute", "admin", at.Authz("ops-only", at.MeshTLS("m", admin))),
					at.Route("HTTPRoute", "api", at.Authz("web-only", at.MeshTLS("m", web))),
					at.Route("HTTPRoute", "rest"),
					at.Route("HTTPRoute", "canary"),
				},
				RouteRules: []*inboundv1.InboundRouteRule{
					at.Rule(0, "0", getAdmin),
					at.Rule(1, "1", debug),
					at.Rule(1, "0", at.Prefix("/api")),
					at.Rule(3, "0", canary),
					at.Rule(2, "0", at.Prefix("/")),
				},
			},
			{Port: 9090, Server: "plain", Authorizations: []*inboundv1.Authorization{at.Authz("everyone")}},
		},
	}
}

// headers is a request's header fields, lower-case names.
type headers map[string]string

func (h headers) Header(name string) (string, bool) {
	v, ok := h[name]
	return v, ok
}

func TestRoutesMatch(t *testing.T) {
	p, dropped := Compile(routedPolicy(), Options{TrustDomain: "cluster.local"})
	if len(dropped) > 0 {
		t.Fatalf("dropped: %v", dropped)
	}
	if p.Routes(9090) != nil || p.Routes(1234) != nil {
		t.Error("routes on a port whose Server has none, or no Server")
	}
	rs := p.Routes(8080)
	none := headers{}
	found := func(route string) RouteMatch {
		for i := range rs.Len() {
			if _, name := rs.Route(i); name == route {
				return RouteMatch{Route: i, Found: true}
			}
		}
		t.Fatalf("no route %s", route)
		return RouteMatch{}
	}
	tests := []struct {
		name                string
		method, path, query string
		headers             Headers // nil: not passed
		want                RouteMatch
	}{
		{name: "exact and method", method: "GET", path: "/admin", headers: none, want: found("admin")},
		{name: "exact, another method falls through", method: "POST", path: "/admin", headers: none, want: found("rest")},
		{name: "exact is exact", method: "GET", path: "/admin/x", headers: none, want: found("rest")},
		{name: "prefix by path elements", method: "GET", path: "/api/v1", headers: none, want: found("api")},
		{name: "not a path element of the prefix", method: "GET", path: "/apix", headers: none, want: found("rest")},
		{name: "query", method: "GET", path: "/dbg", query: "a=2&debug=1", headers: none, want: found("api")},
		{name: "query encoded", method: "GET", path: "/dbg", query: "de%62ug=1", headers: none, want: found("api")},
		{name: "query missing", method: "GET", path: "/dbg", headers: none, want: found("rest")},
		{name: "header", method: "GET", path: "/anything", headers: headers{"x-canary": "1"}, want: found("canary")},
		{name: "header earlier than the header rule wins", method: "GET", path: "/api", headers: headers{"x-canary": "1"}, want: found("api")},
		{name: "without headers, a header rule that may hold decides nothing", method: "GET", path: "/anything", want: RouteMatch{Miss: NeedsHeaders}},
		{name: "without headers, a rule before it is fine", method: "GET", path: "/api/x", want: found("api")},
		{name: "dot segment", method: "GET", path: "/api/../admin", headers: none, want: RouteMatch{Miss: AmbiguousPath}},
		{name: "dot", method: "GET", path: "/./admin", headers: none, want: RouteMatch{Miss: AmbiguousPath}},
		{name: "trailing dot dot", method: "GET", path: "/api/..", headers: none, want: RouteMatch{Miss: AmbiguousPath}},
		{name: "empty segment", method: "GET", path: "//admin", headers: none, want: RouteMatch{Miss: AmbiguousPath}},
		{name: "decoded question mark", method: "GET", path: "/admin?x", headers: none, want: RouteMatch{Miss: AmbiguousPath}},
		{name: "not absolute", method: "OPTIONS", path: "*", headers: none, want: RouteMatch{Miss: AmbiguousPath}},
		{name: "dots inside a segment are a name", method: "GET", path: "/api/..x/.y", headers: none, want: found("api")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := rs.Match(tc.method, tc.path, tc.query, tc.headers); got != tc.want {
				t.Errorf("Match(%s %s?%s) = %+v, want %+v", tc.method, tc.path, tc.query, got, tc.want)
			}
		})
	}
}

// TestRoutesNoMatch: a port whose routes leave paths out.
func TestRoutesNoMatch(t *testing.T) {
	msg := routedPolicy()
	msg.Ports[0].RouteRules = msg.Ports[0].RouteRules[:3] // no canary, no rest
	p, _ := Compile(msg, Options{})
	if got := p.Routes(8080).Match("GET", "/other", "", headers{}); got != (RouteMatch{}) {
		t.Errorf("Match(/other) = %+v, want no match", got)
	}
}

func TestRoutesAuthorize(t *testing.T) {
	p, _ := Compile(routedPolicy(), Options{TrustDomain: "cluster.local"})
	rs := p.Routes(8080)
	index := map[string]int{}
	for i := range rs.Len() {
		_, name := rs.Route(i)
		index[name] = i
	}
	tests := []struct {
		route, authz string
		client       Client
	}{
		{route: "admin", client: client("192.0.2.1", admin), authz: "ops-only"},
		{route: "admin", client: client("192.0.2.1", web)},
		{route: "api", client: client("::ffff:192.0.2.1", web), authz: "web-only"},
		{route: "rest", client: client("10.1.1.1", web)}, // the Server's authorization is Policy.Authorize's
	}
	for _, tc := range tests {
		name, ok := rs.Authorize(index[tc.route], tc.client)
		if name != tc.authz || ok != (tc.authz != "") {
			t.Errorf("Authorize(%s, %v) = %q, %v; want %q", tc.route, tc.client, name, ok, tc.authz)
		}
	}
	if d := p.Authorize(8080, client("10.1.1.1", "")); !d.Allowed || d.Authz != "cluster" {
		t.Errorf("the Server's own decision %+v, want cluster's", d)
	}
}

// TestRoutesDropped: routes the proxy cannot use make the port match no
// request (404), never fall back to the Server's authorizations alone.
func TestRoutesDropped(t *testing.T) {
	tests := []struct {
		name    string
		change  func(pp *inboundv1.PortPolicy)
		wantErr string
	}{
		{name: "a rule naming no route", change: func(pp *inboundv1.PortPolicy) { pp.RouteRules[0].Route = 9 }, wantErr: "rule 0 names route 9 of 4"},
		{name: "a rule without a match", change: func(pp *inboundv1.PortPolicy) { pp.RouteRules[4].Match = nil }, wantErr: "rule 4 has no match"},
		{name: "a regex RE2 refuses", change: func(pp *inboundv1.PortPolicy) { pp.RouteRules[2].Match = at.Regex("/(a") }, wantErr: "missing closing )"},
		{name: "two kinds", change: func(pp *inboundv1.PortPolicy) { pp.Routes[1].Kind = "GRPCRoute" }, wantErr: "routes of two kinds"},
		{name: "an unknown kind", change: func(pp *inboundv1.PortPolicy) {
			for _, r := range pp.Routes {
				r.Kind = "TCPRoute"
			}
		}, wantErr: `neither HTTPRoute nor GRPCRoute`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := routedPolicy()
			tc.change(msg.Ports[0])
			p, dropped := Compile(msg, Options{TrustDomain: "cluster.local"})
			if len(dropped) != 1 || !strings.Contains(dropped[0].Error(), tc.wantErr) || !strings.Contains(dropped[0].Error(), "404") {
				t.Fatalf("dropped %v, want one saying %q and 404", dropped, tc.wantErr)
			}
			rs := p.Routes(8080)
			if rs == nil {
				t.Fatal("no routes: the port would fall back to its authorizations")
			}
			if got := rs.Match("GET", "/api", "", headers{}); got.Found {
				t.Errorf("Match = %+v, want none", got)
			}
			if d := p.Authorize(8080, client("10.1.1.1", "")); !d.Allowed {
				t.Errorf("the rest of the port's policy is lost: %+v", d)
			}
		})
	}
}

// TestRoutesGRPC: a GRPCRoute's method matches.
func TestRoutesGRPC(t *testing.T) {
	msg := &inboundv1.PodPolicy{Revision: "g", Ports: []*inboundv1.PortPolicy{{
		Port: 8080, Server: "grpc", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_GRPC,
		Routes: []*inboundv1.InboundRoute{at.Route("GRPCRoute", "cart")},
		RouteRules: []*inboundv1.InboundRouteRule{
			at.Rule(0, "0", &destinationv1.Match{GrpcService: "shop.Cart", GrpcMethod: "Add"}),
		},
	}}}
	p, dropped := Compile(msg, Options{})
	if len(dropped) > 0 {
		t.Fatal(dropped)
	}
	rs := p.Routes(8080)
	if got := rs.Match("POST", "/shop.Cart/Add", "", headers{}); !got.Found {
		t.Errorf("Add: %+v, want cart", got)
	}
	if got := rs.Match("POST", "/shop.Cart/Remove", "", headers{}); got.Found {
		t.Errorf("Remove: %+v, want none", got)
	}
}

// BenchmarkRoutesMatch is the cost of finding the route of a request on a
// port with 100 routes of 10 rules (authztest.Routed): a request for the
// prefix of the last route, and one only the catch-all rule takes. Run
// with
//
//	go test -run '^$' -bench RoutesMatch -benchmem ./proxy/authz/
func BenchmarkRoutesMatch(b *testing.B) {
	p, _ := Compile(at.Routed(1, 100, 10, 8000), Options{})
	rs := p.Routes(8000)
	for _, path := range []string{"/r99/5/x", "/x/y"} {
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !rs.Match("GET", path, "", headers{}).Found {
					b.Fatal("no route")
				}
			}
		})
	}
}
