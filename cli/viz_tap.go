package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/install/manifests"
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
			"KIND is deploy, pod or ns. Problems mesh-viz reports on the way go to stderr.\n\n" +
			"tap goes through the Kubernetes API server (APIService v1alpha1.tap.mesh.dev) with the\n" +
			"kubeconfig's credentials. It needs the watch verb on the resource's tap subresource in\n" +
			"group tap.mesh.dev, which ClusterRole mesh-tap grants; an admin binds it per namespace:\n" +
			"  kubectl create rolebinding mesh-tap-alice -n shop --clusterrole=mesh-tap --user=alice",
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
	conn, err := e.tapConnect(ctx)
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

// The tap API (controller/tapapi), an aggregated API of the Kubernetes
// API server: the API server authenticates the user with whatever the
// kubeconfig holds (token, client certificate, exec plugin, OIDC), checks
// RBAC on the path, and forwards to mesh-viz, which checks again with a
// SubjectAccessReview.
const (
	tapAPIPrefix = "/apis/tap.mesh.dev/v1alpha1/watch/namespaces/"
	tapAPIGroup  = "tap.mesh.dev"
)

// tapResources maps tap's kinds to the tap API's resources; a namespace
// is tapped as a whole, with no resource in the path.
var tapResources = map[string]string{"deploy": "deployments", "pod": "pods", "ns": ""}

// tapConnect reaches the tap API through the Kubernetes API server with
// the kubeconfig's own credentials. The connection is only a client: it
// lasts as long as ctx.
func (e *vizEnv) tapConnect(ctx context.Context) (*vizConn, error) {
	k, err := e.kube()
	if err != nil {
		return nil, err
	}
	// k.rest has no request timeout: a tap lasts as long as the user watches.
	client, err := rest.HTTPClientFor(k.rest)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	server, _, err := rest.DefaultServerUrlFor(k.rest)
	if err != nil {
		return nil, fmt.Errorf("kubernetes API server address: %w", err)
	}
	return &vizConn{ctx: ctx, base: strings.TrimSuffix(server.String(), "/"), client: client, close: client.CloseIdleConnections}, nil
}

// path is the tap API's path for q's resource.
func (q tapQuery) path() (string, error) {
	kind, name, _ := strings.Cut(q.Resource, "/")
	plural, ok := tapResources[kind]
	switch {
	case !ok:
		return "", fmt.Errorf("viz: tap: cannot tap %q: tap takes deploy, pod or ns", q.Resource)
	case plural == "":
		return tapAPIPrefix + name + "/tap", nil
	case q.Namespace == "":
		return "", fmt.Errorf("viz: tap: no namespace for %s", q.Resource)
	}
	return tapAPIPrefix + q.Namespace + "/" + plural + "/" + name + "/tap", nil
}

// openTap asks the tap API for q's stream and returns the response when
// it is 200 OK; any other answer becomes a *vizAPIError that says what to
// do about it.
func openTap(ctx context.Context, c *http.Client, base string, q tapQuery) (*http.Response, error) {
	path, err := q.path()
	if err != nil {
		return nil, err
	}
	u := base + path
	if v := q.values(); len(v) > 0 {
		u += "?" + v.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("viz: tap: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("viz: tap: GET %s from the Kubernetes API server: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, tapRefused(resp, q)
	}
	return resp, nil
}

// tapRefused explains an answer other than 200. viz's own refusals (no
// such resource, a bad filter) come as its Error body; the API server's
// and the tap API's as a metav1.Status.
func tapRefused(resp *http.Response, q tapQuery) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var vizErr vizv1.Error
	if json.Unmarshal(body, &vizErr) == nil && vizErr.Error != "" {
		return &vizAPIError{Status: resp.StatusCode, Message: vizErr.Error}
	}
	var st metav1.Status
	msg := firstLine(strings.TrimSpace(string(body)))
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" && st.Message != "" {
		msg = st.Message
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	switch resp.StatusCode {
	case http.StatusForbidden:
		// The API server refuses before mesh-viz would, without saying
		// how to grant the permission; mesh-viz's own refusal does.
		if !strings.Contains(msg, "--clusterrole="+manifests.TapClusterRoleName) {
			msg += fmt.Sprintf(": tapping needs the watch verb on the tap resources of group %s; an admin grants it with "+
				"kubectl create rolebinding NAME -n %s --clusterrole=%s --user=USER (or --serviceaccount=NAMESPACE:NAME)",
				tapAPIGroup, q.Namespace, manifests.TapClusterRoleName)
		}
	case http.StatusUnauthorized:
		msg += ": check the kubeconfig's credentials (kubectl auth whoami); if they work, mesh-viz did not accept the API server's front-proxy certificate: run mesh check"
	case http.StatusNotFound, http.StatusServiceUnavailable, http.StatusBadGateway:
		msg = fmt.Sprintf("the tap API (APIService %s) is not available (%s): %s is not installed or not ready; run mesh check",
			manifests.TapAPIServiceName, msg, manifests.TapServiceName)
	}
	return &vizAPIError{Status: resp.StatusCode, Message: msg}
}

// dashboardTap serves the page's tap, the viz API's PathTap query,
// through the tap API with the user's credentials, flushing the stream
// as it comes; refusals are answered as the viz API's Error, which the
// page shows. conn is nil when the API server cannot be reached (connErr
// says why).
func dashboardTap(conn *vizConn, connErr error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if conn == nil {
			writeVizError(w, http.StatusBadGateway, "mesh viz dashboard cannot reach the tap API: "+connErr.Error())
			return
		}
		q, err := pageTapQuery(r.URL.Query())
		if err != nil {
			writeVizError(w, http.StatusBadRequest, err.Error())
			return
		}
		resp, err := openTap(r.Context(), conn.client, conn.base, q)
		if err != nil {
			if r.Context().Err() != nil {
				return // the page went away
			}
			code := http.StatusBadGateway
			if apiErr, ok := errors.AsType[*vizAPIError](err); ok {
				code = apiErr.Status
			}
			writeVizError(w, code, strings.TrimPrefix(err.Error(), "viz: "))
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		relay(w, resp.Body)
	})
}

// relay copies the stream to w, flushing each read, until either side
// ends.
func relay(w http.ResponseWriter, body io.Reader) {
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil || rc.Flush() != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// pageTapQuery reads the page's tap query: namespace and resource
// (required; deploy, pod or ns), and the filters.
func pageTapQuery(v url.Values) (tapQuery, error) {
	for name, vals := range v {
		if !slices.Contains([]string{"namespace", "resource", "method", "authority", "path", "max_rps"}, name) {
			return tapQuery{}, fmt.Errorf("unknown parameter %q", name)
		}
		if len(vals) > 1 {
			return tapQuery{}, fmt.Errorf("parameter %q given %d times", name, len(vals))
		}
	}
	kind, name, err := parseResource("resource", v.Get("resource"), "deploy", "pod", "ns")
	if err != nil {
		return tapQuery{}, err
	}
	opts := tapOptions{Namespace: v.Get("namespace"), Method: v.Get("method"), Authority: v.Get("authority"), Path: v.Get("path")}
	if s := v.Get("max_rps"); s != "" {
		if opts.MaxRPS, err = strconv.ParseFloat(s, 64); err != nil {
			return tapQuery{}, fmt.Errorf("max_rps %q: want a number", s)
		}
	}
	q, err := opts.query(kind, name)
	if err == nil && q.Namespace == "" {
		err = fmt.Errorf("namespace is required for resource %s", q.Resource)
	}
	return q, err
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
	if ev.TraceID != "" {
		kv("trace_id", ev.TraceID) // only for a sampled request: its trace is in the tracing backend
	}
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
