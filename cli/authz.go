package cli

import (
	"cmp"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

// controllerGRPCPort is mesh-controller's gRPC port for proxies (container
// port "grpc" in install/manifests/30-controller.yaml), which serves the
// destination and InboundPolicy APIs over mesh TLS to workloads only.
const controllerGRPCPort = names.DestinationPort

// controllerLocalGRPCPort is the same API in plain text on the
// controller pod's loopback (--grpc-local-addr): no pod reaches it, and a
// port-forward, which dials the pod's loopback, does for a user whose RBAC
// allows pods/portforward in the control plane's namespace.
const controllerLocalGRPCPort = 8087

// defaultAuthzTimeout bounds the wait for the controller's first answer.
const defaultAuthzTimeout = 10 * time.Second

// errNoPolicy is returned when the controller sent no policy in time.
var errNoPolicy = errors.New("no inbound policy from the controller")

// authzOptions are the flags of `mesh authz`. An empty Namespace means the
// kubeconfig context's.
type authzOptions struct {
	Namespace string
	Output    string
	Timeout   time.Duration
}

// policyConn is an open connection to the InboundPolicy API.
type policyConn struct {
	client inboundv1.InboundPolicyClient
	close  func()
	// forwardErr, when set, returns the last error of the port-forward
	// the connection runs over, which explains a call that failed.
	forwardErr func() error
}

// explain adds to err, a failed call, what the port-forward last reported.
func (c *policyConn) explain(err error) error {
	if c.forwardErr == nil {
		return err
	}
	if fe := c.forwardErr(); fe != nil {
		return fmt.Errorf("%w; the port-forward to the controller reports: %v", err, fe)
	}
	return err
}

// policyDialer opens a connection to the InboundPolicy API of the cluster
// k reaches; it lasts until ctx ends or its close is called.
type policyDialer func(ctx context.Context, k *kube) (*policyConn, error)

// authzEnv is what `mesh authz` needs: the global options, and how it
// reaches the controller, which tests replace with an in-process server.
type authzEnv struct {
	*Options
	dial policyDialer
}

func newAuthzCmd(o *Options) *cobra.Command {
	return newAuthzCommand(&authzEnv{Options: o, dial: controllerPolicyDialer(o)})
}

// newAuthzCommand returns `mesh authz` over e.
func newAuthzCommand(e *authzEnv) *cobra.Command {
	opts := authzOptions{Output: "table", Timeout: defaultAuthzTimeout}
	cmd := &cobra.Command{
		Use:   "authz KIND/NAME | KIND NAME | POD",
		Short: "Show who may connect to each port of a pod: Servers, policies and authentications",
		Long: "authz shows the inbound policy mesh-controller serves to a pod's proxy: for each\n" +
			"port the pod's containers declare and each port a Server selects, the Server, its\n" +
			"protocol, and the AuthorizationPolicies that allow clients with the authentications\n" +
			"each requires (mesh TLS identities, client networks). A client is allowed when every\n" +
			"authentication of one of the policies matches it; a Server without a policy denies\n" +
			"every client. The last row, PORT *, is the default policy of every other port;\n" +
			"below the table come the audit mode and the kubelet probes, which always get through.\n" +
			"PROTOCOL is the Server's proxyProtocol; unknown means the proxy detects it.\n\n" +
			"For a deployment, statefulset or daemonset, authz shows the policy of one of its\n" +
			"running pods (ready ones first, by name) and says which. It reaches the controller's\n" +
			"loopback gRPC port " + strconv.Itoa(controllerLocalGRPCPort) + " with a port-forward to a ready controller pod, so it\n" +
			"needs permission to create pods/portforward in the control plane's namespace.",
		Example: "  mesh authz -n shop deploy/web\n" +
			"  mesh authz -n shop pod/web-5d8f7c-a -o yaml",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(opts.Output, "table", "json", "yaml"); err != nil {
				return err
			}
			if opts.Timeout <= 0 {
				return fmt.Errorf("--timeout %s: want a positive duration", opts.Timeout)
			}
			t, err := parseAuthzTarget(args)
			if err != nil {
				return err
			}
			return runAuthz(cmd.Context(), e, opts, t)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Namespace, "namespace", "n", "", "namespace of the resource (default: the kubeconfig context's, else default)")
	f.StringVarP(&opts.Output, "output", "o", opts.Output, "output format: table, json or yaml")
	f.DurationVar(&opts.Timeout, "timeout", opts.Timeout, "how long to wait for the controller's answer")
	return cmd
}

// authzTarget is what authz was asked about: a pod, or a workload whose
// pods it picks one of. Kind is "pod", "deployment", "statefulset" or
// "daemonset".
type authzTarget struct {
	Kind, Name string
}

func (t authzTarget) String() string { return t.Kind + "/" + t.Name }

// authzKind returns the kind for one of the names kubectl accepts for it,
// or "" for any other.
func authzKind(s string) string {
	switch strings.ToLower(s) {
	case "po", "pod", "pods":
		return "pod"
	case "deploy", "deployment", "deployments":
		return "deployment"
	case "sts", "statefulset", "statefulsets":
		return "statefulset"
	case "ds", "daemonset", "daemonsets":
		return "daemonset"
	}
	return ""
}

const authzKinds = "pod (po), deploy (deployment), sts (statefulset) or ds (daemonset)"

// parseAuthzTarget reads KIND/NAME, KIND NAME, or a pod's NAME.
func parseAuthzTarget(args []string) (authzTarget, error) {
	var kind, name string
	switch {
	case len(args) == 2:
		if strings.Contains(args[0], "/") {
			return authzTarget{}, fmt.Errorf("%q %q: name the resource as KIND NAME or KIND/NAME, not both", args[0], args[1])
		}
		kind, name = args[0], args[1]
	case strings.Contains(args[0], "/"):
		kind, name, _ = strings.Cut(args[0], "/")
		if kind == "" || name == "" || strings.Contains(name, "/") {
			return authzTarget{}, fmt.Errorf("%q: want KIND/NAME, e.g. deploy/web", args[0])
		}
	default:
		kind, name = "pod", args[0]
	}
	k := authzKind(kind)
	if k == "" {
		return authzTarget{}, fmt.Errorf("unknown kind %q: want %s", kind, authzKinds)
	}
	return authzTarget{Kind: k, Name: name}, nil
}

// runAuthz finds the pod, asks the controller for its policy and prints it.
func runAuthz(ctx context.Context, e *authzEnv, opts authzOptions, t authzTarget) error {
	k, err := e.kube()
	if err != nil {
		return err
	}
	ns := opts.Namespace
	if ns == "" {
		if ns, err = e.kubeNamespace(); err != nil {
			return err
		}
	}
	pod, picked, err := resolvePod(ctx, k.client, ns, t)
	if err != nil {
		return err
	}
	conn, err := e.dial(ctx, k)
	if err != nil {
		return err
	}
	defer conn.close()
	policy, err := firstPolicy(ctx, conn.client, ns, pod.Name, opts.Timeout)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return conn.explain(err)
	}
	report := newAuthzReport(pod, picked, policy)
	if !report.Meshed {
		fmt.Fprintf(e.Err, "warning: pod %s/%s has no %s container: nothing enforces this policy; annotate its namespace %s=%s and restart it\n",
			ns, pod.Name, names.ProxyContainerName, names.AnnotationInject, names.Enabled)
	}
	return writeAuthz(e.Out, report, opts.Output)
}

// pickedPod says how a workload's pod was picked.
type pickedPod struct {
	// Workload is the workload asked about; Running how many running pods
	// it has.
	Workload authzTarget
	Running  int
}

// resolvePod returns the pod t names or, for a workload, one of its
// running pods (a ready one first, then by name) and how it was picked
// (nil for a pod).
func resolvePod(ctx context.Context, client kubernetes.Interface, ns string, t authzTarget) (*corev1.Pod, *pickedPod, error) {
	if t.Kind == "pod" {
		pod, err := client.CoreV1().Pods(ns).Get(ctx, t.Name, metav1.GetOptions{})
		if err != nil {
			return nil, nil, getError(t, ns, err)
		}
		return pod, nil, nil
	}
	selector, err := workloadSelector(ctx, client, ns, t)
	if err != nil {
		return nil, nil, err
	}
	list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, nil, fmt.Errorf("list the pods of %s in namespace %s: %w", t, ns, err)
	}
	running := slices.DeleteFunc(list.Items, func(p corev1.Pod) bool {
		return p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil
	})
	if len(running) == 0 {
		return nil, nil, fmt.Errorf("%s in namespace %s has no running pod (of %d): the policy is the pod's; wait for one to run, or name a pod",
			t, ns, len(list.Items))
	}
	slices.SortFunc(running, func(a, b corev1.Pod) int {
		if ra, rb := podReady(&a), podReady(&b); ra != rb {
			if ra {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return &running[0], &pickedPod{Workload: t, Running: len(running)}, nil
}

// workloadSelector returns the label selector of workload t's pods.
func workloadSelector(ctx context.Context, client kubernetes.Interface, ns string, t authzTarget) (string, error) {
	var (
		sel *metav1.LabelSelector
		err error
	)
	apps := client.AppsV1()
	switch t.Kind {
	case "deployment":
		obj, e := apps.Deployments(ns).Get(ctx, t.Name, metav1.GetOptions{})
		if err = e; err == nil {
			sel = obj.Spec.Selector
		}
	case "statefulset":
		obj, e := apps.StatefulSets(ns).Get(ctx, t.Name, metav1.GetOptions{})
		if err = e; err == nil {
			sel = obj.Spec.Selector
		}
	case "daemonset":
		obj, e := apps.DaemonSets(ns).Get(ctx, t.Name, metav1.GetOptions{})
		if err = e; err == nil {
			sel = obj.Spec.Selector
		}
	default:
		return "", fmt.Errorf("kind %q: want %s", t.Kind, authzKinds)
	}
	if err != nil {
		return "", getError(t, ns, err)
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return "", fmt.Errorf("%s in namespace %s: its selector: %w", t, ns, err)
	}
	if s.Empty() {
		return "", fmt.Errorf("%s in namespace %s has an empty selector: name one of its pods instead", t, ns)
	}
	return s.String(), nil
}

// getError explains a failed GET of t.
func getError(t authzTarget, ns string, err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s not found in namespace %s", t, ns)
	}
	return fmt.Errorf("get %s in namespace %s: %w", t, ns, err)
}

// controllerPolicyDialer reaches the InboundPolicy API with a port-forward
// to a ready controller pod's loopback gRPC port, which answers in plain
// text about any pod: the port-forward is the authorization. (The pods'
// port would ask for a workload's certificate and answer only about that
// workload's own pod.)
func controllerPolicyDialer(o *Options) policyDialer {
	return func(ctx context.Context, k *kube) (*policyConn, error) {
		ns := o.ControlPlaneNamespace
		pod, err := readyControllerPod(ctx, k, ns)
		if err != nil {
			return nil, err
		}
		f, err := portForward(ctx, k.rest, ns, pod, controllerLocalGRPCPort)
		if err != nil {
			return nil, fmt.Errorf("%w (is the mesh installed? run mesh check)", err)
		}
		target := "passthrough:///" + strings.TrimPrefix(f.URL, "http://")
		cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("gRPC client for %s: %w", target, err)
		}
		return &policyConn{
			client:     inboundv1.NewInboundPolicyClient(cc),
			close:      func() { cc.Close(); f.Close() },
			forwardErr: f.LastError,
		}, nil
	}
}

// firstPolicy returns the first PodPolicy of a Watch of ns/pod, waiting
// at most timeout for it.
func firstPolicy(ctx context.Context, client inboundv1.InboundPolicyClient, ns, pod string, timeout time.Duration) (*inboundv1.PodPolicy, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stream, err := client.Watch(wctx, &inboundv1.WatchRequest{Namespace: ns, Pod: pod})
	var policy *inboundv1.PodPolicy
	if err == nil {
		policy, err = stream.Recv()
	}
	if err == nil {
		return policy, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	ref := ns + "/" + pod
	// The deadline reaches the server too, which may end the stream (EOF)
	// a moment before the context here says it expired, as may gRPC's own
	// timer (DeadlineExceeded): past the deadline, the time ran out.
	if dl, _ := wctx.Deadline(); errors.Is(wctx.Err(), context.DeadlineExceeded) || !time.Now().Before(dl) {
		return nil, fmt.Errorf("%w for pod %s within %s: the controller answers once it knows the pod; if the pod is new try again, else is the mesh installed and running? run mesh check",
			errNoPolicy, ref, timeout)
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unimplemented:
		return nil, fmt.Errorf("%s does not serve the InboundPolicy API (%s): is it older than this mesh binary? run mesh check", manifests.ControllerName, st.Message())
	case codes.Unavailable:
		return nil, fmt.Errorf("%w for pod %s: the controller's loopback gRPC port %d did not answer (%s): is the mesh installed, and its controller as new as this mesh binary? run mesh check",
			errNoPolicy, ref, controllerLocalGRPCPort, st.Message())
	case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated:
		return nil, fmt.Errorf("%s refused the policy of pod %s: %s: %s", manifests.ControllerName, ref, st.Code(), st.Message())
	}
	return nil, fmt.Errorf("%w for pod %s: %s: %s", errNoPolicy, ref, st.Code(), st.Message())
}

// authzReport is what `mesh authz` prints, and its JSON and YAML.
type authzReport struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// Workload is KIND/NAME of the workload the pod was picked from, ""
	// when a pod was asked for; RunningPods how many it runs.
	Workload    string `json:"workload,omitempty"`
	RunningPods int    `json:"runningPods,omitempty"`
	// Meshed is whether the pod has a proxy to enforce the policy.
	Meshed   bool   `json:"meshed"`
	Revision string `json:"revision,omitempty"`
	// Ports are the ports the pod's containers declare and those Servers
	// select, by number.
	Ports []authzPort `json:"ports"`
	// DefaultPolicy and DefaultAuthorizations apply to every port no
	// Server selects.
	DefaultPolicy         string               `json:"defaultPolicy"`
	DefaultAuthorizations []authzAuthorization `json:"defaultAuthorizations"`
	// Audit: what no authorization allows is let through, and counted
	// and logged as a would-be denial.
	Audit bool `json:"audit"`
	// Probes are always allowed.
	Probes []authzProbe `json:"probes"`
}

// authzPort is the policy of one port.
type authzPort struct {
	Port uint32 `json:"port"`
	// Name is the container port's name, when the pod declares one.
	Name string `json:"name,omitempty"`
	// Server selects the port; "" when none does, and the default applies.
	Server string `json:"server,omitempty"`
	// Protocol is the Server's proxyProtocol: unknown (detected), HTTP/1,
	// HTTP/2, gRPC, opaque or TLS.
	Protocol string `json:"protocol"`
	// Authorizations allow clients; none denies every client.
	Authorizations []authzAuthorization `json:"authorizations"`
	// Routes are the HTTPRoutes or GRPCRoutes attached to the Server: with
	// any, a request must match one of their rules (else 404), and is
	// allowed by its route's authorizations or the port's.
	Routes []authzRoute `json:"routes,omitempty"`
	// RateLimit is the HTTPLocalRateLimitPolicy on the Server; nil: none.
	RateLimit *authzRateLimit `json:"rateLimit,omitempty"`
}

// authzRoute is an inbound route of a port.
type authzRoute struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Rules are the names of the route's rules the proxy matches, in the
	// order it tries them ("3" for an unnamed rule, its index).
	Rules []string `json:"rules"`
	// Authorizations allow clients on the requests that match the route,
	// besides the port's own.
	Authorizations []authzAuthorization `json:"authorizations"`
}

// authzRateLimit is a port's rate limit, in requests per second; 0: no
// such limit.
type authzRateLimit struct {
	Name        string              `json:"name"`
	TotalRPS    uint32              `json:"totalRequestsPerSecond,omitempty"`
	IdentityRPS uint32              `json:"identityRequestsPerSecond,omitempty"`
	Overrides   []authzRateOverride `json:"overrides,omitempty"`
}

// authzRateOverride is a limit shared by the clients whose identity
// matches one of Identities, instead of IdentityRPS.
type authzRateOverride struct {
	RPS        uint32   `json:"requestsPerSecond"`
	Identities []string `json:"identities"`
}

// authzAuthorization allows the clients that match all its
// authentications (any client when it has none).
type authzAuthorization struct {
	Name            string                `json:"name"`
	Authentications []authzAuthentication `json:"authentications"`
}

// authzAuthentication is one condition on the client: of kind meshTLS, a
// mesh TLS identity matching one of Identities; of kind networks, an
// address in one of Networks.
type authzAuthentication struct {
	Name       string         `json:"name"`
	Kind       string         `json:"kind"`
	Identities []string       `json:"identities,omitempty"`
	Networks   []authzNetwork `json:"networks,omitempty"`
}

// Values of authzAuthentication.Kind.
const (
	authnMeshTLS  = "meshTLS"
	authnNetworks = "networks"
)

type authzNetwork struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}

// authzProbe is a kubelet probe's port and path.
type authzProbe struct {
	Port uint32 `json:"port"`
	Path string `json:"path"`
}

// newAuthzReport lays out p, the policy of pod; picked says how the pod
// was picked, nil when it was asked for.
func newAuthzReport(pod *corev1.Pod, picked *pickedPod, p *inboundv1.PodPolicy) authzReport {
	r := authzReport{
		Namespace:             pod.Namespace,
		Pod:                   pod.Name,
		Meshed:                hasProxy(pod),
		Revision:              p.GetRevision(),
		Ports:                 []authzPort{},
		DefaultPolicy:         p.GetDefaultPolicy(),
		DefaultAuthorizations: authorizations(p.GetDefaultAuthorizations()),
		Audit:                 p.GetAudit(),
		Probes:                []authzProbe{},
	}
	if picked != nil {
		r.Workload, r.RunningPods = picked.Workload.String(), picked.Running
	}
	names := containerPorts(pod)
	seen := map[uint32]bool{}
	for _, pp := range p.GetPorts() {
		if seen[pp.GetPort()] {
			continue
		}
		seen[pp.GetPort()] = true
		r.Ports = append(r.Ports, authzPort{
			Port: pp.GetPort(), Name: names[pp.GetPort()], Server: pp.GetServer(),
			Protocol: protocolName(pp.GetProtocol()), Authorizations: authorizations(pp.GetAuthorizations()),
			Routes: inboundRoutes(pp), RateLimit: rateLimit(pp.GetRateLimit()),
		})
	}
	for port, name := range names {
		if !seen[port] {
			r.Ports = append(r.Ports, authzPort{
				Port: port, Name: name, Protocol: protocolName(inboundv1.ProxyProtocol_PROXY_PROTOCOL_UNKNOWN),
				Authorizations: r.DefaultAuthorizations,
			})
		}
	}
	slices.SortFunc(r.Ports, func(a, b authzPort) int { return cmp.Compare(a.Port, b.Port) })
	for _, pr := range p.GetProbes() {
		r.Probes = append(r.Probes, authzProbe{Port: pr.GetPort(), Path: pr.GetPath()})
	}
	return r
}

// inboundRoutes lays out the routes of pp with the names of their rules,
// each once, in the order the proxy tries their matches.
func inboundRoutes(pp *inboundv1.PortPolicy) []authzRoute {
	var out []authzRoute
	for _, ir := range pp.GetRoutes() {
		out = append(out, authzRoute{Kind: ir.GetKind(), Name: ir.GetName(), Rules: []string{},
			Authorizations: authorizations(ir.GetAuthorizations())})
	}
	for _, rr := range pp.GetRouteRules() {
		i := int(rr.GetRoute())
		if i >= len(out) {
			continue // names a route the policy does not carry: nothing to show it under
		}
		if !slices.Contains(out[i].Rules, rr.GetRuleName()) {
			out[i].Rules = append(out[i].Rules, rr.GetRuleName())
		}
	}
	return out
}

// rateLimit lays out rl; nil for none.
func rateLimit(rl *inboundv1.RateLimit) *authzRateLimit {
	if rl == nil {
		return nil
	}
	out := &authzRateLimit{Name: rl.GetName(), TotalRPS: rl.GetTotalRps(), IdentityRPS: rl.GetIdentityRps()}
	for _, o := range rl.GetOverrides() {
		if o.GetRps() > 0 { // ignored by the proxy, as the API says
			out.Overrides = append(out.Overrides, authzRateOverride{RPS: o.GetRps(), Identities: o.GetIdentities()})
		}
	}
	return out
}

// containerPorts returns the TCP ports the pod's containers declare
// (native sidecars too, the proxy's own ports not), with their names.
func containerPorts(pod *corev1.Pod) map[uint32]string {
	var serving []corev1.Container
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			serving = append(serving, c)
		}
	}
	ports := map[uint32]string{}
	for _, c := range append(serving, pod.Spec.Containers...) {
		if c.Name == names.ProxyContainerName {
			continue
		}
		for _, p := range c.Ports {
			if (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) && p.ContainerPort > 0 {
				if _, ok := ports[uint32(p.ContainerPort)]; !ok {
					ports[uint32(p.ContainerPort)] = p.Name
				}
			}
		}
	}
	return ports
}

func authorizations(in []*inboundv1.Authorization) []authzAuthorization {
	out := make([]authzAuthorization, 0, len(in))
	for _, a := range in {
		az := authzAuthorization{Name: a.GetName(), Authentications: []authzAuthentication{}}
		for _, req := range a.GetRequired() {
			an := authzAuthentication{Name: req.GetName()}
			switch k := req.GetKind().(type) {
			case *inboundv1.Authentication_MeshTls:
				an.Kind, an.Identities = authnMeshTLS, slices.Clone(k.MeshTls.GetPatterns())
			case *inboundv1.Authentication_Networks:
				an.Kind = authnNetworks
				for _, n := range k.Networks.GetNetworks() {
					an.Networks = append(an.Networks, authzNetwork{CIDR: n.GetCidr(), Except: slices.Clone(n.GetExcept())})
				}
			}
			az.Authentications = append(az.Authentications, an)
		}
		out = append(out, az)
	}
	return out
}

// protocolName writes p as Server.spec.proxyProtocol spells it.
func protocolName(p inboundv1.ProxyProtocol) string {
	switch p {
	case inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP1:
		return "HTTP/1"
	case inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP2:
		return "HTTP/2"
	case inboundv1.ProxyProtocol_PROXY_PROTOCOL_GRPC:
		return "gRPC"
	case inboundv1.ProxyProtocol_PROXY_PROTOCOL_OPAQUE:
		return "opaque"
	case inboundv1.ProxyProtocol_PROXY_PROTOCOL_TLS:
		return "TLS"
	}
	return "unknown"
}

// writeAuthz prints r in format: table, json or yaml.
func writeAuthz(w io.Writer, r authzReport, format string) error {
	if format != "table" {
		return writeStructured(w, r, format)
	}
	return writeAuthzTable(w, r)
}

// writeAuthzTable prints r as a line about the pod, a table with a row per
// port and authorization, the default's row (PORT *), and the audit mode
// and probes.
func writeAuthzTable(w io.Writer, r authzReport) error {
	head := "Pod " + r.Namespace + "/" + r.Pod
	if r.Workload != "" {
		head += fmt.Sprintf(", 1 of %d running %s of %s", r.RunningPods, plural(r.RunningPods, "pod", "pods"), r.Workload)
	}
	if r.Revision != "" {
		head += ", policy revision " + r.Revision
	}
	fmt.Fprintln(w, head)
	if !r.Meshed {
		fmt.Fprintf(w, "The pod has no %s: nothing enforces this policy.\n", names.ProxyContainerName)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tSERVER\tPROTOCOL\tAUTHORIZATION\tAUTHENTICATIONS")
	for _, p := range r.Ports {
		server := cmp.Or(p.Server, "default")
		authz := p.Authorizations
		if p.Server == "" {
			authz = r.DefaultAuthorizations
		}
		writeAuthzRows(tw, strconv.FormatUint(uint64(p.Port), 10), server, p.Protocol, authz, r.denied(p.Server))
	}
	writeAuthzRows(tw, "*", "default", protocolName(inboundv1.ProxyProtocol_PROXY_PROTOCOL_UNKNOWN), r.DefaultAuthorizations, r.denied(""))
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeAuthzRoutes(w, r.Ports); err != nil {
		return err
	}
	if err := writeAuthzRateLimits(w, r.Ports); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Default policy: %s, for every port no Server selects (PORT *)\n", cmp.Or(r.DefaultPolicy, "unknown"))
	if r.Audit {
		fmt.Fprintln(w, "Audit: on: what no authorization allows is let through, counted and logged as a would-be denial")
	} else {
		fmt.Fprintln(w, "Audit: off")
	}
	probes := "none declared"
	if len(r.Probes) > 0 {
		list := make([]string, len(r.Probes))
		for i, p := range r.Probes {
			list[i] = ":" + strconv.FormatUint(uint64(p.Port), 10) + safeValue(p.Path)
		}
		probes = strings.Join(list, ", ")
	}
	_, err := fmt.Fprintf(w, "Probes always allowed: %s\n", probes)
	return err
}

// writeAuthzRoutes writes the table of the ports' inbound routes, a row
// per route and authorization; nothing when no port has routes.
func writeAuthzRoutes(w io.Writer, ports []authzPort) error {
	if !slices.ContainsFunc(ports, func(p authzPort) bool { return len(p.Routes) > 0 }) {
		return nil
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Inbound routes: a request to the port must match one of its routes' rules, else 404 (gRPC: UNIMPLEMENTED);")
	fmt.Fprintln(w, "it is allowed by its route's authorizations or by the port's above.")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tROUTE\tRULES\tAUTHORIZATION\tAUTHENTICATIONS")
	for _, p := range ports {
		port := strconv.FormatUint(uint64(p.Port), 10)
		for _, rt := range p.Routes {
			route := safeValue(rt.Kind + "/" + rt.Name)
			rules := make([]string, len(rt.Rules))
			for i, name := range rt.Rules {
				rules[i] = safeValue(name)
			}
			ruleList := cmp.Or(strings.Join(rules, ", "), "-")
			if len(rt.Authorizations) == 0 {
				fmt.Fprintf(tw, "%s\t%s\t%s\t-\tonly the port's authorizations\n", port, route, ruleList)
			}
			for _, a := range rt.Authorizations {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", port, route, ruleList, safeValue(a.Name), describeAuthentications(a.Authentications))
			}
		}
	}
	return tw.Flush()
}

// writeAuthzRateLimits writes the table of the ports' rate limits;
// nothing when no port has one.
func writeAuthzRateLimits(w io.Writer, ports []authzPort) error {
	if !slices.ContainsFunc(ports, func(p authzPort) bool { return p.RateLimit != nil }) {
		return nil
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Rate limits: a request past one gets 429 with Retry-After (gRPC: RESOURCE_EXHAUSTED).")
	fmt.Fprintln(w)
	rps := func(n uint32) string {
		if n == 0 {
			return "-"
		}
		return strconv.FormatUint(uint64(n), 10) + "/s"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tPOLICY\tTOTAL\tPER IDENTITY\tOVERRIDES")
	for _, p := range ports {
		rl := p.RateLimit
		if rl == nil {
			continue
		}
		overrides := make([]string, len(rl.Overrides))
		for i, o := range rl.Overrides {
			ids := make([]string, len(o.Identities))
			for j, id := range o.Identities {
				ids[j] = safeValue(id)
			}
			overrides[i] = rps(o.RPS) + " for " + strings.Join(ids, ", ")
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", p.Port, safeValue(rl.Name), rps(rl.TotalRPS), rps(rl.IdentityRPS),
			cmp.Or(strings.Join(overrides, "; "), "-"))
	}
	return tw.Flush()
}

// writeAuthzRows writes a row per authorization of a port, or one saying
// that nothing is allowed.
func writeAuthzRows(w io.Writer, port, server, protocol string, authz []authzAuthorization, denied string) {
	if len(authz) == 0 {
		fmt.Fprintf(w, "%s\t%s\t%s\t-\t%s\n", port, safeValue(server), protocol, denied)
		return
	}
	for _, a := range authz {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", port, safeValue(server), protocol, safeValue(a.Name), describeAuthentications(a.Authentications))
	}
}

// denied says what happens on a port without authorizations: that of
// server, or a default port when server is "".
func (r authzReport) denied(server string) string {
	switch {
	case server != "" && r.Audit:
		return "none: no AuthorizationPolicy targets Server " + server + "; audit lets every client through and counts it"
	case server != "":
		return "none: no AuthorizationPolicy targets Server " + server + ", so every client is denied"
	case r.Audit:
		return "none: default " + cmp.Or(r.DefaultPolicy, "policy") + " lets every client through and counts it"
	}
	return "none: default " + cmp.Or(r.DefaultPolicy, "policy") + " denies every client"
}

// describeAuthentications writes what a client must match: every one of
// as, "any client" when there is none.
func describeAuthentications(as []authzAuthentication) string {
	if len(as) == 0 {
		return "any client"
	}
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = safeValue(a.Name) + " (" + describeAuthentication(a) + ")"
	}
	return strings.Join(parts, " and ")
}

// describeAuthentication writes what a matches: "mTLS: ID, ID" or
// "from CIDR except [CIDR, CIDR], CIDR".
func describeAuthentication(a authzAuthentication) string {
	switch a.Kind {
	case authnMeshTLS:
		if len(a.Identities) == 0 {
			return "mTLS: no identity"
		}
		ids := make([]string, len(a.Identities))
		for i, id := range a.Identities {
			ids[i] = safeValue(id)
			if id == "*" {
				ids[i] = "any mesh identity"
			}
		}
		return "mTLS: " + strings.Join(ids, ", ")
	case authnNetworks:
		if len(a.Networks) == 0 {
			return "from no network"
		}
		nets := make([]string, len(a.Networks))
		for i, n := range a.Networks {
			nets[i] = safeValue(n.CIDR)
			if len(n.Except) > 0 {
				except := make([]string, len(n.Except))
				for j, e := range n.Except {
					except[j] = safeValue(e)
				}
				nets[i] += " except [" + strings.Join(except, ", ") + "]"
			}
		}
		return "from " + strings.Join(nets, ", ")
	}
	return "a condition this mesh binary does not know: see -o json"
}
