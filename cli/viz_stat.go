package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// statOptions are the flags of `mesh viz stat`. An empty Namespace means
// the kubeconfig context's.
type statOptions struct {
	Namespace     string
	AllNamespaces bool
	From, To      string
	Window        string
	Output        string
	Watch         bool
}

// kindPlurals name the API's kinds in messages.
var kindPlurals = map[string]string{"deploy": "deployments", "pod": "pods", "svc": "services", "ns": "namespaces"}

func newVizStatCmd(e *vizEnv) *cobra.Command {
	opts := statOptions{Window: "1m", Output: "table"}
	cmd := &cobra.Command{
		Use:   "stat KIND [NAME] | KIND/NAME",
		Short: "Show success rate, requests per second, latency percentiles and TCP connections",
		Long: "stat shows the traffic of deployments, pods, services or namespaces over the last\n" +
			"--time-window, as their proxies count it: meshed pods, success rate, requests per\n" +
			"second, p50/p95/p99 latency and open TCP connections. Without --from or --to a\n" +
			"workload's figures are the requests it served; --from deploy/X shows what X sent to\n" +
			"each row, --to svc/Y what each row sent to Y.\n\n" +
			"-o wide adds bytes per second, identities, and DENIED_RPS: the inbound HTTP\n" +
			"requests plus TCP connections per second the rows' own proxies refused by\n" +
			"authorization policy (see mesh authz); \"-\" for services and with --from or\n" +
			"--to, whose figures are the clients' side, where nothing is denied.\n\n" +
			"KIND is deploy, pod, svc or ns, or any name kubectl accepts for them (deployment,\n" +
			"po, service, namespaces, ...).",
		Example: "  mesh viz stat deploy -n shop\n" +
			"  mesh viz stat deploy/web -n shop -t 5m -o wide\n" +
			"  mesh viz stat svc -n shop --from deploy/frontend\n" +
			"  mesh viz stat ns -A --watch",
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := opts.query(args)
			if err != nil {
				return err
			}
			if q.Kind != "ns" || !opts.AllNamespaces {
				ns, err := e.namespace(q.Namespace)
				if err != nil {
					return err
				}
				q.Namespace = ns
			}
			return runStat(cmd.Context(), e, opts, q)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Namespace, "namespace", "n", "", "namespace of the resources (default: the kubeconfig context's, else default)")
	f.BoolVarP(&opts.AllNamespaces, "all-namespaces", "A", false, "with kind ns: every namespace")
	f.StringVar(&opts.From, "from", "", "only traffic from this deploy/NAME or pod/NAME, in the same namespace")
	f.StringVar(&opts.To, "to", "", "only traffic to this deploy/NAME or svc/NAME, in the same namespace")
	f.StringVarP(&opts.Window, "time-window", "t", opts.Window, "how far back the figures go, e.g. 30s, 1m, 10m")
	f.StringVarP(&opts.Output, "output", "o", opts.Output, "output format: table, wide (adds bytes per second, denials per second and identities) or json")
	f.BoolVarP(&opts.Watch, "watch", "w", false, "refresh every 2s until interrupted")
	return cmd
}

// query checks the arguments and flags, all but the namespace, and turns
// them into the API's query.
func (opts statOptions) query(args []string) (statQuery, error) {
	if err := checkOutput(opts.Output, "table", "wide", "json"); err != nil {
		return statQuery{}, err
	}
	if err := checkWindow(opts.Window); err != nil {
		return statQuery{}, err
	}
	kind, name, err := statTarget(args)
	if err != nil {
		return statQuery{}, err
	}
	q := statQuery{Kind: kind, Name: name, Namespace: opts.Namespace, Window: opts.Window}
	if opts.AllNamespaces {
		if kind != "ns" {
			return statQuery{}, fmt.Errorf("--all-namespaces works with kind ns only: the viz API answers %s one namespace at a time; pass -n NAMESPACE", kindPlurals[kind])
		}
		if name != "" || opts.Namespace != "" {
			return statQuery{}, errors.New("name a namespace or pass --all-namespaces, not both")
		}
	}
	if kind == "ns" && name != "" {
		q.Namespace = name
	}
	if q.From, q.To, err = opts.direction(kind); err != nil {
		return statQuery{}, err
	}
	return q, nil
}

// direction checks --from and --to and returns them with the API's kinds.
func (opts statOptions) direction(kind string) (from, to string, err error) {
	if opts.From == "" && opts.To == "" {
		return "", "", nil
	}
	switch {
	case opts.From != "" && opts.To != "":
		return "", "", errors.New("pass --from or --to, not both: the figures are one side's view of the traffic")
	case kind == "ns":
		return "", "", errors.New("--from and --to work with kinds deploy, pod and svc, not ns")
	case opts.From != "":
		k, n, err := parseResource("--from", opts.From, "deploy", "pod")
		return k + "/" + n, "", err
	}
	k, n, err := parseResource("--to", opts.To, "deploy", "svc")
	return "", k + "/" + n, err
}

// statTarget reads KIND, KIND NAME or KIND/NAME.
func statTarget(args []string) (kind, name string, err error) {
	const usage = "mesh viz stat deploy|pod|svc|ns [NAME]"
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
	if kind = vizKind(k); kind == "" {
		return "", "", fmt.Errorf("unknown kind %q: want %s", k, allowedKinds([]string{"deploy", "pod", "svc", "ns"}))
	}
	return kind, name, nil
}

// checkWindow validates a --time-window.
func checkWindow(w string) error {
	if d, err := time.ParseDuration(w); err != nil || d <= 0 {
		return fmt.Errorf("--time-window %q: want a positive duration such as 30s, 1m or 10m", w)
	}
	return nil
}

// runStat prints the stats once, or every e.statEvery with --watch.
func runStat(ctx context.Context, e *vizEnv, opts statOptions, q statQuery) error {
	conn, err := e.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.close()
	if !opts.Watch {
		list, err := fetchStat(conn.ctx, conn.client, conn.base, q)
		if err != nil {
			if conn.ctx.Err() != nil {
				return conn.ended(ctx)
			}
			return conn.explain(err)
		}
		if opts.Output == "table" || opts.Output == "wide" {
			if len(list.Rows) == 0 {
				_, err := fmt.Fprintln(e.Err, noRows(q))
				return err
			}
		}
		return writeStat(e.Out, list, opts.Output)
	}
	return e.watch(ctx, conn, e.statEvery, func(ctx context.Context) ([]byte, error) {
		list, err := fetchStat(ctx, conn.client, conn.base, q)
		if err != nil {
			return nil, err
		}
		var b bytes.Buffer
		if opts.Output != "json" && len(list.Rows) == 0 {
			fmt.Fprintln(&b, noRows(q))
			return b.Bytes(), nil
		}
		err = writeStat(&b, list, opts.Output)
		return b.Bytes(), err
	})
}

// noRows says that no resource matched q.
func noRows(q statQuery) string {
	switch {
	case q.Name != "":
		return fmt.Sprintf("No %s %s found in namespace %s.", q.Kind, q.Name, q.Namespace)
	case q.Kind == "ns":
		return "No namespaces found."
	}
	return fmt.Sprintf("No %s found in namespace %s.", kindPlurals[q.Kind], q.Namespace)
}

// writeStat prints list in format: table, wide or json.
func writeStat(w io.Writer, list *vizv1.StatList, format string) error {
	if format == "json" {
		return writeJSON(w, list)
	}
	return writeStatTable(w, list.Rows, format == "wide")
}

// statHeader and statWideHeader are the columns of the table.
var (
	statHeader     = []string{"NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN"}
	statWideHeader = []string{"READ_BYTES/SEC", "WRITE_BYTES/SEC", "DENIED_RPS", "IDENTITY"}
)

// writeStatTable prints rows as a table, by namespace and name. The
// traffic of a workload, pod or namespace without a meshed pod is all
// "-": no proxy counts it. A service's is counted by its meshed clients.
func writeStatTable(w io.Writer, rows []vizv1.StatRow, wide bool) error {
	rows = slices.Clone(rows)
	slices.SortStableFunc(rows, func(a, b vizv1.StatRow) int {
		if c := strings.Compare(a.Resource.Namespace, b.Resource.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Resource.Name, b.Resource.Name)
	})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := statHeader
	if wide {
		header = slices.Concat(statHeader, statWideHeader)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(header))
		for i := range cells {
			cells[i] = "-"
		}
		cells[0] = r.Resource.Name
		cells[1] = strconv.Itoa(r.MeshedPods) + "/" + strconv.Itoa(r.TotalPods)
		if r.MeshedPods > 0 || r.Resource.Kind == "service" {
			copy(cells[2:], []string{fmtSuccess(r.SuccessRate), fmtRPS(r.RPS), fmtLatency(r.LatencyP50),
				fmtLatency(r.LatencyP95), fmtLatency(r.LatencyP99), strconv.FormatUint(r.TCPConnections, 10)})
			if wide {
				copy(cells[len(statHeader):], []string{fmtByteRate(r.ReadBytesPerSec), fmtByteRate(r.WriteBytesPerSec),
					fmtDenied(r.DeniedPerSec), identities(r.Identities)})
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// fmtDenied writes denials per second like RPS; "-" when the API has
// none for the row (vizv1.Stats.Denied).
func fmtDenied(rate *float64) string {
	if rate == nil {
		return "-"
	}
	return fmtRPS(*rate)
}

// identities writes a row's SPIFFE IDs, "-" for none.
func identities(ids []string) string {
	if len(ids) == 0 {
		return "-"
	}
	return strings.Join(ids, ",")
}
