package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/internal/names"
)

// The proxy's admin endpoints `mesh diagnostics` reads (proxy/admin).
// metrics is served to any client; the others only on the pod's loopback.
const (
	metricsPath      = "metrics"
	destinationsPath = "destinations"
	policyPath       = "policy"
	readyPath        = "ready"
)

// errNoPolicyEndpoint: the proxy serves no /policy.
var errNoPolicyEndpoint = errors.New("the proxy serves no inbound policy")

// adminReader GETs a path of a pod's proxy admin port and returns the
// status and body of the answer, or an error that says why there is none.
type adminReader interface {
	// Public reads an endpoint the proxy serves to any client.
	Public(ctx context.Context, pod *corev1.Pod, path string) (int, []byte, error)
	// Local reads an endpoint the proxy serves only on its loopback.
	Local(ctx context.Context, pod *corev1.Pod, path string) (int, []byte, error)
}

// kubeAdmin reads admin endpoints through the API server. Public ones go
// through the pods/proxy subresource, which dials the pod's IP, and Local
// ones through a port-forward (pods/portforward), which the kubelet dials
// inside the pod's network namespace, to 127.0.0.1: the only way in to
// what the proxy keeps off the network (every pod can reach the admin
// port, so /destinations, /identity and /policy answer loopback only).
type kubeAdmin struct{ k *kube }

func (a kubeAdmin) Public(ctx context.Context, pod *corev1.Pod, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	body, err := a.k.client.CoreV1().Pods(pod.Namespace).
		ProxyGet("http", pod.Name, strconv.Itoa(names.AdminPort), path, nil).DoRaw(ctx)
	if err != nil {
		if apierrors.IsForbidden(err) {
			return 0, nil, fmt.Errorf("pod %s/%s: you may not get pods/proxy in namespace %s, which reading /%s needs", pod.Namespace, pod.Name, pod.Namespace, path)
		}
		return 0, nil, fmt.Errorf("pod %s/%s: GET :%d/%s through the API server: %s", pod.Namespace, pod.Name, names.AdminPort, path, firstLine(err.Error()))
	}
	return http.StatusOK, body, nil
}

func (a kubeAdmin) Local(ctx context.Context, pod *corev1.Pod, path string) (int, []byte, error) {
	return getAdmin(ctx, a.k, pod, path)
}

// diagOptions are the flags every `mesh diagnostics` subcommand shares. An
// empty Namespace means the kubeconfig context's.
type diagOptions struct {
	Namespace string
	Output    string
}

// diagEnv is what the diagnostics commands run against; tests replace its
// functions.
type diagEnv struct {
	o *Options
	// pod looks up a pod and returns it with a reader of its admin port.
	pod func(ctx context.Context, ns, name string) (*corev1.Pod, adminReader, error)
	// namespace is the kubeconfig context's namespace.
	namespace func() (string, error)
}

func newDiagnosticsCmd(o *Options) *cobra.Command {
	return newDiagnosticsCommand(&diagEnv{
		o: o,
		pod: func(ctx context.Context, ns, name string) (*corev1.Pod, adminReader, error) {
			k, err := o.kube()
			if err != nil {
				return nil, nil, err
			}
			pod, err := k.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				return nil, nil, fmt.Errorf("pod %s not found in namespace %s", name, ns)
			case err != nil:
				return nil, nil, fmt.Errorf("get pod %s/%s: %w", ns, name, err)
			}
			return pod, kubeAdmin{k}, nil
		},
		namespace: o.kubeNamespace,
	})
}

// viaForward ends the help of the subcommands that read a loopback-only
// endpoint.
const viaForward = "\n\nIt reads through a port-forward to the pod (create on pods/portforward), which reaches the proxy\n" +
	"on the pod's loopback, the only address it serves this on; see mesh diagnostics --help."

// diagSub is one subcommand of `mesh diagnostics`.
type diagSub struct {
	use, short, long string
	// formats are the -o values it takes; the first is the default.
	formats []string
	run     func(ctx context.Context, e *diagEnv, pod *corev1.Pod, r adminReader, format string) error
}

func newDiagnosticsCommand(e *diagEnv) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diagnostics",
		Short: "Read a meshed pod's proxy: its metrics, endpoints, inbound policy and identity",
		Long: "diagnostics reads what a pod's proxy serves on its admin port (" + strconv.Itoa(names.AdminPort) + "), through the\n" +
			"Kubernetes API server, with your kubeconfig's permissions:\n" +
			"\n" +
			"  proxy-metrics  through the pods/proxy subresource (needs get on pods/proxy): the\n" +
			"                 API server dials the pod's IP, where the proxy serves /metrics to anyone.\n" +
			"  endpoints, policy, identity\n" +
			"                 through a port-forward (needs create on pods/portforward), as\n" +
			"                 kubectl port-forward makes it: the kubelet dials the proxy on the pod's\n" +
			"                 loopback address. The proxy serves these only there, on purpose: every\n" +
			"                 pod of the cluster can reach the admin port on the pod's IP, and what\n" +
			"                 these show (whom the pod talks to, whom it lets in) is not theirs to read.",
		Aliases: []string{"diag"},
	}
	subs := []diagSub{
		{
			use: "proxy-metrics", short: "Show the proxy's Prometheus metrics",
			long: "proxy-metrics prints the proxy's /metrics as Prometheus text, or parsed into metric families with -o json|yaml.\n\n" +
				"It reads through the API server's pods/proxy subresource (get on pods/proxy), which reaches the\n" +
				"proxy on the pod's IP, where it serves /metrics to anyone.",
			formats: []string{"text", "json", "yaml"}, run: runProxyMetrics,
		},
		{
			use: "endpoints", short: "Show the destinations the proxy balances over and its view of each endpoint",
			long:    "endpoints shows the proxy's /destinations: each destination it asked the controller about, its endpoints\nwith their identities and balancing state (RTT estimate, requests pending, failures), and its routes." + viaForward,
			formats: []string{"table", "json", "yaml"}, run: runEndpoints,
		},
		{
			use: "policy", short: "Show the inbound policy the proxy enforces",
			long:    "policy shows the proxy's /policy: the inbound policy it received from the controller, as it enforces it\n(what it could not use is left out): servers, authorizations, routes, rate limits, the default policy." + viaForward,
			formats: []string{"table", "json", "yaml"}, run: runPolicy,
		},
		{
			use: "identity", short: "Show the proxy's certificate chain and trust anchors",
			long:    "identity shows the proxy's /identity: its SPIFFE ID, each certificate of its chain (subject, SANs,\nvalidity) and the SHA-256 fingerprints of the trust anchors it holds. The proxy never serves its key." + viaForward,
			formats: []string{"table", "json", "yaml"}, run: runDiagIdentity,
		},
	}
	for _, s := range subs {
		cmd.AddCommand(newDiagSubCmd(e, s))
	}
	return cmd
}

func newDiagSubCmd(e *diagEnv, s diagSub) *cobra.Command {
	opts := diagOptions{Output: s.formats[0]}
	cmd := &cobra.Command{
		Use:     s.use + " POD",
		Short:   s.short,
		Long:    s.long,
		Example: fmt.Sprintf("  mesh diagnostics %s -n shop web-7d9f8c6b5-x2x4q\n  mesh diagnostics %s -n shop pod/web-7d9f8c6b5-x2x4q -o json", s.use, s.use),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(opts.Output, s.formats...); err != nil {
				return err
			}
			name, err := podNames(args, "")
			if err != nil {
				return err
			}
			ns := opts.Namespace
			if ns == "" {
				if ns, err = e.namespace(); err != nil {
					return err
				}
			}
			pod, r, err := e.pod(cmd.Context(), ns, name[0])
			if err != nil {
				return err
			}
			if err := diagnosable(pod); err != nil {
				return err
			}
			return s.run(cmd.Context(), e, pod, r, opts.Output)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Namespace, "namespace", "n", "", "namespace of the pod (default: the kubeconfig context's, else default)")
	f.StringVarP(&opts.Output, "output", "o", opts.Output, "output format: "+joinOr(s.formats))
	return cmd
}

// joinOr lists formats as "a, b or c".
func joinOr(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

// diagnosable returns why the pod's proxy cannot be asked anything, nil
// when it can.
func diagnosable(pod *corev1.Pod) error {
	ref := pod.Namespace + "/" + pod.Name
	if !hasProxy(pod) {
		return fmt.Errorf("pod %s has no %s container; is it injected? Annotate its namespace or workload %s=%s and restart it",
			ref, names.ProxyContainerName, names.AnnotationInject, names.Enabled)
	}
	if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" {
		phase := string(pod.Status.Phase)
		if pod.DeletionTimestamp != nil {
			phase = "terminating"
		}
		return fmt.Errorf("pod %s is %s, not running: its proxy cannot answer; see kubectl -n %s describe pod %s",
			ref, phase, pod.Namespace, pod.Name)
	}
	return nil
}

// readLocal GETs a loopback-only endpoint and turns an answer other than
// 200 into an error that says what it means.
func readLocal(ctx context.Context, pod *corev1.Pod, r adminReader, path string) ([]byte, error) {
	code, body, err := r.Local(ctx, pod, path)
	if err != nil {
		return nil, err
	}
	if code == http.StatusOK {
		return body, nil
	}
	if path == identityPath {
		return nil, adminError(pod, code, body)
	}
	ref := pod.Namespace + "/" + pod.Name
	if code == http.StatusNotFound {
		switch path {
		case policyPath:
			return nil, fmt.Errorf("pod %s: %w: it enforces none (it runs without a controller address or pod name), or predates GET /%s; restart the pod to get the current proxy",
				ref, errNoPolicyEndpoint, policyPath)
		case destinationsPath:
			return nil, fmt.Errorf("pod %s: the proxy serves no /%s: it runs without a controller (no destination address), so it forwards every connection to its original destination", ref, destinationsPath)
		}
	}
	return nil, fmt.Errorf("pod %s: its proxy answered GET /%s with %d: %s", ref, path, code, firstLine(string(bytes.TrimSpace(body))))
}
