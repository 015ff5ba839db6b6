package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mesh-dev/mesh/identity/pki"
	"github.com/mesh-dev/mesh/internal/names"
)

// identityPath is the proxy's admin endpoint that serves its certificate
// (proxy/identity.go).
const identityPath = "identity"

// Reasons a pod's identity cannot be shown; the errors wrap them.
var (
	errPodNotFound   = errors.New("not found")
	errNotMeshed     = errors.New("not meshed")
	errNoCertificate = errors.New("the proxy has no certificate yet")
	errNoIdentity    = errors.New("the proxy runs without an identity")
	errBadChain      = errors.New("the proxy's certificate chain does not parse")
)

// podsFailedError is returned when several pods failed, after each
// failure was written out.
type podsFailedError struct{ failed, total int }

func (e *podsFailedError) Error() string {
	return fmt.Sprintf("%d of %d pods failed", e.failed, e.total)
}

// trustAnchor is one trust anchor the proxy holds, as GET /identity
// reports it (when it does).
type trustAnchor struct {
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"not_after"`
	SHA256   string    `json:"sha256"`
}

// proxyIdentity is the answer of GET /identity on the proxy's admin port.
// Only chain_pem is trusted: the rest is read from its leaf.
type proxyIdentity struct {
	ChainPEM     string        `json:"chain_pem"`
	TrustAnchors []trustAnchor `json:"trust_anchors"`
}

// podIdentity is one pod's certificate, or why it could not be read: an
// item of `mesh identity -o json|yaml`.
type podIdentity struct {
	Namespace    string        `json:"namespace"`
	Pod          string        `json:"pod"`
	SPIFFEID     string        `json:"spiffe_id,omitempty"`
	Issuer       string        `json:"issuer,omitempty"`
	Serial       string        `json:"serial,omitempty"`
	NotBefore    time.Time     `json:"not_before,omitzero"`
	NotAfter     time.Time     `json:"not_after,omitzero"`
	TrustAnchors []trustAnchor `json:"trust_anchors,omitempty"`
	ChainPEM     string        `json:"chain_pem,omitempty"`
	Error        string        `json:"error,omitempty"`

	err error
}

// identityReport is `mesh identity -o json|yaml`.
type identityReport struct {
	Pods []podIdentity `json:"pods"`
}

// identityOptions are the flags of `mesh identity`. An empty Namespace
// means the kubeconfig context's; an empty Selector means the pods named.
type identityOptions struct {
	Namespace string
	Selector  string
	Output    string
}

func newIdentityCmd(o *Options) *cobra.Command {
	opts := identityOptions{Output: "table"}
	cmd := &cobra.Command{
		Use:   "identity (POD | pod/POD)... | -l SELECTOR",
		Short: "Show the certificates of meshed pods: SPIFFE ID, issuer, validity",
		Long: "identity asks the proxy of each pod for the certificate it holds (GET /identity on its\n" +
			"admin port, through a port-forward, so it needs permission to create pods/portforward)\n" +
			"and shows its SPIFFE ID, issuer, serial, validity and the time left. It exits non-zero\n" +
			"when any pod's certificate cannot be read.",
		Example: "  mesh identity -n shop web-7d9f8c6b5-x2x4q\n  mesh identity -n shop -l app=web -o json",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(opts.Output, "table", "json", "yaml"); err != nil {
				return err
			}
			names, err := podNames(args, opts.Selector)
			if err != nil {
				return err
			}
			return runIdentity(cmd.Context(), o, opts, names)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Namespace, "namespace", "n", "", "namespace of the pods (default: the kubeconfig context's, else default)")
	f.StringVarP(&opts.Selector, "selector", "l", "", "show every pod matching this label selector, e.g. app=web")
	f.StringVarP(&opts.Output, "output", "o", opts.Output, "output format: table, json or yaml")
	return cmd
}

// podNames returns the pod names of the arguments, which are NAME or
// pod/NAME, or none with a selector.
func podNames(args []string, selector string) ([]string, error) {
	switch {
	case selector != "" && len(args) > 0:
		return nil, errors.New("name pods or pass -l SELECTOR, not both")
	case selector == "" && len(args) == 0:
		return nil, errors.New("name a pod (mesh identity -n NAMESPACE POD) or pass -l SELECTOR")
	}
	names := make([]string, 0, len(args))
	for _, a := range args {
		kind, name, found := strings.Cut(a, "/")
		if !found {
			kind, name = "pod", a
		}
		// The resource names kubectl accepts for pods.
		if !slices.Contains([]string{"pod", "pods", "po"}, kind) || name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("%q: want a pod name or pod/NAME; for the pods of a workload pass -l with its selector", a)
		}
		names = append(names, name)
	}
	return names, nil
}

// runIdentity reads and prints the certificates of the named pods, or of
// the pods the selector matches.
func runIdentity(ctx context.Context, o *Options, opts identityOptions, names []string) error {
	k, err := o.kube()
	if err != nil {
		return err
	}
	ns := opts.Namespace
	if ns == "" {
		if ns, err = o.kubeNamespace(); err != nil {
			return err
		}
	}
	ids, err := podIdentities(ctx, k, ns, names, opts.Selector)
	if err != nil {
		return err
	}
	if opts.Output == "table" {
		printIdentities(o.Out, ids, o.now())
	} else if err := writeStructured(o.Out, identityReport{Pods: ids}, opts.Output); err != nil {
		return err
	}
	return identityFailures(o.Err, ids)
}

// kubeNamespace returns the namespace of the kubeconfig context the flags
// select, "default" when it names none, as kubectl does.
func (o *Options) kubeNamespace() (string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.Context}
	ns, _, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).Namespace()
	if err != nil {
		return "", fmt.Errorf("load kubeconfig: %w", err)
	}
	return ns, nil
}

// identityFailures returns nil when every pod's certificate was read. One
// failure is returned as it is; several are written to w one a line, and
// summed up in the error returned.
func identityFailures(w io.Writer, ids []podIdentity) error {
	var failed []error
	for _, id := range ids {
		if id.err != nil {
			failed = append(failed, id.err)
		}
	}
	switch len(failed) {
	case 0:
		return nil
	case 1:
		return failed[0]
	}
	for _, err := range failed {
		fmt.Fprintf(w, "error: %v\n", err)
	}
	return &podsFailedError{failed: len(failed), total: len(ids)}
}

// podIdentities reads the certificate of each pod, in the order named or
// by name for a selector. An error returned means no pod could be looked
// at; each pod's own failure is in its podIdentity.
func podIdentities(ctx context.Context, k *kube, ns string, names []string, selector string) ([]podIdentity, error) {
	pods := k.client.CoreV1().Pods(ns)
	var ids []podIdentity
	if selector != "" {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return nil, fmt.Errorf("list pods in namespace %s matching %q: %w", ns, selector, err)
		}
		if len(list.Items) == 0 {
			return nil, fmt.Errorf("no pods in namespace %s match %q", ns, selector)
		}
		slices.SortFunc(list.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
		for i := range list.Items {
			ids = append(ids, fetchIdentity(ctx, k, &list.Items[i]))
		}
		return ids, nil
	}
	for _, name := range names {
		pod, err := pods.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			err = fmt.Errorf("pod %s %w in namespace %s", name, errPodNotFound, ns)
		case err != nil:
			err = fmt.Errorf("get pod %s/%s: %w", ns, name, err)
		default:
			ids = append(ids, fetchIdentity(ctx, k, pod))
			continue
		}
		ids = append(ids, podIdentity{Namespace: ns, Pod: name, Error: err.Error(), err: err})
	}
	return ids, nil
}

// fetchIdentity asks the pod's proxy for its certificate through a
// port-forward to its admin port, and parses it. The proxy answers
// /identity only on its loopback address, which a port-forward reaches and
// the API server's pod proxy (which dials the pod's IP) does not.
func fetchIdentity(ctx context.Context, k *kube, pod *corev1.Pod) podIdentity {
	ref := pod.Namespace + "/" + pod.Name
	id := podIdentity{Namespace: pod.Namespace, Pod: pod.Name}
	fail := func(err error) podIdentity {
		id.err, id.Error = err, err.Error()
		return id
	}
	if !hasProxy(pod) {
		return fail(fmt.Errorf("pod %s is %w: it has no %s container; annotate its namespace %s=%s and restart it",
			ref, errNotMeshed, names.ProxyContainerName, names.AnnotationInject, names.Enabled))
	}
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" {
		return fail(fmt.Errorf("pod %s is %s, not running: its proxy cannot answer; see kubectl -n %s describe pod %s",
			ref, pod.Status.Phase, pod.Namespace, pod.Name))
	}
	code, body, err := getAdmin(ctx, k, pod, identityPath)
	if err != nil {
		return fail(err)
	}
	if code != http.StatusOK {
		return fail(adminError(pod, code, body))
	}
	parsed, err := parseIdentity(body)
	if err != nil {
		return fail(fmt.Errorf("pod %s: %w", ref, err))
	}
	parsed.Namespace, parsed.Pod = id.Namespace, id.Pod
	return parsed
}

// maxAdminAnswer bounds what is read of an admin endpoint's answer: a
// certificate chain and its trust anchors are a few KiB.
const maxAdminAnswer = 1 << 20

// adminTimeout bounds one GET of an admin endpoint once the port-forward
// runs: the proxy answers at once, or not at all.
const adminTimeout = 30 * time.Second

// getAdmin GETs path of the pod's proxy admin port through a port-forward
// and returns the status and body of the answer, or an error that says
// why there is none and what to do.
func getAdmin(ctx context.Context, k *kube, pod *corev1.Pod, path string) (int, []byte, error) {
	ref := pod.Namespace + "/" + pod.Name
	f, err := portForward(ctx, k.rest, pod.Namespace, pod.Name, names.AdminPort)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(f.Context(), adminTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL+"/"+path, nil)
	if err != nil {
		return 0, nil, err
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err == nil {
		defer res.Body.Close()
		var body []byte
		if body, err = io.ReadAll(io.LimitReader(res.Body, maxAdminAnswer)); err == nil {
			return res.StatusCode, body, nil
		}
	}
	if last := f.LastError(); last != nil {
		err = last // what the kubelet said: nothing listens, most likely
	}
	return 0, nil, fmt.Errorf("pod %s: cannot reach its proxy on port %d: %v; see kubectl -n %s logs %s -c %s",
		ref, names.AdminPort, err, pod.Namespace, pod.Name, names.ProxyContainerName)
}

// hasProxy reports whether the pod has the mesh-proxy container, a native
// sidecar among the init containers or a plain container.
func hasProxy(pod *corev1.Pod) bool {
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name == names.ProxyContainerName {
			return true
		}
	}
	return false
}

// adminError explains an answer to GET /identity other than 200.
func adminError(pod *corev1.Pod, code int, body []byte) error {
	ref := pod.Namespace + "/" + pod.Name
	msg := firstLine(strings.TrimSpace(string(body)))
	switch code {
	case http.StatusServiceUnavailable:
		return fmt.Errorf("pod %s: %w (%s): it is not ready until the identity service signs one; see kubectl -n %s logs %s -c %s",
			ref, errNoCertificate, msg, pod.Namespace, pod.Name, names.ProxyContainerName)
	case http.StatusNotFound:
		return fmt.Errorf("pod %s: %w (installed before identity, or --identity-addr unset); restart the pod to get the current proxy",
			ref, errNoIdentity)
	}
	return fmt.Errorf("pod %s: its proxy answered GET /%s with %d: %s", ref, identityPath, code, msg)
}

// parseIdentity reads the proxy's answer. What it shows of the certificate
// comes from the leaf of chain_pem, parsed here, not from the proxy's
// summary of it.
func parseIdentity(body []byte) (podIdentity, error) {
	var answer proxyIdentity
	if err := json.Unmarshal(body, &answer); err != nil {
		return podIdentity{}, fmt.Errorf("the proxy's answer to GET /%s is not its JSON: %w", identityPath, err)
	}
	chain, err := pki.ParseCerts([]byte(answer.ChainPEM))
	if err != nil {
		return podIdentity{}, fmt.Errorf("%w: %w", errBadChain, err)
	}
	leaf := chain[0]
	spiffeID, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return podIdentity{}, fmt.Errorf("%w: its leaf has no SPIFFE ID: %w", errBadChain, err)
	}
	return podIdentity{
		SPIFFEID:     spiffeID.String(),
		Issuer:       leaf.Issuer.String(),
		Serial:       leaf.SerialNumber.Text(16),
		NotBefore:    leaf.NotBefore.UTC(),
		NotAfter:     leaf.NotAfter.UTC(),
		TrustAnchors: answer.TrustAnchors,
		ChainPEM:     answer.ChainPEM,
	}, nil
}

// printIdentities writes the certificates read as a table, then the trust
// anchors the proxies reported, if any. Failed pods are left out: their
// errors are reported apart.
func printIdentities(w io.Writer, ids []podIdentity, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	rows := 0
	for _, id := range ids {
		if id.err != nil {
			continue
		}
		if rows == 0 {
			fmt.Fprintln(tw, "POD\tSPIFFE ID\tISSUER\tSERIAL\tNOT BEFORE\tNOT AFTER\tEXPIRES")
		}
		rows++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", id.Pod, id.SPIFFEID, id.Issuer, id.Serial,
			id.NotBefore.Format(time.RFC3339), id.NotAfter.Format(time.RFC3339), timeLeft(id.NotBefore, id.NotAfter, now))
	}
	tw.Flush()
	printTrustAnchors(w, ids)
}

// printTrustAnchors lists each distinct trust anchor the proxies hold,
// with the pods that hold it: during a rotation they differ.
func printTrustAnchors(w io.Writer, ids []podIdentity) {
	var anchors []trustAnchor
	holders := map[string][]string{}
	key := func(a trustAnchor) string { return a.SHA256 + "\x00" + a.Subject }
	for _, id := range ids {
		for _, a := range id.TrustAnchors {
			if _, seen := holders[key(a)]; !seen {
				anchors = append(anchors, a)
			}
			holders[key(a)] = append(holders[key(a)], id.Pod)
		}
	}
	if len(anchors) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TRUST ANCHOR\tNOT AFTER\tSHA256\tPODS")
	for _, a := range anchors {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Subject, a.NotAfter.UTC().Format(time.RFC3339), a.SHA256, summarize(holders[key(a)], 3))
	}
	tw.Flush()
}

// timeLeft says how long a certificate remains valid at now: "in 17h3m",
// "expired 2h ago", or "not valid for another 5m".
func timeLeft(notBefore, notAfter, now time.Time) string {
	switch {
	case now.Before(notBefore):
		return "not valid for another " + shortDuration(notBefore.Sub(now))
	case !now.Before(notAfter):
		return "expired " + shortDuration(now.Sub(notAfter)) + " ago"
	}
	return "in " + shortDuration(notAfter.Sub(now))
}

// shortDuration formats d in its two largest units, rounded down: "3d4h",
// "17h3m", "5m", "42s".
func shortDuration(d time.Duration) string {
	const day = 24 * time.Hour
	two := func(big, small int64, bigUnit, smallUnit string) string {
		if small == 0 {
			return fmt.Sprintf("%d%s", big, bigUnit)
		}
		return fmt.Sprintf("%d%s%d%s", big, bigUnit, small, smallUnit)
	}
	switch {
	case d >= 2*day:
		return two(int64(d/day), int64(d%day/time.Hour), "d", "h")
	case d >= time.Hour:
		return two(int64(d/time.Hour), int64(d%time.Hour/time.Minute), "h", "m")
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}
