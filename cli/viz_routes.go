package cli

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// routesOptions are the flags of `mesh viz routes`. An empty Namespace
// means the kubeconfig context's.
type routesOptions struct {
	Namespace string
	Direction string
	Window    string
	Output    string
	Watch     bool
}

// routesQuery is the query of PathRoutes. Empty fields are left out.
type routesQuery struct {
	Kind, Namespace, Name string
	Direction             string
	Window                string
}

func (q routesQuery) values() url.Values {
	return queryValues("kind", q.Kind, "namespace", q.Namespace, "name", q.Name,
		"direction", q.Direction, "window", q.Window)
}

func newVizRoutesCmd(e *vizEnv) *cobra.Command {
	opts := routesOptions{Direction: vizv1.DirectionInbound, Window: "1m", Output: "table"}
	cmd := &cobra.Command{
		Use:   "routes KIND/NAME | KIND NAME",
		Short: "Show success rate, requests per second and latency per route of a resource",
		Long: "routes splits the traffic of a deployment, pod or namespace over the last\n" +
			"--time-window by route: the authority (host:port) of the requests, as the resource's\n" +
			"own proxies count it. Inbound routes are the requests it served; outbound ones those\n" +
			"it sent, per destination workload (DST, \"-\" for a destination outside the mesh). A\n" +
			"proxy keeps at most 100 authorities; later ones are counted under \"other\". The busiest\n" +
			"routes come first.\n\n" +
			"KIND is deploy, pod or ns, or any name kubectl accepts for them.",
		Example: "  mesh viz routes deploy/web -n shop\n" +
			"  mesh viz routes deploy web -n shop --direction outbound -t 5m\n" +
			"  mesh viz routes ns/shop --direction all --watch",
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := opts.query(args)
			if err != nil {
				return err
			}
			if q.Namespace, err = e.namespace(q.Namespace); err != nil {
				return err
			}
			return runRoutes(cmd.Context(), e, opts, q)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Namespace, "namespace", "n", "", "namespace of the resource (default: the kubeconfig context's, else default)")
	f.StringVar(&opts.Direction, "direction", opts.Direction, "inbound (requests served), outbound (requests sent) or all")
	f.StringVarP(&opts.Window, "time-window", "t", opts.Window, "how far back the figures go, e.g. 30s, 1m, 10m")
	f.StringVarP(&opts.Output, "output", "o", opts.Output, "output format: table, wide (adds the requests counted, and the destination's namespace) or json")
	f.BoolVarP(&opts.Watch, "watch", "w", false, "refresh every 2s until interrupted")
	return cmd
}

// query checks the arguments and flags, all but the namespace's default,
// and turns them into the API's query.
func (opts routesOptions) query(args []string) (routesQuery, error) {
	if err := checkOutput(opts.Output, "table", "wide", "json"); err != nil {
		return routesQuery{}, err
	}
	if err := checkWindow(opts.Window); err != nil {
		return routesQuery{}, err
	}
	switch opts.Direction {
	case vizv1.DirectionInbound, vizv1.DirectionOutbound, vizv1.DirectionAll:
	default:
		return routesQuery{}, fmt.Errorf("--direction %q: want inbound, outbound or all", opts.Direction)
	}
	kind, name, err := tapTarget(args, "mesh viz routes")
	if err != nil {
		return routesQuery{}, err
	}
	q := routesQuery{Kind: kind, Name: name, Namespace: opts.Namespace, Direction: opts.Direction, Window: opts.Window}
	if kind == "ns" {
		if opts.Namespace != "" && opts.Namespace != name {
			return routesQuery{}, fmt.Errorf("-n %s and ns/%s name different namespaces: pass one of them", opts.Namespace, name)
		}
		q.Namespace = name
	}
	return q, nil
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
	case opts.Output == "json":
		err = writeJSON(&buf, list)
	case len(list.Routes) == 0:
		empty = true
		fmt.Fprintln(&buf, noRoutes(q))
	default:
		err = writeRoutesTable(&buf, list.Routes, q.Direction, opts.Output == "wide")
	}
	return buf.Bytes(), empty, err
}

// noRoutes says that q's resource had no request in the window.
func noRoutes(q routesQuery) string {
	what := map[string]string{
		vizv1.DirectionInbound:  "to",
		vizv1.DirectionOutbound: "from",
		vizv1.DirectionAll:      "to or from",
	}[q.Direction]
	where := " in namespace " + q.Namespace
	if q.Kind == "ns" {
		where = ""
	}
	return fmt.Sprintf("No requests %s %s/%s%s in the last %s.", what, q.Kind, q.Name, where, q.Window)
}

// writeRoutesTable prints routes, the busiest first. The DIRECTION
// column is there when direction is all, DST when outbound routes may
// be; wide adds the requests counted, and DST_NS.
func writeRoutesTable(w io.Writer, routes []vizv1.Route, direction string, wide bool) error {
	routes = slices.Clone(routes)
	slices.SortStableFunc(routes, func(a, b vizv1.Route) int {
		return cmp.Or(cmp.Compare(b.RPS, a.RPS), strings.Compare(a.Authority, b.Authority),
			strings.Compare(a.Direction, b.Direction), strings.Compare(dstRef(a.Dst), dstRef(b.Dst)))
	})
	both, dst := direction == vizv1.DirectionAll, direction != vizv1.DirectionInbound
	header := []string{"ROUTE"}
	if both {
		header = append(header, "DIRECTION")
	}
	if dst {
		header = append(header, "DST")
	}
	header = append(header, "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99")
	if wide {
		if dst {
			header = append(header, "DST_NS")
		}
		header = append(header, "REQUESTS")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range routes {
		cells := []string{safeValue(r.Authority)}
		if both {
			cells = append(cells, r.Direction)
		}
		if dst {
			cells = append(cells, dstRef(r.Dst))
		}
		cells = append(cells, fmtSuccess(r.SuccessRate), fmtRPS(r.RPS),
			fmtLatency(r.LatencyP50), fmtLatency(r.LatencyP95), fmtLatency(r.LatencyP99))
		if wide {
			if dst {
				ns := "-"
				if r.Dst != nil {
					ns = orDash(r.Dst.Namespace)
				}
				cells = append(cells, ns)
			}
			cells = append(cells, strconv.FormatUint(r.Requests, 10))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// dstRef writes a route's destination, "-" for none.
func dstRef(dst *vizv1.Resource) string {
	if dst == nil {
		return "-"
	}
	return resourceRef(*dst)
}
