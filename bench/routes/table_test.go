package main

import (
	"strconv"
	"testing"

	"github.com/mesh-dev/mesh/proxy/route"
)

// request is a route.Request from a test; header names are lower case.
type request struct {
	path   string
	header map[string]string
}

func (r *request) Method() string { return "GET" }
func (r *request) Path() string   { return r.path }
func (r *request) Header(name string) (string, bool) {
	v, ok := r.header[name]
	return v, ok
}

// TestTablesMatchTheLastRule compiles each table the way the proxy does
// and checks what the benchmark rests on: the run's request matches the
// last rule of the last route, whose backend is the application, and a
// request for another rule gets the decoy; a Service without routes has
// an empty table, so its requests go as with none.
func TestTablesMatchTheLastRule(t *testing.T) {
	runRequest := &request{path: requestPath, header: map[string]string{headerName: headerValue}}
	tests := []struct {
		name        string
		kind        tableKind
		req         *request
		wantRoute   string
		wantRule    string
		wantBackend string
	}{
		{name: "by path, the run's request", kind: byPath, req: runRequest,
			wantRoute: lastRoute, wantRule: lastRuleName, wantBackend: "app.bench.svc.cluster.local:8080"},
		{name: "by header, the run's request", kind: byHeader, req: runRequest,
			wantRoute: lastRoute, wantRule: lastRuleName, wantBackend: "app.bench.svc.cluster.local:8080"},
		{name: "by path, another rule", kind: byPath,
			req:       &request{path: "/api/svc05/op3/items", header: map[string]string{headerName: headerValue}},
			wantRoute: "route-05", wantRule: "3", wantBackend: "decoy.bench.svc.cluster.local:8080"},
		{name: "by header, another rule", kind: byHeader,
			req:       &request{path: requestPath, header: map[string]string{headerName: "5-3"}},
			wantRoute: "route-05", wantRule: "3", wantBackend: "decoy.bench.svc.cluster.local:8080"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pt := buildTable(tc.kind, "svc", h1Port)
			if n := len(pt.GetHttpRules()); n != routeCount*ruleCount {
				t.Fatalf("the table has %d rules, want %d", n, routeCount*ruleCount)
			}
			tab, err := route.Compile(pt)
			if err != nil {
				t.Fatal(err)
			}
			m, ok := tab.Match(tc.req, false)
			if !ok {
				t.Fatalf("%+v matched no rule", tc.req)
			}
			if m.Rule.Route.Name != tc.wantRoute || m.Rule.Name != tc.wantRule {
				t.Errorf("matched %s rule %s, want %s rule %s", m.Rule.Route.Name, m.Rule.Name, tc.wantRoute, tc.wantRule)
			}
			if len(m.Rule.Backends) != 1 || m.Rule.Backends[0].Authority != tc.wantBackend {
				t.Errorf("backends %+v, want %s alone", m.Rule.Backends, tc.wantBackend)
			}
		})
	}
	t.Run("none", func(t *testing.T) {
		tab, err := route.Compile(buildTable(noRoutes, "svc", h1Port))
		if err != nil {
			t.Fatal(err)
		}
		if !tab.Empty() {
			t.Errorf("the table of a Service without routes is not empty: %d rules, default %v", len(tab.HTTPRules()), tab.Default())
		}
	})
	t.Run("by header, no header", func(t *testing.T) {
		tab, err := route.Compile(buildTable(byHeader, "svc", h1Port))
		if err != nil {
			t.Fatal(err)
		}
		if m, ok := tab.Match(&request{path: requestPath}, false); ok {
			t.Errorf("a request without the header matched %s rule %s", m.Rule.Route.Name, m.Rule.Name)
		}
	})
}

// TestLabLayout checks that the destination service knows every
// authority the proxy will ask about: each Service on both ports with
// its table, and the backends the tables name, the decoy's on its own
// port.
func TestLabLayout(t *testing.T) {
	l := labLayout()
	app := func(port int) string { return appIP + ":" + strconv.Itoa(port) }
	for _, port := range []int{h1Port, h2Port} {
		for _, tg := range targets {
			a := tg.authority(port)
			if got := l.endpoints[a]; got != app(port) {
				t.Errorf("Get %s = %q, want %s", a, got, app(port))
			}
			tab := l.tables[a]
			if tab.GetParent().GetName() != tg.service || tab.GetParent().GetPort() != uint32(port) {
				t.Errorf("Routes %s has parent %v, want Service %s port %d", a, tab.GetParent(), tg.service, port)
			}
			if want := map[tableKind]int{noRoutes: 0, byPath: 1000, byHeader: 1000}[tg.kind]; len(tab.GetHttpRules()) != want {
				t.Errorf("Routes %s: %d rules, want %d", a, len(tab.GetHttpRules()), want)
			}
			for _, r := range tab.GetHttpRules() {
				b := r.GetBackends()[0].GetAuthority()
				if _, ok := l.endpoints[b]; !ok {
					t.Fatalf("Routes %s: rule %s/%s names backend %s, which Get does not know", a, r.GetRoute().GetName(), r.GetRuleName(), b)
				}
			}
		}
		if got, want := l.endpoints[serviceAuthority(decoyService, port)], app(decoyPort(port)); got != want {
			t.Errorf("the decoy on port %d is at %q, want %s", port, got, want)
		}
	}
}
