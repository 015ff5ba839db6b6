package policy

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/proxy/authz"
	at "github.com/mesh-dev/mesh/proxy/authz/authztest"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// routedPolicy has Server api on 8080, which allows web, with three
// routes: "public" (prefix /public) for anyone, "admin" (prefix /admin)
// with no policy of its own, and "canary" (x-canary: 1 on prefix /c) for
// anyone. /healthz is a probe. Port 9090's Server has no routes and
// allows anyone.
func routedPolicy(rev string, audit bool) *inboundv1.PodPolicy {
	canary := at.Prefix("/c")
	canary.Headers = []*destinationv1.HeaderMatch{at.Header("x-canary", "1")}
	return &inboundv1.PodPolicy{
		Revision: rev, DefaultPolicy: "deny", Audit: audit,
		Ports: []*inboundv1.PortPolicy{
			{
				Port: 8080, Server: "api", Authorizations: []*inboundv1.Authorization{at.Authz("web-only", at.MeshTLS("m", web))},
				Routes: []*inboundv1.InboundRoute{
					at.Route("HTTPRoute", "public", at.Authz("anyone")),
					at.Route("HTTPRoute", "admin"),
					at.Route("HTTPRoute", "canary", at.Authz("anyone")),
				},
				RouteRules: []*inboundv1.InboundRouteRule{
					at.Rule(0, "0", at.Prefix("/public")),
					at.Rule(1, "0", at.Prefix("/admin")),
					at.Rule(2, "0", canary),
				},
			},
			{Port: 9090, Server: "plain", Authorizations: []*inboundv1.Authorization{at.Authz("anyone")}},
		},
		Probes: []*inboundv1.Probe{{Port: 8080, Path: "/healthz"}},
	}
}

// headRequest is a request head as a forwarder hands it to AuthorizeRoute.
type headRequest struct {
	method, target string
	fields         map[string]string
}

func (r headRequest) Method() string { return r.method }
func (r headRequest) Path() string   { return r.target }
func (r headRequest) Header(name string) (string, bool) {
	v, ok := r.fields[name]
	return v, ok
}

// how a request is asked about: the three ways the forwarders may.
type how int

const (
	viaRequest how = iota // AuthorizeRequest, an *http.Request with its headers
	viaRoute              // AuthorizeRoute, a route.Request with its headers
	viaHead               // AuthorizeHTTP: method, decoded path, query; no headers
)

func (w how) String() string {
	return [...]string{"AuthorizeRequest", "AuthorizeRoute", "AuthorizeHTTP"}[w]
}

func ask(c *Conn, w how, method, target string, fields map[string]string) error {
	switch w {
	case viaRoute:
		return c.AuthorizeRoute(headRequest{method: method, target: target, fields: fields})
	case viaHead:
		r := httptest.NewRequest(method, target, nil)
		return c.AuthorizeHTTP(method, r.URL.Path, r.URL.RawQuery)
	}
	r := httptest.NewRequest(method, target, nil)
	for k, v := range fields {
		r.Header.Set(k, v)
	}
	return c.AuthorizeRequest(r)
}

func TestRoutedRequests(t *testing.T) {
	canary := map[string]string{"x-canary": "1"}
	tests := []struct {
		name    string
		audit   bool
		client  string
		target  string
		fields  map[string]string
		ways    []how  // nil: all three
		wantErr string // "" lets the request through
		// wantNoRoute: the error is an *httpproxy.NoInboundRoute.
		wantNoRoute bool
		wantLabels  []string // of mesh_proxy_inbound_http_authz_total; nil: not counted there
		wantLog     string
	}{
		{name: "a route's own policy allows what the Server's does not", client: other, target: "/public/x",
			wantLabels: []string{"server", "api", "authz", "anyone", "client_id", other, "decision", "allow"}},
		{name: "the Server's policy allows every route", client: web, target: "/admin",
			wantLabels: []string{"server", "api", "authz", "web-only", "client_id", web, "decision", "allow"}},
		{name: "neither allows", client: other, target: "/admin/users",
			wantErr:    `neither HTTPRoute "admin" nor server "api" allows traffic from ` + other + " on port 8080",
			wantLabels: []string{"server", "api", "authz", "", "client_id", other, "decision", "deny"},
			wantLog:    "inbound request denied"},
		{name: "no route: 404 whoever asks", client: web, target: "/other",
			wantErr: `no route of server "api" matches GET /other`, wantNoRoute: true, wantLog: "inbound request matches no route"},
		{name: "a path an application could read as another matches no route", client: web, target: "/public/%2e%2e/admin",
			wantErr: `no route of server "api" takes path "/public/../admin"`, wantNoRoute: true},
		{name: "the path is matched decoded", client: other, target: "/%70ublic/x",
			wantLabels: []string{"server", "api", "authz", "anyone", "decision", "allow"}},
		{name: "a probe passes, no route needed", target: "/healthz",
			wantLabels: []string{"server", "api", "authz", "probe", "decision", "allow"}},
		{name: "a header route, given the headers", client: other, target: "/c/x", fields: canary, ways: []how{viaRequest, viaRoute},
			wantLabels: []string{"server", "api", "authz", "anyone", "client_id", other, "decision", "allow"}},
		{name: "a header route's path without its header", client: other, target: "/c/x", ways: []how{viaRequest, viaRoute},
			wantErr: `no route of server "api" matches GET /c/x`, wantNoRoute: true},
		{name: "a header route, without the headers: refused, not guessed", client: other, target: "/c/x", fields: canary, ways: []how{viaHead},
			wantErr:    `server "api": which route GET /c/x takes depends on header fields`,
			wantLabels: []string{"server", "api", "authz", "", "client_id", other, "decision", "deny"},
			wantLog:    "its route depends on header fields"},
		{name: "audit: no route is let through", audit: true, client: other, target: "/other",
			wantLabels: []string{"server", "api", "authz", "", "client_id", other, "decision", "audit"},
			wantLog:    "inbound request matches no route; allowed by audit"},
		{name: "audit: a denial by the route is let through", audit: true, client: other, target: "/admin",
			wantLabels: []string{"server", "api", "authz", "", "client_id", other, "decision", "audit"},
			wantLog:    "inbound request would be denied; allowed by audit"},
	}
	for _, tc := range tests {
		ways := tc.ways
		if ways == nil {
			ways = []how{viaRequest, viaRoute, viaHead}
		}
		for _, w := range ways {
			t.Run(tc.name+"/"+w.String(), func(t *testing.T) {
				h := start(t, time.Second)
				h.set(t, routedPolicy("r1", tc.audit))
				c := h.conn(t, tc.client)
				for range 2 { // the second request uses the cached decision
					err := ask(c, w, "GET", tc.target, tc.fields)
					if got := errString(err); !strings.Contains(got, tc.wantErr) || (tc.wantErr == "") != (err == nil) {
						t.Fatalf("%s = %q, want %q", w, got, tc.wantErr)
					}
					var nr *httpproxy.NoInboundRoute
					if errors.As(err, &nr) != tc.wantNoRoute {
						t.Errorf("%s = %#v: a NoInboundRoute is %v, want %v", w, err, !tc.wantNoRoute, tc.wantNoRoute)
					}
				}
				if tc.wantLabels != nil {
					if got := h.sum(t, "mesh_proxy_inbound_http_authz_total", tc.wantLabels...); got != 2 {
						t.Errorf("requests counted with %v = %v, want 2", tc.wantLabels, got)
					}
				}
				wantNotFound := 0.0
				if tc.wantNoRoute {
					wantNotFound = 2
				}
				if got := h.sum(t, "mesh_proxy_inbound_http_route_not_found_total", "server", "api"); got != wantNotFound {
					t.Errorf("route_not_found = %v, want %v", got, wantNotFound)
				}
				if tc.wantLog != "" && !strings.Contains(h.logs.String(), tc.wantLog) {
					t.Errorf("no %q in the log:\n%s", tc.wantLog, h.logs)
				}
			})
		}
	}
}

// TestRoutesAcrossPolicies: a connection open when the routes change
// decides its next request under the new ones; a Server without routes
// decides as before routes existed.
func TestRoutesAcrossPolicies(t *testing.T) {
	h := start(t, time.Second)
	plain := routedPolicy("r1", false)
	plain.Ports[0].Routes, plain.Ports[0].RouteRules = nil, nil
	h.set(t, plain)
	c := h.conn(t, other)
	if err := ask(c, viaRoute, "GET", "/public", nil); err == nil || !strings.Contains(err.Error(), `server "api" allows no traffic from `+other) {
		t.Fatalf("without routes: %v, want the Server's denial", err)
	}
	h.set(t, routedPolicy("r2", false))
	if err := ask(c, viaRoute, "GET", "/public", nil); err != nil {
		t.Fatalf("with routes: %v, want public's allowance", err)
	}
	h.set(t, plain)
	if err := ask(c, viaRoute, "GET", "/nothing", nil); err == nil || strings.Contains(err.Error(), "no route") {
		t.Fatalf("routes gone: %v, want the Server's denial", err)
	}
}

// TestRoutesRateLimited: a request its route allows passes the Server's
// rate limit too.
func TestRoutesRateLimited(t *testing.T) {
	p := routedPolicy("r1", false)
	p.Ports[0].RateLimit = &inboundv1.RateLimit{Name: "rl", TotalRps: 1}
	h, _ := startLimited(t, p)
	c := h.conn(t, other)
	if err := ask(c, viaRoute, "GET", "/public", nil); err != nil {
		t.Fatalf("first: %v", err)
	}
	var rl *httpproxy.RateLimited
	if err := ask(c, viaRoute, "GET", "/public", nil); !errors.As(err, &rl) {
		t.Fatalf("second: %v, want a rate limit", err)
	}
	if err := ask(c, viaRoute, "GET", "/healthz", nil); err != nil {
		t.Errorf("probe: %v, want it through", err)
	}
}

// BenchmarkAuthorizeRoute is what the policy adds to a request on a
// connection already decided, on a port with 100 routes of 10 rules
// (authztest.Routed): a request its route allows. Run with
//
//	go test -run '^$' -bench AuthorizeRoute -benchmem ./proxy/policy/
func BenchmarkAuthorizeRoute(b *testing.B) {
	e, err := New(Config{Client: inboundv1.NewInboundPolicyClient(nil), Namespace: "n", Pod: "p", Metrics: metrics.New(), TrustDomain: "cluster.local"})
	if err != nil {
		b.Fatal(err)
	}
	e.apply(at.Routed(1, 100, 10, 8000, at.MeshTLS("m", web)))
	pol, _ := e.Admit(b.Context(), 8000, local)
	c := e.Conn(pol, 8000, authz.Client{Addr: local, ID: web})
	req := headRequest{method: "GET", target: "/x/y"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.AuthorizeRoute(req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
