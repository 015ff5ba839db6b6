package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// routesOptions are the flags of `mesh viz routes`. An empty Namespace
// means the kubeconfig context's.
type routesOptions struct {
	Namespace     string
	AllNamespaces bool
	Window        string
	Output        string
	Watch         bool
}

// routesQuery is the query of PathRoutes. Empty fields are left out.
type routesQuery struct {
	Kind, Namespace, Name string
	Window                string
}

func (q routesQuery) values() url.Values {
	return queryValues("kind", q.Kind, "namespace", q.Namespace, "name", q.Name, "window", q.Window)
}

// defaultRoute stands for the requests that matched no route, as
// Linkerd's `linkerd viz routes` shows them.
const defaultRoute = "[default]"

func newVizRoutesCmd(e *vizEnv) *cobra.Command {
	opts := routesOptions{Window: "1m", Output: "table"}
	cmd := &cobra.Command{
		Use:   "routes KIND [NAME] | KIND/NAME",
		Short: "Show success rate, requests per second and latency per route of the requests a resource sends",
		Long: "routes splits the requests that deployments, pods or namespaces sent over the last\n" +
			"--time-window by the route rule they matched and the Service they went to, as the\n" +
			"senders' own proxies counted them: the client's view of its routes. ROUTE is the\n" +
			"HTTPRoute or GRPCRoute, RULE its rule (spec.rules[].name, else its index from 0), and\n" +
			"PARENT the Service the route is attached to. Requests that matched no route, sent to a\n" +
			"Service without one or with only its own retry and timeout policy, are " + defaultRoute + "; a\n" +
			"PARENT of \"-\" is an address mesh-viz knows no Service of (outside the mesh). A proxy\n" +
			"keeps 100 values of each route label, and at most 250 label sets; later ones are\n" +
			"counted under \"other\".\n\n" +
			"Without NAME, every resource of KIND in the namespace, named in a first column;\n" +
			"ns with --all-namespaces, every namespace. -o wide adds the route's kind and\n" +
			"namespace, the Service's namespace, and the requests counted.\n\n" +
			"KIND is deploy, pod or ns, or any name kubectl accepts for them.",
		Example: "  mesh viz routes deploy/web -n shop\n" +
			"  mesh viz routes deploy -n shop -t 5m -o wide\n" +
			"  mesh viz routes ns -A --watch",
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := opts.query(args)
			if err != nil {
				return err
			}
			if !opts.AllNamespaces && q.Namespace == "" {
				if q.Namespace, err = e.namespace(""); err != nil {
					return err
				}
			}
			return runRoutes(cmd.Context(), e, opts, q)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Namespace, "namespace", "n", "", "namespace of the resources (default: the kubeconfig context's, else default)")
	f.BoolVarP(&opts.AllNamespaces, "all-namespaces", "A", false, "with kind ns: every namespace")
	f.StringVarP(&opts.Window, "time-window", "t", opts.Window, "how far back the figures go, e.g. 30s, 1m, 10m")
	f.StringVarP(&opts.Output, "output", "o", opts.Output, "output format: table, wide (adds the route's kind and namespace, the Service's namespace and the requests counted), json or yaml")
	f.BoolVarP(&opts.Watch, "watch", "w", false, "refresh every 2s until interrupted")
	return cmd
}

// query checks the arguments and flags, all but the namespace's default,
// and turns them into the API's query.
func (opts routesOptions) query(args []string) (routesQuery, error) {
	if err := checkOutput(opts.Output, "table", "wide", "json", "yaml"); err != nil {
		return routesQuery{}, err
	}
	if err := checkWindow(opts.Window); err != nil {
		return routesQuery{}, err
	}
	kind, name, err := routesTarget(args)
	if err != nil {
		return routesQuery{}, err
	}
	q := routesQuery{Kind: kind, Name: name, Namespace: opts.Namespace, Window: opts.Window}
	if opts.AllNamespaces {
		if kind != "ns" {
			return routesQuery{}, fmt.Errorf("--all-namespaces works with kind ns only: the viz API answers %s one namespace at a time; pass -n NAMESPACE", kindPlurals[kind])
		}
		if name != "" || opts.Namespace != "" {
			return routesQuery{}, errors.New("name a namespace or pass --all-namespaces, not both")
		}
	}
	if kind == "ns" && name != "" {
		if opts.Namespace != "" && opts.Namespace != name {
			return routesQuery{}, fmt.Errorf("-n %s and ns/%s name different namespaces: pass one of them", opts.Namespace, name)
		}
		q.Namespace = name
	}
	return q, nil
}

// routesTarget reads KIND, KIND NAME or KIND/NAME, of kind deploy, pod or
// ns: a service sends nothing, its clients do.
func routesTarget(args []string) (kind, name string, err error) {
	const usage = "mesh viz routes deploy|pod|ns [NAME]"
	var k string
	switch len(args) {
	case 0:
		return "", "", fmt.Errorf("name a kind: %s", usage)
	case 1:
		var found bool
		if k, name, found = strings.Cut(args[0], "/"); found && (name == "" || strings.Contains(name, "/")) {
			return "", "", fmt.Errorf("%q: want KIND/NAME, e.g. deploy/web", args[0])
		}
	case 2:
		if strings.Contains(args[0], "/") {
			return "", "", fmt.Errorf("%q %q: name the resource as KIND NAME or KIND/NAME, not both", args[0], args[1])
		}
		k, name = args[0], args[1]
	default:
		return "", "", fmt.Errorf("too many arguments: %s", usage)
	}
	switch kind = vizKind(k); kind {
	case "deploy", "pod", "ns":
		return kind, name, nil
	case "svc":
		return "", "", fmt.Errorf("kind %q: routes are the requests a resource sends, and a service sends none; name a deploy, pod or ns of its clients", k)
	}
	return "", "", fmt.Errorf("unknown kind %q: want %s", k, allowedKinds([]string{"deploy", "pod", "ns"}))
}

// fetchRoutes asks PathRoutes.
func fetchRoutes(ctx context.Context, c *http.Client, base string, q routesQuery) (*vizv1.RouteList, error) {
	var list vizv1.RouteList
	if err := getJSON(ctx, c, base, vizv1.PathRoutes, q.values(), &list); err != nil {
		return nil, err
	}
	return &list, nil
}

// runRoutes prints the routes once, or every e.statEvery with --watch.
func runRoutes(ctx context.Context, e *vizEnv, opts routesOptions, q routesQuery) error {
	conn, err := e.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.close()
	if opts.Watch {
		return e.watch(ctx, conn, e.statEvery, func(ctx context.Context) ([]byte, error) {
			b, _, err := opts.frame(ctx, conn, q)
			return b, err
		})
	}
	b, empty, err := opts.frame(conn.ctx, conn, q)
	if err != nil {
		if conn.ctx.Err() != nil {
			return conn.ended(ctx)
		}
		return conn.explain(err)
	}
	w := e.Out
	if empty {
		w = e.Err
	}
	_, err = w.Write(b)
	return err
}

// frame fetches the routes and writes them in opts.Output. A table
// without a route is, instead, a line saying so, and empty is true.
func (opts routesOptions) frame(ctx context.Context, conn *vizConn, q routesQuery) (b []byte, empty bool, err error) {
	list, err := fetchRoutes(ctx, conn.client, conn.base, q)
	if err != nil {
		return nil, false, err
	}
	var buf bytes.Buffer
	switch {
	case opts.Output == "json" || opts.Output == "yaml":
		err = writeStructured(&buf, list, opts.Output)
	case len(list.Routes) == 0:
		empty = true
		fmt.Fprintln(&buf, noRoutes(q))
	default:
		err = writeRoutesTable(&buf, list.Routes, routesLead(q), opts.Output == "wide")
	}
	return buf.Bytes(), empty, err
}

// routesLead is the first column of q's table, naming each route's
// resource, when q asks for more than one: "" when it names one.
func routesLead(q routesQuery) string {
	switch {
	case q.Name != "":
		return ""
	case q.Kind == "ns":
		if q.Namespace != "" {
			return "" // the one namespace -n names
		}
		return "NAMESPACE"
	}
	return "NAME"
}

// noRoutes says that q's resources sent no request in the window.
func noRoutes(q routesQuery) string {
	what := q.Kind + "/" + q.Name + " in namespace " + q.Namespace
	switch {
	case q.Kind == "ns" && q.Name != "":
		what = "ns/" + q.Name
	case q.Kind == "ns" && q.Namespace != "":
		what = "ns/" + q.Namespace
	case q.Kind == "ns":
		what = "any namespace"
	case q.Name == "":
		what = kindPlurals[q.Kind] + " in namespace " + q.Namespace
	}
	return fmt.Sprintf("No requests from %s in the last %s.", what, q.Window)
}

// writeRoutesTable prints routes in the API's order: by resource, then
// Service, route ([default] last) and rule. lead, when not "", heads a
// first column naming each route's resource. wide adds the route's kind
// and namespace, the Service's namespace, and the requests counted.
func writeRoutesTable(w io.Writer, routes []vizv1.Route, lead string, wide bool) error {
	var header []string
	if lead != "" {
		header = append(header, lead)
	}
	header = append(header, "ROUTE", "RULE", "PARENT", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99")
	if wide {
		header = append(header, "KIND", "ROUTE_NS", "PARENT_NS", "REQUESTS")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range routes {
		var cells []string
		if lead != "" {
			cells = append(cells, safeValue(r.Resource.Name))
		}
		route, kind, routeNS := defaultRoute, "-", "-"
		if r.Route != nil {
			route, kind, routeNS = safeValue(r.Route.Name), routeKind(r.Route.Kind), safeValue(r.Route.Namespace)
		}
		parent, parentNS := "-", "-"
		if r.Parent != nil {
			parent, parentNS = safeValue(r.Parent.Name), safeValue(r.Parent.Namespace)
		}
		cells = append(cells, route, safeValue(r.Rule), parent, fmtSuccess(r.SuccessRate), fmtRPS(r.RPS),
			fmtLatency(r.LatencyP50), fmtLatency(r.LatencyP95), fmtLatency(r.LatencyP99))
		if wide {
			cells = append(cells, kind, routeNS, parentNS, strconv.FormatUint(r.Requests, 10))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// routeKind writes a route's kind as the Gateway API spells it.
func routeKind(kind string) string {
	switch kind {
	case vizv1.KindHTTPRoute:
		return "HTTPRoute"
	case vizv1.KindGRPCRoute:
		return "GRPCRoute"
	}
	return safeValue(kind)
}
