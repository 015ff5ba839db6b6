package cli

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// Event types of the tap stream.
const (
	tapRequest  = "request"
	tapResponse = "response"
	tapError    = "error"
)

// tapOptions are the flags of `mesh viz tap` and `mesh viz top`. An empty
// Namespace means the kubeconfig context's.
type tapOptions struct {
	Namespace string
	Method    string
	Authority string
	Path      string
	MaxRPS    float64
	Output    string
}

// addFilterFlags adds the flags that select what the proxies report.
func (opts *tapOptions) addFilterFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&opts.Namespace, "namespace", "n", "", "namespace of the resource (default: the kubeconfig context's, else default)")
	f.StringVar(&opts.Method, "method", "", "only requests with this HTTP method, e.g. GET")
	f.StringVar(&opts.Authority, "authority", "", "only requests to this authority (host:port)")
	f.StringVar(&opts.Path, "path", "", "only requests whose path starts with this prefix")
	f.Float64Var(&opts.MaxRPS, "max-rps", 0, "at most this many requests per second from each proxy (default: the controller's, 100)")
}

// query checks the filters and makes the query for the resource, whose
// kind is deploy, pod or ns.
func (opts tapOptions) query(kind, name string) (tapQuery, error) {
	if opts.MaxRPS < 0 {
		return tapQuery{}, fmt.Errorf("--max-rps %v: want a positive number of requests per second", opts.MaxRPS)
	}
	if opts.Method != "" && strings.ContainsAny(opts.Method, " \t/") {
		return tapQuery{}, fmt.Errorf("--method %q: want an HTTP method such as GET or POST", opts.Method)
	}
	if opts.Path != "" && !strings.HasPrefix(opts.Path, "/") {
		return tapQuery{}, fmt.Errorf("--path %q: want a path prefix starting with /, e.g. /api", opts.Path)
	}
	q := tapQuery{Namespace: opts.Namespace, Resource: kind + "/" + name, Method: strings.ToUpper(opts.Method),
		Authority: opts.Authority, Path: opts.Path, MaxRPS: opts.MaxRPS}
	if kind == "ns" {
		if opts.Namespace != "" && opts.Namespace != name {
			return tapQuery{}, fmt.Errorf("-n %s and ns/%s name different namespaces: pass one of them", opts.Namespace, name)
		}
		q.Namespace = name
	}
	return q, nil
}

func newVizTapCmd(e *vizEnv) *cobra.Command {
	opts := tapOptions{Output: "text"}
	cmd := &cobra.Command{
		Use:   "tap KIND/NAME | KIND NAME",
		Short: "Watch the requests of a deployment, pod or namespace as they happen",
		Long: "tap prints each request the proxies of a resource see, and its response, until\n" +
			"interrupted: method, authority, path, source and destination, the identities proven\n" +
			"over mesh TLS, status and latency. A request and its response share their id.\n" +
			"KIND is deploy, pod or ns. Problems the controller reports on the way go to stderr.",
		Example: "  mesh viz tap deploy/web -n shop\n" +
			"  mesh viz tap deploy/web -n shop --method GET --path /api --max-rps 10\n" +
			"  mesh viz tap ns/shop -o json",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(opts.Output, "text", "json"); err != nil {
				return err
			}
			kind, name, err := tapTarget(args, "mesh viz tap")
			if err != nil {
				return err
			}
			q, err := opts.query(kind, name)
			if err != nil {
				return err
			}
			if q.Namespace, err = e.namespace(q.Namespace); err != nil {
				return err
			}
			return runTap(cmd.Context(), e, opts.Output, q)
		},
	}
	opts.addFilterFlags(cmd)
	cmd.Flags().StringVarP(&opts.Output, "output", "o", opts.Output, "output format: text (a line per event) or json (one TapEvent per line, as the API sends it)")
	return cmd
}

// tapTarget reads KIND/NAME or KIND NAME, of kind deploy, pod or ns.
func tapTarget(args []string, command string) (kind, name string, err error) {
	switch len(args) {
	case 1:
		return parseResource("resource", args[0], "deploy", "pod", "ns")
	case 2:
		if !strings.Contains(args[0], "/") {
			return parseResource("resource", args[0]+"/"+args[1], "deploy", "pod", "ns")
		}
	}
	return "", "", fmt.Errorf("name one resource: %s deploy/NAME, pod/NAME or ns/NAME", command)
}

// runTap prints the events of the stream until ctx ends.
func runTap(ctx context.Context, e *vizEnv, output string, q tapQuery) error {
	conn, err := e.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.close()
	err = streamTap(conn.ctx, conn.client, conn.base, q, func(line []byte, ev *vizv1.TapEvent) error {
		if ev.Type == tapError {
			fmt.Fprintf(e.Err, "tap: %s\n", ev.Error)
		}
		if output == "json" {
			_, err := fmt.Fprintf(e.Out, "%s\n", line)
			return err
		}
		if s := formatTapEvent(ev); s != "" {
			_, err := fmt.Fprintln(e.Out, s)
			return err
		}
		return nil
	})
	if conn.ctx.Err() != nil {
		return conn.ended(ctx)
	}
	return conn.explain(err)
}

// formatTapEvent writes a request or response as one line of key=value
// pairs, HTTP/2 pseudo-headers first, the way Linkerd's tap does; "" for
// other events.
func formatTapEvent(ev *vizv1.TapEvent) string {
	var b strings.Builder
	kv := func(k, v string) {
		b.WriteString(" " + k + "=" + safeValue(v))
	}
	switch ev.Type {
	case tapRequest:
		b.WriteString("req id=" + safeValue(ev.ID))
		kv(":method", ev.Method)
		kv(":authority", ev.Authority)
		kv(":path", ev.Path)
	case tapResponse:
		b.WriteString("rsp id=" + safeValue(ev.ID))
		b.WriteString(" :status=" + strconv.Itoa(ev.Status))
		if ev.GRPCStatus != nil {
			b.WriteString(" grpc-status=" + strconv.Itoa(*ev.GRPCStatus))
		}
		b.WriteString(" latency=" + fmtLatency(ev.LatencyMs))
		if ev.Success != nil {
			b.WriteString(" success=" + strconv.FormatBool(*ev.Success))
		}
	default:
		return ""
	}
	kv("src", ev.Src)
	kv("dst", ev.Dst)
	if ev.DstWorkload != "" {
		kv("dst_workload", ev.DstWorkload)
	}
	b.WriteString(" tls=" + strconv.FormatBool(ev.ClientID != "" || ev.ServerID != ""))
	if ev.ClientID != "" {
		kv("client_id", ev.ClientID)
	}
	if ev.ServerID != "" {
		kv("server_id", ev.ServerID)
	}
	kv("pod", ev.Pod)
	kv("proxy", proxyDirection(ev.Direction))
	return b.String()
}

// proxyDirection shortens a direction the way Linkerd's tap writes it.
func proxyDirection(d string) string {
	switch d {
	case "inbound":
		return "in"
	case "outbound":
		return "out"
	}
	return d
}

// success reports whether a response event counts as a success: as the
// proxy classified it, else by its status (not 5xx, gRPC status OK).
func success(ev *vizv1.TapEvent) bool {
	switch {
	case ev.Success != nil:
		return *ev.Success
	case ev.GRPCStatus != nil:
		return *ev.GRPCStatus == 0
	}
	return ev.Status < http.StatusInternalServerError
}
