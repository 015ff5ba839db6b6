package cli

import (
	"net/http"
	"testing"

	"sigs.k8s.io/yaml"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// `mesh viz routes` runs against vizStandIn like the other viz commands
// (viz_test.go): the stand-in follows the contract of api/viz/v1, the
// controller's own answers to PathRoutes are tested in controller/viz,
// and the two together, through the port-forward, are the end-to-end
// suite's to exercise.

var (
	webDeploy = vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "web"}
	catalog   = &vizv1.Resource{Kind: "service", Namespace: "shop", Name: "catalog"}
	split     = &vizv1.Resource{Kind: vizv1.KindHTTPRoute, Namespace: "shop", Name: "catalog-split"}
)

// routesFixture is web's routes in the API's order: a Service without a
// route, one with an HTTPRoute of two rules and a GRPCRoute of the
// clients' namespace, a route whose name a terminal would act on (a
// hostile pod's exposition), label sets a proxy folded into "other", and
// requests to an address outside the mesh.
var routesFixture = vizv1.RouteList{
	Window:    "1m",
	Collected: testNow,
	Routes: []vizv1.Route{{
		Resource: webDeploy, Parent: &vizv1.Resource{Kind: "service", Namespace: "data", Name: "backend"},
		Stats: vizv1.Stats{Requests: 1500, Successes: 1500, SuccessRate: f64(1), RPS: 25, LatencyP50: f64(3.75), LatencyP95: f64(4.875), LatencyP99: f64(4.975)},
	}, {
		Resource: webDeploy, Parent: catalog, Rule: "list",
		Route: &vizv1.Resource{Kind: vizv1.KindGRPCRoute, Namespace: "web-team", Name: "catalog-methods"},
		Stats: vizv1.Stats{Requests: 60, Successes: 60, SuccessRate: f64(1), RPS: 1, LatencyP50: f64(3), LatencyP95: f64(4.8), LatencyP99: f64(0.5)},
	}, {
		Resource: webDeploy, Parent: catalog, Route: split, Rule: "0",
		Stats: vizv1.Stats{Requests: 600, Successes: 594, SuccessRate: f64(0.99), RPS: 10, LatencyP50: f64(12), LatencyP95: f64(48.6), LatencyP99: f64(97)},
	}, {
		Resource: webDeploy, Parent: catalog, Route: split, Rule: "canary",
		Stats: vizv1.Stats{Requests: 30, RPS: 0.5, SuccessRate: f64(0)},
	}, {
		Resource: webDeploy, Parent: catalog, Route: &vizv1.Resource{Kind: vizv1.KindHTTPRoute, Namespace: "shop", Name: "\x1b[2J"}, Rule: "0",
		Stats: vizv1.Stats{Requests: 6, Successes: 6, SuccessRate: f64(1), RPS: 0.1, LatencyP50: f64(2), LatencyP95: f64(2), LatencyP99: f64(2)},
	}, {
		Resource: webDeploy, Route: &vizv1.Resource{Kind: "other", Namespace: "other", Name: "other"}, Rule: "other",
		Stats: vizv1.Stats{Requests: 12, Successes: 12, SuccessRate: f64(1), RPS: 0.2, LatencyP50: f64(2), LatencyP95: f64(2), LatencyP99: f64(2)},
	}, {
		Resource: webDeploy,
		Stats:    vizv1.Stats{Requests: 120, Successes: 108, SuccessRate: f64(0.9), RPS: 2, LatencyP50: f64(35), LatencyP95: f64(39.5), LatencyP99: f64(39.9)},
	}},
}

func TestVizRoutesTable(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathRoutes, answer(http.StatusOK, routesFixture))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{{
		name: "by Service, route and rule, [default] last, as the API orders them",
		args: []string{"deploy/web"},
		want: "" +
			"ROUTE            RULE    PARENT   SUCCESS  RPS      LATENCY_P50  LATENCY_P95  LATENCY_P99\n" +
			"[default]        -       backend  100.00%  25.0rps  4ms          5ms          5ms\n" +
			"catalog-methods  list    catalog  100.00%  1.0rps   3ms          5ms          0.5ms\n" +
			"catalog-split    0       catalog  99.00%   10.0rps  12ms         49ms         97ms\n" +
			"catalog-split    canary  catalog  0.00%    0.5rps   -            -            -\n" +
			`"\x1b[2J"        0       catalog  100.00%  0.1rps   2ms          2ms          2ms` + "\n" +
			"other            other   -        100.00%  0.2rps   2ms          2ms          2ms\n" +
			"[default]        -       -        90.00%   2.0rps   35ms         40ms         40ms\n",
	}, {
		name: "wide",
		args: []string{"deploy", "web", "-o", "wide"},
		want: "" +
			"ROUTE            RULE    PARENT   SUCCESS  RPS      LATENCY_P50  LATENCY_P95  LATENCY_P99  KIND       ROUTE_NS  PARENT_NS  REQUESTS\n" +
			"[default]        -       backend  100.00%  25.0rps  4ms          5ms          5ms          -          -         data       1500\n" +
			"catalog-methods  list    catalog  100.00%  1.0rps   3ms          5ms          0.5ms        GRPCRoute  web-team  shop       60\n" +
			"catalog-split    0       catalog  99.00%   10.0rps  12ms         49ms         97ms         HTTPRoute  shop      shop       600\n" +
			"catalog-split    canary  catalog  0.00%    0.5rps   -            -            -            HTTPRoute  shop      shop       30\n" +
			`"\x1b[2J"        0       catalog  100.00%  0.1rps   2ms          2ms          2ms          HTTPRoute  shop      shop       6` + "\n" +
			"other            other   -        100.00%  0.2rps   2ms          2ms          2ms          other      other     -          12\n" +
			"[default]        -       -        90.00%   2.0rps   35ms         40ms         40ms         -          -         -          120\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			checkStdout(t, api, tc.want, append([]string{"viz", "routes", "-n", "shop"}, tc.args...)...)
		})
	}
}

// Without a name, a first column names each route's resource.
func TestVizRoutesTableOfMany(t *testing.T) {
	list := vizv1.RouteList{Window: "1m", Routes: []vizv1.Route{
		{Resource: vizv1.Resource{Kind: "namespace", Name: "shop"}, Parent: catalog, Route: split, Rule: "0", Stats: vizv1.Stats{RPS: 3}},
		{Resource: vizv1.Resource{Kind: "namespace", Name: "tools"}, Stats: vizv1.Stats{RPS: 1}},
	}}
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathRoutes, answer(http.StatusOK, list))
	checkStdout(t, api, ""+
		"NAMESPACE  ROUTE          RULE  PARENT   SUCCESS  RPS     LATENCY_P50  LATENCY_P95  LATENCY_P99\n"+
		"shop       catalog-split  0     catalog  -        3.0rps  -            -            -\n"+
		"tools      [default]      -     -        -        1.0rps  -            -            -\n",
		"viz", "routes", "ns", "-A")
	api = newVizStandIn(t)
	list.Routes[0].Resource, list.Routes[1].Resource = webDeploy, vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "api"}
	api.Handle("GET "+vizv1.PathRoutes, answer(http.StatusOK, list))
	checkStdout(t, api, ""+
		"NAME  ROUTE          RULE  PARENT   SUCCESS  RPS     LATENCY_P50  LATENCY_P95  LATENCY_P99\n"+
		"web   catalog-split  0     catalog  -        3.0rps  -            -            -\n"+
		"api   [default]      -     -        -        1.0rps  -            -            -\n",
		"viz", "routes", "deployments", "-n", "shop")
}

func TestVizRoutesJSON(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathRoutes, answer(http.StatusOK, routesFixture))
	checkJSONOutput(t, api, routesFixture, "viz", "routes", "deploy/web", "-n", "shop", "-o", "json")
}

func TestVizRoutesYAML(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathRoutes, answer(http.StatusOK, routesFixture))
	out := vizOutput(t, api, "viz", "routes", "deploy/web", "-n", "shop", "-o", "yaml")
	var got vizv1.RouteList
	if err := yaml.UnmarshalStrict([]byte(out), &got); err != nil {
		t.Fatalf("stdout is not a RouteList in YAML: %v\n%s", err, out)
	}
	if len(got.Routes) != len(routesFixture.Routes) || got.Routes[2].Route.Name != "catalog-split" || got.Routes[2].Rule != "0" ||
		got.Routes[2].Parent.Name != "catalog" || *got.Routes[2].SuccessRate != 0.99 || got.Routes[6].Route != nil {
		t.Errorf("YAML read back as %+v, want the fixture", got)
	}
}

func TestVizRoutesQuery(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // the query, encoded
	}{
		{"kind/name", []string{"deploy/web", "-n", "shop"}, "kind=deploy&name=web&namespace=shop&window=1m"},
		{"kind and name over 5m", []string{"pods", "web-1", "-n", "shop", "-t", "5m"}, "kind=pod&name=web-1&namespace=shop&window=5m"},
		{"every deployment of a namespace", []string{"deployment", "-n", "shop"}, "kind=deploy&namespace=shop&window=1m"},
		{"a namespace names its namespace", []string{"ns/shop"}, "kind=ns&name=shop&namespace=shop&window=1m"},
		{"a namespace and the same -n", []string{"namespace", "shop", "-n", "shop"}, "kind=ns&name=shop&namespace=shop&window=1m"},
		{"every namespace", []string{"ns", "--all-namespaces"}, "kind=ns&window=1m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newVizStandIn(t)
			api.Handle("GET "+vizv1.PathRoutes, answer(http.StatusOK, routesFixture))
			vizOutput(t, api, append([]string{"viz", "routes"}, tc.args...)...)
			checkOnlyQuery(t, api, tc.want)
		})
	}
}

func TestVizRoutesArgumentErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing", []string{}, "name a kind: mesh viz routes deploy|pod|ns [NAME]"},
		{"too many", []string{"deploy", "web", "db"}, "too many arguments"},
		{"a slash and a name", []string{"deploy/web", "db"}, `"deploy/web" "db": name the resource as KIND NAME or KIND/NAME, not both`},
		{"no name after the slash", []string{"deploy/"}, `"deploy/": want KIND/NAME`},
		{"a service", []string{"svc/web"}, `kind "svc": routes are the requests a resource sends, and a service sends none`},
		{"an unknown kind", []string{"cronjob/web"}, `unknown kind "cronjob": want deploy (deployment), pod (po) or ns (namespace)`},
		{"bad output", []string{"deploy/web", "-o", "xml"}, `--output "xml": want one of [table wide json yaml]`},
		{"bad window", []string{"deploy/web", "-t", "soon"}, `--time-window "soon": want a positive duration`},
		{"two namespaces", []string{"ns/shop", "-n", "other"}, "-n other and ns/shop name different namespaces"},
		{"all namespaces of deployments", []string{"deploy", "-A"}, "--all-namespaces works with kind ns only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkArgumentError(t, tc.want, append([]string{"viz", "routes", "-n", "shop"}, tc.args...)...)
		})
	}
	checkArgumentError(t, "name a namespace or pass --all-namespaces, not both", "viz", "routes", "ns/shop", "-A")
}

func TestVizRoutesNone(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"deploy/web", "-n", "shop"}, "No requests from deploy/web in namespace shop in the last 1m.\n"},
		{[]string{"po", "web-1", "-n", "shop", "-t", "5m"}, "No requests from pod/web-1 in namespace shop in the last 5m.\n"},
		{[]string{"deploy", "-n", "shop"}, "No requests from deployments in namespace shop in the last 1m.\n"},
		{[]string{"ns/shop"}, "No requests from ns/shop in the last 1m.\n"},
		{[]string{"ns", "-n", "shop"}, "No requests from ns/shop in the last 1m.\n"},
		{[]string{"ns", "-A", "-t", "30s"}, "No requests from any namespace in the last 30s.\n"},
	} {
		api := newVizStandIn(t)
		api.Handle("GET "+vizv1.PathRoutes, answer(http.StatusOK, vizv1.RouteList{Window: "1m", Routes: []vizv1.Route{}}))
		out, errOut, err := runViz(t, api, append([]string{"viz", "routes"}, tc.args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if out != "" || errOut != tc.want {
			t.Errorf("%v: stdout %q, stderr %q; want only %q on stderr", tc.args, out, errOut, tc.want)
		}
	}
}

func TestVizRoutesWatch(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathRoutes, answer(http.StatusOK, routesFixture))
	// The route name a terminal would act on is quoted: no escape
	// sequence reaches the output.
	checkWatch(t, api, "ROUTE            RULE", "viz", "routes", "deploy/web", "-n", "shop", "--watch")
}

// The API's refusals come through as they are; an older controller,
// without the path, is told apart.
func TestVizRoutesAPIErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{{
		name:    "unknown resource",
		handler: answer(http.StatusNotFound, vizv1.Error{Error: "deployment/nope not found in namespace shop"}),
		want:    "viz: deployment/nope not found in namespace shop (HTTP 404)",
	}, {
		name:    "older mesh-viz",
		handler: http.NotFound,
		want:    "viz: mesh-viz does not serve /api/v1/routes (404 page not found): is it older than this mesh binary? run mesh check (HTTP 404)",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			api := newVizStandIn(t)
			api.HandleFunc("GET "+vizv1.PathRoutes, tc.handler)
			_, _, err := runViz(t, api, "viz", "routes", "deploy/nope", "-n", "shop", "--watch")
			if err == nil || err.Error() != tc.want {
				t.Errorf("err = %v, want %s", err, tc.want)
			}
		})
	}
}
