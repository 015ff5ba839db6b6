package cli

import (
	"net/http"
	"testing"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// `mesh viz routes` runs against vizStandIn like the other viz commands
// (viz_test.go): the stand-in follows the contract of api/viz/v1, the
// controller's own answers to PathRoutes are tested in controller/viz,
// and the two together, through the port-forward, are the end-to-end
// suite's to exercise.

// routesFixture has inbound routes, one of them with an authority a
// terminal would act on, and outbound ones to a workload and outside the
// mesh; routes come in the API's order, not by rate.
var routesFixture = vizv1.RouteList{
	Window:    "1m",
	Collected: testNow,
	Routes: []vizv1.Route{{
		Resource: webDeploy, Direction: "inbound", Authority: "\x1b[2J",
		Stats: vizv1.Stats{Requests: 30, RPS: 0.5, SuccessRate: f64(0)},
	}, {
		Resource: webDeploy, Direction: "inbound", Authority: "other",
		Stats: vizv1.Stats{Requests: 60, Successes: 60, SuccessRate: f64(1), RPS: 1, LatencyP50: f64(3), LatencyP95: f64(4.8), LatencyP99: f64(0.5)},
	}, {
		Resource: webDeploy, Direction: "inbound", Authority: "web.shop:80",
		Stats: vizv1.Stats{Requests: 600, Successes: 594, SuccessRate: f64(0.99), RPS: 10, LatencyP50: f64(12), LatencyP95: f64(48.6), LatencyP99: f64(97)},
	}, {
		Resource: webDeploy, Direction: "outbound", Authority: "api.example.com:443",
		Stats: vizv1.Stats{Requests: 120, Successes: 108, SuccessRate: f64(0.9), RPS: 2, LatencyP50: f64(35), LatencyP95: f64(39.5), LatencyP99: f64(39.9)},
	}, {
		Resource: webDeploy, Direction: "outbound", Authority: "backend.shop:80",
		Dst:   &vizv1.Resource{Kind: "statefulset", Namespace: "data", Name: "backend"},
		Stats: vizv1.Stats{Requests: 1500, Successes: 1500, SuccessRate: f64(1), RPS: 25, LatencyP50: f64(3.75), LatencyP95: f64(4.875), LatencyP99: f64(4.975)},
	}},
}

var webDeploy = vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "web"}

// answerRoutes answers PathRoutes with the routes of list in the
// direction asked, as the controller does.
func answerRoutes(list vizv1.RouteList) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		dir := r.URL.Query().Get("direction")
		out := list
		out.Routes = []vizv1.Route{}
		for _, rt := range list.Routes {
			if dir == vizv1.DirectionAll || rt.Direction == dir || dir == "" && rt.Direction == vizv1.DirectionInbound {
				out.Routes = append(out.Routes, rt)
			}
		}
		answer(http.StatusOK, out)(w, r)
	}
}

func TestVizRoutesTable(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathRoutes, answerRoutes(routesFixture))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{{
		name: "inbound by default, busiest first",
		args: []string{"deploy/web"},
		want: "" +
			"ROUTE        SUCCESS  RPS      LATENCY_P50  LATENCY_P95  LATENCY_P99\n" +
			"web.shop:80  99.00%   10.0rps  12ms         49ms         97ms\n" +
			"other        100.00%  1.0rps   3ms          5ms          0.5ms\n" +
			`"\x1b[2J"    0.00%    0.5rps   -            -            -` + "\n",
	}, {
		name: "outbound, with the destination",
		args: []string{"deploy", "web", "--direction", "outbound"},
		want: "" +
			"ROUTE                DST          SUCCESS  RPS      LATENCY_P50  LATENCY_P95  LATENCY_P99\n" +
			"backend.shop:80      sts/backend  100.00%  25.0rps  4ms          5ms          5ms\n" +
			"api.example.com:443  -            90.00%   2.0rps   35ms         40ms         40ms\n",
	}, {
		name: "both directions",
		args: []string{"deploy/web", "--direction", "all"},
		want: "" +
			"ROUTE                DIRECTION  DST          SUCCESS  RPS      LATENCY_P50  LATENCY_P95  LATENCY_P99\n" +
			"backend.shop:80      outbound   sts/backend  100.00%  25.0rps  4ms          5ms          5ms\n" +
			"web.shop:80          inbound    -            99.00%   10.0rps  12ms         49ms         97ms\n" +
			"api.example.com:443  outbound   -            90.00%   2.0rps   35ms         40ms         40ms\n" +
			"other                inbound    -            100.00%  1.0rps   3ms          5ms          0.5ms\n" +
			`"\x1b[2J"            inbound    -            0.00%    0.5rps   -            -            -` + "\n",
	}, {
		name: "wide",
		args: []string{"deploy/web", "--direction", "outbound", "-o", "wide"},
		want: "" +
			"ROUTE                DST          SUCCESS  RPS      LATENCY_P50  LATENCY_P95  LATENCY_P99  DST_NS  REQUESTS\n" +
			"backend.shop:80      sts/backend  100.00%  25.0rps  4ms          5ms          5ms          data    1500\n" +
			"api.example.com:443  -            90.00%   2.0rps   35ms         40ms         40ms         -       120\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			checkStdout(t, api, tc.want, append([]string{"viz", "routes", "-n", "shop"}, tc.args...)...)
		})
	}
}

func TestVizRoutesJSON(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathRoutes, answer(http.StatusOK, routesFixture))
	checkJSONOutput(t, api, routesFixture, "viz", "routes", "deploy/web", "-n", "shop", "-o", "json")
}

func TestVizRoutesQuery(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // the query, encoded
	}{
		{"kind/name", []string{"deploy/web", "-n", "shop"}, "direction=inbound&kind=deploy&name=web&namespace=shop&window=1m"},
		{"kind and name", []string{"pods", "web-1", "-n", "shop", "--direction", "all"}, "direction=all&kind=pod&name=web-1&namespace=shop&window=1m"},
		{"outbound over 5m", []string{"deployment/web", "-n", "shop", "--direction", "outbound", "-t", "5m"}, "direction=outbound&kind=deploy&name=web&namespace=shop&window=5m"},
		{"a namespace names its namespace", []string{"ns/shop"}, "direction=inbound&kind=ns&name=shop&namespace=shop&window=1m"},
		{"a namespace and the same -n", []string{"namespace", "shop", "-n", "shop"}, "direction=inbound&kind=ns&name=shop&namespace=shop&window=1m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newVizStandIn(t)
			api.Handle("GET "+vizv1.PathRoutes, answerRoutes(routesFixture))
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
		{"nothing", []string{}, "name one resource: mesh viz routes deploy/NAME, pod/NAME or ns/NAME"},
		{"a kind alone", []string{"deploy"}, `resource "deploy": want KIND/NAME with KIND deploy (deployment), pod (po) or ns (namespace)`},
		{"too many", []string{"deploy", "web", "db"}, "name one resource"},
		{"a service", []string{"svc/web"}, `resource "svc/web": kind "svc" is not one of deploy (deployment), pod (po) or ns (namespace)`},
		{"bad direction", []string{"deploy/web", "--direction", "in"}, `--direction "in": want inbound, outbound or all`},
		{"bad output", []string{"deploy/web", "-o", "yaml"}, `--output "yaml": want one of [table wide json]`},
		{"bad window", []string{"deploy/web", "-t", "soon"}, `--time-window "soon": want a positive duration`},
		{"two namespaces", []string{"ns/shop", "-n", "other"}, "-n other and ns/shop name different namespaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkArgumentError(t, tc.want, append([]string{"viz", "routes", "-n", "shop"}, tc.args...)...)
		})
	}
}

func TestVizRoutesNone(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"deploy/web", "-n", "shop"}, "No requests to deploy/web in namespace shop in the last 1m.\n"},
		{[]string{"po/web-1", "-n", "shop", "--direction", "outbound", "-t", "5m"}, "No requests from pod/web-1 in namespace shop in the last 5m.\n"},
		{[]string{"ns/shop", "--direction", "all"}, "No requests to or from ns/shop in the last 1m.\n"},
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
	// The authority a terminal would act on is quoted: no escape
	// sequence reaches the output.
	api.Handle("GET "+vizv1.PathRoutes, answerRoutes(routesFixture))
	checkWatch(t, api, "ROUTE        SUCCESS", "viz", "routes", "deploy/web", "-n", "shop", "--watch")
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
