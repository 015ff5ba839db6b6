package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// edgesOptions are the flags of `mesh viz edges`. An empty Namespace means
// the kubeconfig context's.
type edgesOptions struct {
	Namespace     string
	AllNamespaces bool
	Window        string
	Output        string
}

func newVizEdgesCmd(e *vizEnv) *cobra.Command {
	opts := edgesOptions{Window: "1m", Output: "table"}
	cmd := &cobra.Command{
		Use:   "edges",
		Short: "Show which workloads talk to which, and whether over mTLS",
		Long: "edges lists the connections between workloads over the last --time-window, as the\n" +
			"clients' proxies saw them: source and destination, whether every request went over\n" +
			"mesh TLS, and the identities proven on both ends. A destination outside the mesh has\n" +
			"no identity.",
		Example: "  mesh viz edges -n shop\n  mesh viz edges -A -o wide",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(opts.Output, "table", "wide", "json"); err != nil {
				return err
			}
			if err := checkWindow(opts.Window); err != nil {
				return err
			}
			ns := ""
			if opts.AllNamespaces {
				if opts.Namespace != "" {
					return errors.New("pass -n NAMESPACE or --all-namespaces, not both")
				}
			} else {
				var err error
				if ns, err = e.namespace(opts.Namespace); err != nil {
					return err
				}
			}
			return runEdges(cmd.Context(), e, opts, ns)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Namespace, "namespace", "n", "", "namespace of the source workloads (default: the kubeconfig context's, else default)")
	f.BoolVarP(&opts.AllNamespaces, "all-namespaces", "A", false, "edges from every namespace")
	f.StringVarP(&opts.Window, "time-window", "t", opts.Window, "how far back to look, e.g. 30s, 1m, 10m")
	f.StringVarP(&opts.Output, "output", "o", opts.Output, "output format: table, wide (adds p50, p95 and open TCP connections) or json")
	return cmd
}

func runEdges(ctx context.Context, e *vizEnv, opts edgesOptions, ns string) error {
	conn, err := e.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.close()
	list, err := fetchEdges(conn.ctx, conn.client, conn.base, ns, opts.Window)
	if err != nil {
		if conn.ctx.Err() != nil {
			return conn.ended(ctx)
		}
		return conn.explain(err)
	}
	if opts.Output == "json" {
		return writeJSON(e.Out, list)
	}
	if len(list.Edges) == 0 {
		where := "in namespace " + ns
		if ns == "" {
			where = "in any namespace"
		}
		_, err := fmt.Fprintf(e.Err, "No traffic between workloads %s in the last %s.\n", where, opts.Window)
		return err
	}
	return writeEdgesTable(e.Out, list.Edges, opts.Output == "wide")
}

// The columns of the edges table.
var (
	edgesHeader     = []string{"SRC", "DST", "SRC_NS", "DST_NS", "SECURED", "SUCCESS", "RPS", "LATENCY_P99", "SRC_ID", "DST_ID"}
	edgesWideHeader = []string{"LATENCY_P50", "LATENCY_P95", "TCP_CONN"}
)

// writeEdgesTable prints edges by source, then destination.
func writeEdgesTable(w io.Writer, edges []vizv1.Edge, wide bool) error {
	edges = slices.Clone(edges)
	key := func(r vizv1.Resource) string { return r.Namespace + "\x00" + resourceRef(r) }
	slices.SortStableFunc(edges, func(a, b vizv1.Edge) int {
		if c := strings.Compare(key(a.Src), key(b.Src)); c != 0 {
			return c
		}
		return strings.Compare(key(a.Dst), key(b.Dst))
	})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := edgesHeader
	if wide {
		header = slices.Concat(edgesHeader, edgesWideHeader)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, ed := range edges {
		secured := failMark
		if ed.MTLS {
			secured = okMark
		}
		cells := []string{resourceRef(ed.Src), resourceRef(ed.Dst), orDash(ed.Src.Namespace), orDash(ed.Dst.Namespace),
			secured, fmtSuccess(ed.SuccessRate), fmtRPS(ed.RPS), fmtLatency(ed.LatencyP99), orDash(ed.SrcID), orDash(ed.DstID)}
		if wide {
			cells = append(cells, fmtLatency(ed.LatencyP50), fmtLatency(ed.LatencyP95), fmt.Sprint(ed.TCPConnections))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// orDash returns s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
