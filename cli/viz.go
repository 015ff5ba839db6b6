package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/clientcmd"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/install/manifests"
)

// How often the live views refresh by default.
const (
	statRefresh = 2 * time.Second
	topRefresh  = time.Second
)

// vizConn is an open connection to the viz API.
type vizConn struct {
	// ctx is done when the connection is gone: the command's context
	// ended, or the port-forward broke (context.Cause says which).
	ctx    context.Context
	base   string
	client *http.Client
	close  func()
	// forwardErr, when set, returns the last error the port-forward met,
	// which explains a request that failed on the way.
	forwardErr func() error
}

// explain adds to err, a failed request, what the port-forward last
// reported, if anything.
func (c *vizConn) explain(err error) error {
	var apiErr *vizAPIError
	if err == nil || errors.As(err, &apiErr) || c.forwardErr == nil {
		return err
	}
	if fe := c.forwardErr(); fe != nil {
		return fmt.Errorf("%w; the port-forward to %s reports: %v", err, vizName, fe)
	}
	return err
}

// ended is what a command that ran until the connection's context ended
// returns: nil when the user interrupted it (the command's own context,
// parent, ended), else why the connection is gone.
func (c *vizConn) ended(parent context.Context) error {
	if parent.Err() != nil {
		return nil
	}
	if cause := context.Cause(c.ctx); cause != nil {
		return cause
	}
	return nil
}

// vizConnector opens a connection to the viz API; the connection lasts
// until ctx ends or its close is called.
type vizConnector func(ctx context.Context) (*vizConn, error)

// vizEnv is what the viz commands share: the global options, how they
// reach the API, and how often the live views refresh.
type vizEnv struct {
	*Options
	connect vizConnector
	// statEvery and topEvery are the refresh periods of stat --watch and
	// of top.
	statEvery, topEvery time.Duration
	// open, when set, replaces opening a browser on the dashboard's URL.
	open func(url string)
}

// tty reports whether the output is a terminal, where live views redraw
// in place.
func (e *vizEnv) tty() bool {
	f, ok := e.Out.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// namespace returns ns, or the kubeconfig context's namespace when ns is
// empty.
func (e *vizEnv) namespace(ns string) (string, error) {
	if ns != "" {
		return ns, nil
	}
	ns, err := e.kubeNamespace()
	if err != nil && clientcmd.IsEmptyConfig(errors.Unwrap(err)) {
		return "", ErrNoKubeconfig
	}
	return ns, err
}

func newVizCmd(o *Options) *cobra.Command {
	return newVizCommand(&vizEnv{Options: o, connect: vizPodConnector(o), statEvery: statRefresh, topEvery: topRefresh})
}

// newVizCommand returns `mesh viz` over e, which tests point at a
// stand-in of the API.
func newVizCommand(e *vizEnv) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "viz",
		Short: "Watch live traffic: stats, edges, routes, tap, top and the dashboard",
		Long: "viz shows what the proxies see, as mesh-viz aggregates it: success rates,\n" +
			"request rates and latencies per workload, who talks to whom and over mTLS or not,\n" +
			"and single requests as they happen. It reaches mesh-viz's API (port " + strconv.Itoa(vizv1.Port) + ", on the pod's\n" +
			"loopback only) with a port-forward to a ready mesh-viz pod, so it needs permission to\n" +
			"create pods/portforward in the control plane's namespace. tap goes through the\n" +
			"Kubernetes API instead, and needs the right to tap the namespace (ClusterRole mesh-tap).",
	}
	cmd.AddCommand(
		newVizStatCmd(e),
		newVizEdgesCmd(e),
		newVizRoutesCmd(e),
		newVizTapCmd(e),
		newVizTopCmd(e),
		newVizDashboardCmd(e),
	)
	return cmd
}

// vizName names mesh-viz's Deployment, ServiceAccount and pods' app
// label (install/manifests/35-viz.yaml).
const vizName = "mesh-viz"

// vizSelector selects mesh-viz's pods.
var vizSelector = labels.SelectorFromSet(labels.Set{
	manifests.NameLabel:   vizName,
	manifests.PartOfLabel: manifests.PartOf,
}).String()

// vizPodConnector reaches the viz API with a port-forward to a ready
// mesh-viz pod: the API listens on the pod's loopback, which nothing
// but a port-forward reaches.
func vizPodConnector(o *Options) vizConnector {
	return func(ctx context.Context) (*vizConn, error) {
		k, err := o.kube()
		if err != nil {
			return nil, err
		}
		ns := o.ControlPlaneNamespace
		pod, err := readyPod(ctx, k, ns, vizName, vizSelector)
		if err != nil {
			return nil, err
		}
		f, err := portForward(ctx, k.rest, ns, pod, vizv1.Port)
		if err != nil {
			return nil, err
		}
		return &vizConn{ctx: f.Context(), base: f.URL, client: &http.Client{}, close: f.Close, forwardErr: f.LastError}, nil
	}
}

// readyControllerPod returns the name of a ready controller pod in ns,
// the first by name, or an error that says what to do.
func readyControllerPod(ctx context.Context, k *kube, ns string) (string, error) {
	return readyPod(ctx, k, ns, manifests.ControllerName, controllerSelector)
}

// readyPod returns the name of a ready pod of Deployment name, whose pods
// selector selects, in ns: the first by name, so that successive commands
// see the same one; or an error that says what to do.
func readyPod(ctx context.Context, k *kube, ns, name, selector string) (string, error) {
	pods, err := k.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return "", fmt.Errorf("find the %s pods in namespace %s: %w", name, ns, err)
	}
	if len(pods.Items) == 0 {
		return "", fmt.Errorf("no %s pods in namespace %s: install the mesh with mesh install (it also upgrades a control plane that lacks %s), or pass --control-plane-namespace if it lives elsewhere",
			name, ns, name)
	}
	slices.SortFunc(pods.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	var states []string
	for i := range pods.Items {
		p := &pods.Items[i]
		if podReady(p) && p.DeletionTimestamp == nil {
			return p.Name, nil
		}
		states = append(states, fmt.Sprintf("%s is %s and not ready", p.Name, p.Status.Phase))
	}
	return "", fmt.Errorf("no %s pod in namespace %s is ready (%s): run mesh check to see why",
		name, ns, summarize(states, 3))
}

// vizKind returns the viz API's kind (deploy, pod, svc, ns) for one of
// the names kubectl accepts for it, or "" for any other.
func vizKind(s string) string {
	switch strings.ToLower(s) {
	case "deploy", "deployment", "deployments":
		return "deploy"
	case "po", "pod", "pods":
		return "pod"
	case "svc", "service", "services":
		return "svc"
	case "ns", "namespace", "namespaces":
		return "ns"
	}
	return ""
}

// kindNames are the kinds as a user may write them, for errors.
var kindNames = map[string]string{
	"deploy": "deploy (deployment)",
	"pod":    "pod (po)",
	"svc":    "svc (service)",
	"ns":     "ns (namespace)",
}

// allowedKinds lists kinds for an error message: "deploy (deployment) or
// pod (po)".
func allowedKinds(kinds []string) string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = kindNames[k]
	}
	if len(names) == 1 {
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// parseResource reads KIND/NAME, where KIND is one of allowed (short
// kinds; any of their aliases is accepted). what names the argument or
// flag, for errors.
func parseResource(what, s string, allowed ...string) (kind, name string, err error) {
	k, n, found := strings.Cut(s, "/")
	if !found || k == "" || n == "" || strings.Contains(n, "/") {
		return "", "", fmt.Errorf("%s %q: want KIND/NAME with KIND %s, e.g. %s/web", what, s, allowedKinds(allowed), allowed[0])
	}
	kind = vizKind(k)
	if !slices.Contains(allowed, kind) {
		return "", "", fmt.Errorf("%s %q: kind %q is not one of %s", what, s, k, allowedKinds(allowed))
	}
	return kind, n, nil
}

// displayKinds shortens the API's row kinds the way kubectl abbreviates
// them.
var displayKinds = map[string]string{
	"deployment":  "deploy",
	"statefulset": "sts",
	"daemonset":   "ds",
	"pod":         "po",
	"service":     "svc",
	"namespace":   "ns",
}

// resourceRef writes r as KIND/NAME with kubectl's short kind.
func resourceRef(r vizv1.Resource) string {
	if r.Kind == "" {
		return r.Name
	}
	kind := r.Kind
	if short, ok := displayKinds[kind]; ok {
		kind = short
	}
	return kind + "/" + r.Name
}

// Cells of the tables; "-" stands for what cannot be computed.

func fmtSuccess(rate *float64) string {
	if rate == nil {
		return "-"
	}
	return strconv.FormatFloat(*rate*100, 'f', 2, 64) + "%"
}

func fmtRPS(rps float64) string {
	return strconv.FormatFloat(rps, 'f', 1, 64) + "rps"
}

// fmtLatency writes milliseconds: whole ones from 1ms up, two significant
// digits below.
func fmtLatency(ms *float64) string {
	if ms == nil {
		return "-"
	}
	if *ms >= 1 {
		return strconv.FormatFloat(*ms, 'f', 0, 64) + "ms"
	}
	return strconv.FormatFloat(*ms, 'g', 2, 64) + "ms"
}

func fmtByteRate(b float64) string {
	return strconv.FormatFloat(b, 'f', 1, 64) + "B/s"
}

// safeValue quotes s when it holds spaces, quotes or characters a terminal
// would act on: paths and authorities come from clients, and may be
// anything.
func safeValue(s string) string {
	if s == "" {
		return "-"
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || r == '"' {
			return strconv.Quote(s)
		}
	}
	return s
}

// screen draws successive frames: in place on a terminal, otherwise one
// after another with a blank line between them. It is used from one
// goroutine.
type screen struct {
	w      io.Writer
	tty    bool
	frames int
}

// clearScreen moves the cursor home and clears the screen.
const clearScreen = "\x1b[H\x1b[2J"

func (s *screen) draw(frame []byte) error {
	var b bytes.Buffer
	switch {
	case s.tty:
		b.WriteString(clearScreen)
	case s.frames > 0:
		b.WriteByte('\n')
	}
	b.Write(frame)
	s.frames++
	_, err := s.w.Write(b.Bytes())
	return err
}

// watch draws the frame that frame makes now and every period after it,
// until conn's context ends. A first failure, and any the request's own
// fault (HTTP 4xx), ends it; later ones are written to errOut and the
// watch goes on, as mesh-viz restarting fails a few in a row.
func (e *vizEnv) watch(ctx context.Context, conn *vizConn, period time.Duration, frame func(context.Context) ([]byte, error)) error {
	scr := &screen{w: e.Out, tty: e.tty()}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for first := true; ; first = false {
		b, err := frame(conn.ctx)
		switch {
		case conn.ctx.Err() != nil:
			return conn.ended(ctx)
		case err != nil && (first || requestFault(err)):
			return conn.explain(err)
		case err != nil:
			fmt.Fprintf(e.Err, "%v (trying again in %s)\n", conn.explain(err), period)
		default:
			if err := scr.draw(b); err != nil {
				return err
			}
		}
		select {
		case <-conn.ctx.Done():
			return conn.ended(ctx)
		case <-tick.C:
		}
	}
}

// requestFault reports whether err is the API refusing the request as
// asked (HTTP 4xx): asking again will not help.
func requestFault(err error) bool {
	var apiErr *vizAPIError
	return errors.As(err, &apiErr) && apiErr.Status >= 400 && apiErr.Status < 500
}
