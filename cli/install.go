package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"

	"github.com/mesh-dev/mesh/identity/pki"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/clusternet"
	"github.com/mesh-dev/mesh/internal/names"
	meshversion "github.com/mesh-dev/mesh/internal/version"
)

// minKubeMinor is the oldest Kubernetes 1.x the mesh supports: the proxy
// runs as a native sidecar (an init container with restartPolicy Always),
// on by default since 1.29, and the policy CRDs' validation rules use CEL's
// IP and CIDR functions (isCIDR, cidr), which API servers accept in new
// CRDs since 1.31.
const minKubeMinor = 31

// establishTimeout bounds the wait for the CRDs with --wait 0: the rest of
// the control plane needs them, and the API server takes a second at most.
const establishTimeout = time.Minute

// reservedNamespaces can never hold the control plane: uninstall deletes
// the control-plane namespace.
var reservedNamespaces = []string{"default", "kube-system", "kube-public", "kube-node-lease"}

// installOptions are the flags of `mesh install`. The zero value is not
// useful; start from defaultInstallOptions.
type installOptions struct {
	Registry string
	Version  string
	HA       bool
	// Wait bounds the wait for the control plane to be ready; 0 skips it.
	Wait        time.Duration
	DryRun      bool
	Output      string
	TrustDomain string
	Identity    identityFiles
	// DefaultInboundPolicy is one of names.DefaultInboundPolicies.
	DefaultInboundPolicy string
	// ClusterNetworks are comma-separated CIDRs (clusternet.Parse), at least one.
	ClusterNetworks string
	// Proxy are the install's defaults for every injected proxy, and
	// Tracing where proxies send spans and whether Jaeger is deployed;
	// their zero values set nothing (manifests.ProxyDefaults, Tracing).
	Proxy   manifests.ProxyDefaults
	Tracing manifests.Tracing
	// CNI is the CNI mode and the nodes' CNI directories (--cni,
	// --cni-bin-dir, --cni-conf-dir).
	CNI manifests.CNI
}

func defaultInstallOptions() installOptions {
	return installOptions{
		Registry:             manifests.DefaultRegistry,
		Version:              meshversion.Version,
		Wait:                 5 * time.Minute,
		Output:               "yaml",
		TrustDomain:          pki.DefaultTrustDomain,
		DefaultInboundPolicy: names.DefaultInboundPolicy,
		ClusterNetworks:      clusternet.Format(clusternet.Default()),
	}
}

func (opts *installOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&opts.Registry, "registry", opts.Registry, "registry the mesh-proxy and mesh-controller images are pulled from")
	f.StringVar(&opts.Version, "version", opts.Version, "version (image tag) of the control plane and proxies")
	f.BoolVar(&opts.HA, "ha", opts.HA, "high availability: two controllers, a PodDisruptionBudget, and a webhook that fails closed")
	f.DurationVar(&opts.Wait, "wait", opts.Wait, "how long to wait for the control plane to be ready (0: do not wait; the CRDs are still waited for, up to a minute)")
	f.BoolVar(&opts.DryRun, "dry-run", opts.DryRun, "print the manifests instead of applying them; needs no cluster")
	f.StringVarP(&opts.Output, "output", "o", opts.Output, "format of --dry-run: yaml or json")
	f.StringVar(&opts.TrustDomain, "identity-trust-domain", opts.TrustDomain, "SPIFFE trust domain of workload identities")
	f.StringVar(&opts.Identity.TrustAnchors, "identity-trust-anchors-file", "", "PEM file of the trust anchor certificates (default: generate them)")
	f.StringVar(&opts.Identity.IssuerCert, "identity-issuer-certificate-file", "", "PEM file of the issuer CA certificate, then any intermediates")
	f.StringVar(&opts.Identity.IssuerKey, "identity-issuer-key-file", "", "PEM file of the issuer CA's private key")
	f.StringVar(&opts.DefaultInboundPolicy, "default-inbound-policy", opts.DefaultInboundPolicy,
		"what proxies allow on ports no Server selects, unless the namespace or pod is annotated "+names.AnnotationDefaultInboundPolicy+": "+strings.Join(names.DefaultInboundPolicies, ", "))
	f.StringVar(&opts.ClusterNetworks, "cluster-networks", opts.ClusterNetworks,
		"the cluster's pod, service and node networks, comma-separated CIDRs: inside them proxies never fall back to plain text")

	// The install's proxy defaults: a namespace's or pod's annotation of
	// the same name wins.
	f.StringVar(&opts.Proxy.LogLevel, "proxy-log-level", "",
		"proxies' log level unless the namespace or pod is annotated "+names.AnnotationProxyLogLevel+": debug, info, warn or error (default info)")
	f.StringVar(&opts.Proxy.CPURequest, "proxy-cpu-request", "",
		"proxies' CPU request unless the namespace or pod is annotated "+names.AnnotationProxyCPURequest+", like 100m (default 10m)")
	f.StringVar(&opts.Proxy.CPULimit, "proxy-cpu-limit", "",
		"proxies' CPU limit unless the namespace or pod is annotated "+names.AnnotationProxyCPULimit+", like 1 (default none)")
	f.StringVar(&opts.Proxy.MemoryRequest, "proxy-memory-request", "",
		"proxies' memory request unless the namespace or pod is annotated "+names.AnnotationProxyMemoryRequest+", like 64Mi (default 20Mi)")
	f.StringVar(&opts.Proxy.MemoryLimit, "proxy-memory-limit", "",
		"proxies' memory limit unless the namespace or pod is annotated "+names.AnnotationProxyMemoryLimit+", like 256Mi (default 128Mi)")
	f.StringVar(&opts.Tracing.Collector, "tracing-collector", "",
		"host:port of the OTLP/gRPC collector proxies send spans to, unless the namespace or pod is annotated "+names.AnnotationTracingCollector+
			" (default: Jaeger's with --with-jaeger, else none)")
	f.StringVar(&opts.Tracing.SampleRate, "tracing-sample-rate", "",
		"share of requests arriving without a sampling decision that proxies trace, 0 to 1, unless the namespace or pod is annotated "+
			names.AnnotationTracingSampleRate+" (default: the proxy's, 1: every request)")
	f.BoolVar(&opts.Tracing.Jaeger, "with-jaeger", false,
		"deploy Jaeger (spans kept in memory) in the control-plane namespace, and send proxies' spans to it unless --tracing-collector says otherwise")
	f.BoolVar(&opts.CNI.Enabled, "cni", false,
		"install the interception rules with the mesh CNI plugin (a DaemonSet in namespace "+manifests.CNINamespace+
			") instead of a mesh-init container with NET_ADMIN in every meshed pod, so namespaces enforcing Pod Security restricted can be meshed")
	// Their defaults are the manifests', so the options' zero value means them.
	f.StringVar(&opts.CNI.BinDir, "cni-bin-dir", "",
		"with --cni: the nodes' CNI plugin directory, containerd's bin_dir (default "+manifests.DefaultCNIBinDir+")")
	f.StringVar(&opts.CNI.ConfDir, "cni-conf-dir", "",
		"with --cni: the nodes' CNI network configuration directory, containerd's conf_dir (default "+manifests.DefaultCNIConfDir+")")
}

// validateProxyDefaults checks the proxy default flags and writes them
// back as the injector reads them (trimmed, the log level in lower case),
// so the control-plane namespace says exactly what is in force.
func (opts *installOptions) validateProxyDefaults() error {
	p := &opts.Proxy
	if p.LogLevel != "" {
		switch l := strings.ToLower(strings.TrimSpace(p.LogLevel)); l {
		case "debug", "info", "warn", "error":
			p.LogLevel = l
		default:
			return fmt.Errorf("--proxy-log-level %q: want debug, info, warn or error", p.LogLevel)
		}
	}
	quantities := []struct {
		flag    string
		value   *string
		memory  bool
		example string
	}{
		{"proxy-cpu-request", &p.CPURequest, false, "100m or 1"},
		{"proxy-cpu-limit", &p.CPULimit, false, "100m or 1"},
		{"proxy-memory-request", &p.MemoryRequest, true, "64Mi or 1Gi"},
		{"proxy-memory-limit", &p.MemoryLimit, true, "64Mi or 1Gi"},
	}
	parsed := map[string]resource.Quantity{}
	for _, q := range quantities {
		if *q.value == "" {
			continue
		}
		v, err := resource.ParseQuantity(strings.TrimSpace(*q.value))
		switch {
		case err != nil || v.Sign() <= 0:
			return fmt.Errorf("--%s %q: want a positive quantity, like %s", q.flag, *q.value, q.example)
		case q.memory && v.MilliValue()%1000 != 0:
			return fmt.Errorf("--%s %q: want a whole number of bytes, like 64Mi", q.flag, *q.value)
		}
		*q.value = strings.TrimSpace(*q.value)
		parsed[q.flag] = v
	}
	for _, kind := range []string{"cpu", "memory"} {
		req, hasReq := parsed["proxy-"+kind+"-request"]
		lim, hasLim := parsed["proxy-"+kind+"-limit"]
		if hasReq && hasLim && req.Cmp(lim) > 0 {
			return fmt.Errorf("--proxy-%s-request %s is above --proxy-%s-limit %s", kind, req.String(), kind, lim.String())
		}
	}
	t := &opts.Tracing
	if t.Collector != "" {
		addr, err := names.ParseTracingCollector(t.Collector)
		if err != nil {
			return fmt.Errorf("--tracing-collector: %w", err)
		}
		t.Collector = addr
	}
	if t.SampleRate != "" {
		if _, err := names.ParseTracingSampleRate(t.SampleRate); err != nil {
			return fmt.Errorf("--tracing-sample-rate: %w", err)
		}
		t.SampleRate = strings.TrimSpace(t.SampleRate)
	}
	return nil
}

// validate checks the flags that need no cluster.
func (opts *installOptions) validate(cmd *cobra.Command, namespace string) error {
	if opts.Output != "yaml" && opts.Output != "json" {
		return fmt.Errorf("--output %q: want yaml or json", opts.Output)
	}
	if cmd.Flags().Changed("output") && !opts.DryRun {
		return errors.New("--output goes with --dry-run")
	}
	if opts.Wait < 0 {
		return fmt.Errorf("--wait %s: must not be negative", opts.Wait)
	}
	if err := checkNamespace(namespace); err != nil {
		return err
	}
	if _, err := pki.ParseTrustDomain(opts.TrustDomain); err != nil {
		return fmt.Errorf("--identity-trust-domain: %w", err)
	}
	policy, err := names.ParseDefaultInboundPolicy(opts.DefaultInboundPolicy)
	if err != nil {
		return fmt.Errorf("--default-inbound-policy: %w", err)
	}
	opts.DefaultInboundPolicy = policy
	networks, err := clusternet.Parse(opts.ClusterNetworks)
	if err == nil && len(networks) == 0 {
		// An empty list would let every destination fall back to plain text.
		err = fmt.Errorf("%w: give at least one CIDR, like %s", clusternet.ErrInvalid, clusternet.Format(clusternet.Default()))
	}
	if err != nil {
		return fmt.Errorf("--cluster-networks: %w", err)
	}
	if err := opts.validateProxyDefaults(); err != nil {
		return err
	}
	if err := opts.validateCNI(cmd); err != nil {
		return err
	}
	return opts.Identity.validate()
}

// validateCNI refuses CNI directories without --cni, which would be
// silently ignored, and directories a hostPath volume cannot name.
func (opts *installOptions) validateCNI(cmd *cobra.Command) error {
	if !opts.CNI.Enabled {
		for _, f := range []string{"cni-bin-dir", "cni-conf-dir"} {
			if cmd.Flags().Changed(f) {
				return fmt.Errorf("--%s goes with --cni", f)
			}
		}
		return nil
	}
	if err := (manifests.Values{CNI: opts.CNI}).CNIError(); err != nil {
		return fmt.Errorf("--cni-bin-dir or --cni-conf-dir: %w", err)
	}
	return nil
}

// checkNamespace refuses a control-plane namespace uninstall must not delete.
func checkNamespace(namespace string) error {
	if slices.Contains(reservedNamespaces, namespace) {
		return fmt.Errorf("--control-plane-namespace %s: the control plane needs a namespace of its own (uninstall deletes it)", namespace)
	}
	return nil
}

// values are the manifests' inputs, without certificates. validate has
// checked the cluster networks; unparsable ones are left to the default.
func (opts *installOptions) values(namespace string) manifests.Values {
	networks, _ := clusternet.Parse(opts.ClusterNetworks)
	return manifests.Values{
		Namespace:            namespace,
		Registry:             strings.TrimSuffix(opts.Registry, "/"),
		Version:              opts.Version,
		HA:                   opts.HA,
		TrustDomain:          opts.TrustDomain,
		DefaultInboundPolicy: opts.DefaultInboundPolicy,
		ClusterNetworks:      networks,
		Proxy:                opts.Proxy,
		Tracing:              opts.Tracing,
		CNI:                  opts.CNI,
	}
}

func newInstallCmd(o *Options) *cobra.Command {
	opts := defaultInstallOptions()
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install or upgrade the control plane",
		Long: "install applies the control plane to the cluster (the policy CRDs, namespace, RBAC,\n" +
			"certificates, controller, proxy-injector webhook) with server-side apply, then waits\n" +
			"until the controller is available and the injector answers. Running it again upgrades\n" +
			"in place and keeps the certificates that are still valid; objects that did not change\n" +
			"are reported unchanged. With --dry-run it prints the manifests instead.\n\n" +
			"With --cni it first rolls out the mesh CNI plugin on every node and waits until it is\n" +
			"ready everywhere, then tells the injector to leave out mesh-init: pods created before\n" +
			"the plugin is chained would start unintercepted. Without --cni it removes the plugin.\n\n" +
			"It installs the Gateway API CRDs the mesh routes with (HTTPRoute and GRPCRoute of the\n" +
			"standard channel " + manifests.GatewayAPIBundleVersion + ") where the cluster has none, and upgrades\n" +
			"older ones it installed itself. It never downgrades them, and leaves alone those\n" +
			"another project installed, saying what it found. --dry-run cannot look, so its output\n" +
			"holds them all: apply it with kubectl apply --server-side (the HTTPRoute CRD is close to\n" +
			"the size client-side apply can record), and leave them out where the cluster has its own.",
		Example: "  mesh install\n" +
			"  mesh install --ha --wait 10m\n" +
			"  mesh install --default-inbound-policy all-authenticated --cluster-networks 10.0.0.0/8\n" +
			"  mesh install --with-jaeger --tracing-sample-rate 0.1 --proxy-log-level warn\n" +
			"  mesh install --cni --cni-bin-dir /usr/lib/cni\n" +
			"  mesh install --dry-run -o yaml > mesh.yaml",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.validate(cmd, o.ControlPlaneNamespace); err != nil {
				return err
			}
			if opts.DryRun {
				return opts.printManifests(cmd.Context(), o)
			}
			return opts.run(cmd.Context(), o)
		},
	}
	opts.addFlags(cmd.Flags())
	return cmd
}

// render makes the manifests with certificates from loadPKI.
func (opts *installOptions) render(ctx context.Context, o *Options, k *kube) ([]manifests.Manifest, *installPKI, error) {
	td, err := pki.ParseTrustDomain(opts.TrustDomain)
	if err != nil {
		return nil, nil, fmt.Errorf("--identity-trust-domain: %w", err)
	}
	v := opts.values(o.ControlPlaneNamespace)
	if err := v.Validate(); err != nil {
		return nil, nil, err
	}
	p, err := loadPKI(ctx, k, o.ControlPlaneNamespace, opts.Identity, td, o.now())
	if err != nil {
		return nil, nil, err
	}
	if err := p.fill(&v); err != nil {
		return nil, nil, err
	}
	ms, err := manifests.Render(v)
	return ms, p, err
}

// printManifests writes the manifests to o.Out without a cluster: the
// certificates are new on every run unless they come from files.
func (opts *installOptions) printManifests(ctx context.Context, o *Options) error {
	ms, _, err := opts.render(ctx, o, nil)
	if err != nil {
		return err
	}
	gw, err := manifests.GatewayAPICRDs()
	if err != nil {
		return err
	}
	// After the policy CRDs, before the rest: kubectl apply -f takes the
	// list in order. Without a cluster to look at, they are all there;
	// kubectl cannot tell another project's copy from none.
	crds := 0
	for crds < len(ms) && ms[crds].IsCRD() {
		crds++
	}
	return writeManifests(o.Out, slices.Concat(ms[:crds], gw, ms[crds:]), opts.Output)
}

// run installs or upgrades the control plane: check the API server and
// the user's rights, pick the certificates, apply the policy CRDs and the
// Gateway API CRDs the cluster lacks and wait until they are established,
// apply everything but the webhook, wait for the controller, then
// register the webhook.
func (opts *installOptions) run(ctx context.Context, o *Options) error {
	k, err := o.kube()
	if err != nil {
		return err
	}
	ns := o.ControlPlaneNamespace
	p := newProgress(o.Out, o.now)
	fmt.Fprintf(o.Out, "Installing mesh %s into namespace %s (context %q)\n", opts.Version, ns, k.Context)
	if err := opts.preflight(ctx, k, p, ns); err != nil {
		return err
	}
	if nsObj, err := k.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil && nsObj.DeletionTimestamp != nil {
		return fmt.Errorf("namespace %s is being deleted (by mesh uninstall?): wait until kubectl get namespace %s finds nothing, then run mesh install again", ns, ns)
	}
	ms, pk, err := opts.render(ctx, o, k)
	if err != nil {
		return err
	}
	for _, n := range pk.notes {
		mark := okMark
		if n.warn {
			mark = warnMark
		}
		p.line(mark, "%s", n.text)
	}

	// The CRDs go first: the controller watches their kinds from its
	// start. The webhook goes last, once the injector answers (see
	// 40-webhook.yaml).
	var crds, cni, first, last []manifests.Manifest
	for _, m := range ms {
		switch {
		case m.IsCRD():
			crds = append(crds, m)
		case isCNIObject(m):
			cni = append(cni, m)
		case m.Object.GetKind() == "MutatingWebhookConfiguration":
			last = append(last, m)
		default:
			first = append(first, m)
		}
	}
	changed, err := applyAll(ctx, k, p, crds)
	if err != nil {
		return err
	}
	gw, err := installGatewayAPI(ctx, k, p)
	if err != nil {
		return err
	}
	n, err := applyAll(ctx, k, p, gw)
	changed += n
	if err != nil {
		return err
	}
	if err := opts.waitEstablished(ctx, k, p, slices.Concat(crds, gw)); err != nil {
		return err
	}
	// The plugin is on every node before the control-plane namespace
	// says CNI mode (in first): from then on the injector leaves out
	// mesh-init, and a pod started where the plugin is not chained yet
	// would run unintercepted.
	n, err = applyAll(ctx, k, p, cni)
	changed += n
	if err != nil {
		return err
	}
	if len(cni) > 0 && opts.Wait > 0 {
		if err := opts.waitCNI(ctx, k, p); err != nil {
			return err
		}
	}
	n, err = applyAll(ctx, k, p, first)
	changed += n
	if err != nil {
		return err
	}
	if !opts.Tracing.Jaeger {
		pruned, err := pruneJaeger(ctx, k, ns)
		if err != nil {
			return err
		}
		for _, name := range pruned {
			changed++
			p.line(okMark, "%s deleted (only --with-jaeger needs it)", name)
		}
	}
	if !opts.CNI.Enabled {
		// After first: the namespace no longer says CNI mode, so no pod is
		// injected for a plugin about to go.
		pruned, err := pruneCNI(ctx, k)
		if err != nil {
			return err
		}
		for _, name := range pruned {
			changed++
			p.line(okMark, "%s deleted (only --cni needs it)", name)
		}
	}
	if !opts.HA {
		pruned, err := prunePDB(ctx, k, ns)
		if err != nil {
			return err
		}
		if pruned {
			changed++
			p.line(okMark, "poddisruptionbudget/%s deleted (only --ha needs it)", manifests.ControllerName)
		}
	}
	if opts.Wait > 0 {
		if err := opts.waitReady(ctx, k, p, ns); err != nil {
			return err
		}
	}
	n, err = applyAll(ctx, k, p, last)
	if err != nil {
		return err
	}
	opts.summary(o.Out, ns, changed+n)
	return nil
}

// preflight checks the API server and the user's rights. The rights depend
// only on the objects' kinds and names, so they are checked on manifests
// without certificates, before any is read or made.
func (opts *installOptions) preflight(ctx context.Context, k *kube, p *progress, ns string) error {
	if err := p.run(ctx, "Kubernetes API", func(ctx context.Context, _ func(string)) (string, error) {
		return checkServerVersion(ctx, k)
	}); err != nil {
		return err
	}
	skeleton, err := manifests.Render(opts.values(ns))
	if err != nil {
		return err
	}
	return p.run(ctx, "permissions", func(ctx context.Context, _ func(string)) (string, error) {
		acc, err := requiredForInstall(ctx, k, skeleton, ns)
		if err != nil {
			return "", err
		}
		n, err := acc.check(ctx, k)
		return fmt.Sprintf("%d rights verified", n), err
	})
}

// applyAll applies ms in order, a line each, and counts the changes.
func applyAll(ctx context.Context, k *kube, p *progress, ms []manifests.Manifest) (changed int, err error) {
	for _, m := range ms {
		res, err := k.apply(ctx, m.Object)
		if err != nil {
			p.line(failMark, "%s", m.Name())
			if m.IsCRD() && apierrors.IsInvalid(err) {
				return changed, fmt.Errorf("%w\nthe API server refused a CRD: mesh needs Kubernetes 1.%d or newer for its validation rules", err, minKubeMinor)
			}
			return changed, applyError(err, m.Object.GetNamespace())
		}
		if res != resultUnchanged {
			changed++
		}
		p.line(okMark, "%s %s", m.Name(), res)
	}
	return changed, nil
}

// gatewayAPIStep is what install does with one Gateway API CRD mesh
// installs: apply it, or leave the cluster's copy alone with a note.
type gatewayAPIStep struct {
	m     manifests.Manifest
	apply bool
	// note says what install found, for a line of output; warn marks
	// what the user should act on.
	note string
	warn bool
}

// planGatewayAPI decides, for each Gateway API CRD mesh installs, given
// the cluster's copy (nil when it has none), whether install applies it:
// when it is missing, or mesh installed it and it is not newer; never
// over another project's, a newer one, or the experimental channel, whose
// extra fields the standard one would remove.
func planGatewayAPI(want []manifests.Manifest, found map[string]*unstructured.Unstructured) []gatewayAPIStep {
	const supported = manifests.GatewayAPIBundleVersion
	steps := make([]gatewayAPIStep, 0, len(want))
	for _, m := range want {
		name := m.Name()
		cur, ok := found[m.Object.GetName()]
		if !ok || cur == nil {
			steps = append(steps, gatewayAPIStep{m: m, apply: true})
			continue
		}
		c := manifests.ReadGatewayAPICRD(cur)
		owner := "installed by another project"
		if c.Mesh {
			owner = "installed by mesh"
		}
		channel := c.Channel
		if channel == "" {
			channel = "unknown"
		}
		what := fmt.Sprintf("%s %s (%s channel, %s)", name, c.Version, channel, owner)
		cmp, err := c.CompareToSupported()
		switch {
		case c.Terminating:
			steps = append(steps, gatewayAPIStep{m: m, warn: true,
				note: fmt.Sprintf("%s is being deleted: left alone; once kubectl get %s finds nothing, run mesh install again", name, name)})
		case err != nil:
			steps = append(steps, gatewayAPIStep{m: m, warn: true,
				note: fmt.Sprintf("%s (%s): %v, so its release is unknown: left alone; mesh supports %s, the Gateway API's standard channel", name, owner, err, supported)})
		case cmp > 0:
			steps = append(steps, gatewayAPIStep{m: m, note: what + fmt.Sprintf(" is newer than mesh's %s: kept", supported)})
		case c.Channel != manifests.GatewayAPIChannel:
			steps = append(steps, gatewayAPIStep{m: m, warn: cmp < 0,
				note: what + fmt.Sprintf(": kept, as the standard channel would drop its extra fields%s", olderHint(cmp))})
		case !c.Mesh:
			steps = append(steps, gatewayAPIStep{m: m, warn: cmp < 0,
				note: what + fmt.Sprintf(": kept%s", olderHint(cmp))})
		case cmp < 0:
			steps = append(steps, gatewayAPIStep{m: m, apply: true,
				note: fmt.Sprintf("%s: upgrading %s to %s", name, c.Version, supported)})
		default: // mesh's, this release: re-applied, to undo edits
			steps = append(steps, gatewayAPIStep{m: m, apply: true})
		}
	}
	return steps
}

// olderHint says what to do about a Gateway API CRD install keeps though
// it is older than mesh supports (cmp < 0), "" otherwise.
func olderHint(cmp int) string {
	if cmp >= 0 {
		return ""
	}
	return fmt.Sprintf("; it is older than the %s mesh supports: upgrade it with the project that installed it, "+
		"or with kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/%s/standard-install.yaml",
		manifests.GatewayAPIBundleVersion, manifests.GatewayAPIBundleVersion)
}

// installGatewayAPI reads the cluster's Gateway API CRDs, prints what it
// leaves alone and why, and returns those install applies.
func installGatewayAPI(ctx context.Context, k *kube, p *progress) ([]manifests.Manifest, error) {
	want, err := manifests.GatewayAPICRDs()
	if err != nil {
		return nil, err
	}
	found := map[string]*unstructured.Unstructured{}
	for _, m := range want {
		cur, err := k.dynamic.Resource(crdResource).Get(ctx, m.Object.GetName(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return nil, fmt.Errorf("read %s: %w", m.Name(), err)
		}
		found[m.Object.GetName()] = cur
	}
	var apply []manifests.Manifest
	versions := map[string]bool{}
	for _, s := range planGatewayAPI(want, found) {
		if s.note != "" {
			mark := okMark
			if s.warn {
				mark = warnMark
			}
			p.line(mark, "%s", s.note)
		}
		if s.apply {
			apply = append(apply, s.m)
			versions[manifests.GatewayAPIBundleVersion] = true
		} else if cur := found[s.m.Object.GetName()]; cur != nil {
			v := manifests.ReadGatewayAPICRD(cur).Version
			if v == "" {
				v = "unknown"
			}
			versions[v] = true
		}
	}
	if len(versions) > 1 {
		p.line(warnMark, "the Gateway API CRDs are now of %d releases (%s): routes may use fields some do not have; install one release of them all",
			len(versions), strings.Join(slices.Sorted(maps.Keys(versions)), ", "))
	}
	return apply, nil
}

// summary ends install's output with what to do next.
func (opts *installOptions) summary(w io.Writer, ns string, changed int) {
	if changed == 0 {
		fmt.Fprintf(w, "\nmesh %s is installed and up to date: nothing changed.\n", opts.Version)
	} else {
		fmt.Fprintf(w, "\nmesh %s is installed in namespace %s.\n", opts.Version, ns)
	}
	if opts.Wait == 0 {
		fmt.Fprintln(w, "Not waited for: run `mesh check` to see when the control plane is ready.")
	}
	if opts.Tracing.Jaeger {
		fmt.Fprintf(w, "Jaeger: kubectl -n %s port-forward service/%s %d, then open http://localhost:%d.\n",
			ns, manifests.JaegerName, manifests.JaegerQueryPort, manifests.JaegerQueryPort)
	}
	fmt.Fprintln(w, "Next: kubectl annotate namespace NAME mesh.dev/inject=enabled, then restart its workloads; `mesh check` verifies the mesh.")
}

// waitReady waits, for at most opts.Wait, until the controller is available
// and its Service has a ready endpoint, then until mesh-viz is available.
func (opts *installOptions) waitReady(ctx context.Context, k *kube, p *progress, ns string) error {
	ctx, cancel := context.WithTimeout(ctx, opts.Wait)
	defer cancel()
	hint := fmt.Sprintf("\ninspect with: kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s\nthen run mesh install again (it picks up where it stopped)",
		ns, manifests.ControllerName, ns, manifests.ControllerName)
	if err := p.run(ctx, "deployment/"+manifests.ControllerName+" available", func(ctx context.Context, status func(string)) (string, error) {
		return poll(ctx, status, rolloutOf(k, ns, manifests.ControllerName, controllerSelector))
	}); err != nil {
		return fmt.Errorf("the controller is not available after %s: %w%s", opts.Wait, err, hint)
	}
	if err := p.run(ctx, "service/"+manifests.InjectorServiceName+" endpoint ready", func(ctx context.Context, status func(string)) (string, error) {
		return poll(ctx, status, injectorEndpoint(k, ns))
	}); err != nil {
		return fmt.Errorf("the injector service has no ready endpoint after %s: %w%s", opts.Wait, err, hint)
	}
	// Last: mesh-viz is ready only once the identity service, in the
	// controller, has certified it.
	if err := p.run(ctx, "deployment/"+vizName+" available", func(ctx context.Context, status func(string)) (string, error) {
		return poll(ctx, status, rolloutOf(k, ns, vizName, vizSelector))
	}); err != nil {
		return fmt.Errorf("%s is not available after %s: %w\ninspect with: kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s\nthen run mesh install again (it picks up where it stopped)",
			vizName, opts.Wait, err, ns, vizName, ns, vizName)
	}
	if opts.Tracing.Jaeger {
		name := manifests.JaegerName
		if err := p.run(ctx, "deployment/"+name+" available", func(ctx context.Context, status func(string)) (string, error) {
			return poll(ctx, status, rolloutOf(k, ns, name, jaegerSelector.String()))
		}); err != nil {
			return fmt.Errorf("%s is not available after %s: %w\ninspect with: kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s\n"+
				"is its image, %s, on the nodes (make images)? then run mesh install again",
				name, opts.Wait, err, ns, name, ns, name, opts.values(ns).JaegerImage())
		}
	}
	return nil
}

// isCNIObject reports whether m is one of the CNI plugin's objects
// (55-cni.yaml), which install rolls out before the rest.
func isCNIObject(m manifests.Manifest) bool {
	return m.Object.GetLabels()[manifests.NameLabel] == manifests.CNIName
}

// waitCNI waits, for at most opts.Wait, until the CNI plugin's DaemonSet
// is ready on every node.
func (opts *installOptions) waitCNI(ctx context.Context, k *kube, p *progress) error {
	ctx, cancel := context.WithTimeout(ctx, opts.Wait)
	defer cancel()
	ns, name := manifests.CNINamespace, manifests.CNIName
	if err := p.run(ctx, "daemonset/"+name+" ready on every node", func(ctx context.Context, status func(string)) (string, error) {
		return poll(ctx, status, cniRollout(k))
	}); err != nil {
		return fmt.Errorf("the CNI plugin is not ready on every node after %s: %w\n"+
			"inspect with: kubectl -n %s describe daemonset %s; kubectl -n %s logs daemonset/%s\n"+
			"are --cni-bin-dir %s and --cni-conf-dir %s the nodes' (containerd's bin_dir and conf_dir)? is its image, %s, on the nodes (make images)?\n"+
			"then run mesh install --cni again: the injector is told CNI mode only once the plugin is ready",
			opts.Wait, err, ns, name, ns, name, opts.CNI.BinDir, opts.CNI.ConfDir, opts.values("").CNIImage())
	}
	return nil
}

// pruneCNI deletes the CNI plugin an earlier `install --cni` made: its
// namespace, whose deletion stops the DaemonSet's pods, each taking the
// plugin out of its node's chain, and its cluster-wide RBAC. It names what
// it deleted; objects without the part-of label are not install's and are
// left alone.
func pruneCNI(ctx context.Context, k *kube) ([]string, error) {
	var pruned []string
	name := manifests.CNIName
	nsObj, err := k.client.CoreV1().Namespaces().Get(ctx, manifests.CNINamespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("read namespace/%s: %w", manifests.CNINamespace, err)
	case nsObj.Labels[manifests.PartOfLabel] == manifests.PartOf && nsObj.DeletionTimestamp == nil:
		if err := k.client.CoreV1().Namespaces().Delete(ctx, manifests.CNINamespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("delete namespace/%s: %w", manifests.CNINamespace, err)
		}
		pruned = append(pruned, "namespace/"+manifests.CNINamespace)
	}
	rbac := k.client.RbacV1()
	crb, err := rbac.ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("read clusterrolebinding/%s: %w", name, err)
	case crb.Labels[manifests.PartOfLabel] == manifests.PartOf:
		if err := rbac.ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("delete clusterrolebinding/%s: %w", name, err)
		}
		pruned = append(pruned, "clusterrolebinding/"+name)
	}
	cr, err := rbac.ClusterRoles().Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("read clusterrole/%s: %w", name, err)
	case cr.Labels[manifests.PartOfLabel] == manifests.PartOf:
		if err := rbac.ClusterRoles().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("delete clusterrole/%s: %w", name, err)
		}
		pruned = append(pruned, "clusterrole/"+name)
	}
	return pruned, nil
}

// jaegerSelector selects the pods of --with-jaeger's Deployment.
var jaegerSelector = labels.SelectorFromSet(labels.Set{
	manifests.NameLabel:   manifests.JaegerName,
	manifests.PartOfLabel: manifests.PartOf,
})

// pruneJaeger deletes the Jaeger an earlier `install --with-jaeger` made,
// and names what it deleted: without the flag the proxies are no longer
// pointed at it.
func pruneJaeger(ctx context.Context, k *kube, ns string) ([]string, error) {
	var pruned []string
	deployments, services := k.client.AppsV1().Deployments(ns), k.client.CoreV1().Services(ns)
	d, err := deployments.Get(ctx, manifests.JaegerName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("read deployment/%s: %w", manifests.JaegerName, err)
	case d.Labels[manifests.PartOfLabel] == manifests.PartOf:
		if err := deployments.Delete(ctx, manifests.JaegerName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("delete deployment/%s: %w", manifests.JaegerName, err)
		}
		pruned = append(pruned, "deployment/"+manifests.JaegerName)
	}
	svc, err := services.Get(ctx, manifests.JaegerName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("read service/%s: %w", manifests.JaegerName, err)
	case svc.Labels[manifests.PartOfLabel] == manifests.PartOf:
		if err := services.Delete(ctx, manifests.JaegerName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("delete service/%s: %w", manifests.JaegerName, err)
		}
		pruned = append(pruned, "service/"+manifests.JaegerName)
	}
	return pruned, nil
}

// rolloutOf is a poll condition: Deployment name, whose pods selector
// selects, has rolled out; while it has not, the detail names the first
// pod problem found, with what to do about it.
func rolloutOf(k *kube, namespace, name, selector string) func(context.Context) (bool, string, error) {
	return func(ctx context.Context) (bool, string, error) {
		d, err := k.client.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, "", fatal(err)
		}
		done, detail := rolloutDone(d)
		if done {
			return true, detail, nil
		}
		pods, err := k.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil {
			if problem := podProblem(pods.Items); problem != "" {
				detail += "; " + problem
			}
		}
		return false, detail, nil
	}
}

// waitEstablished waits until the API server serves every CRD of crds, for
// at most opts.Wait, or establishTimeout with --wait 0.
func (opts *installOptions) waitEstablished(ctx context.Context, k *kube, p *progress, crds []manifests.Manifest) error {
	if len(crds) == 0 {
		return nil
	}
	wait := opts.Wait
	if wait == 0 {
		wait = establishTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	names := make([]string, len(crds))
	for i, m := range crds {
		names[i] = m.Object.GetName()
	}
	if err := p.run(ctx, "customresourcedefinitions established", func(ctx context.Context, status func(string)) (string, error) {
		return poll(ctx, status, crdsEstablished(k, names))
	}); err != nil {
		return fmt.Errorf("the CRDs are not established after %s: %w\ninspect with: kubectl get customresourcedefinition %s -o yaml\nthen run mesh install again",
			wait, err, strings.Join(names, " "))
	}
	return nil
}

// crdGVK is the kind of CustomResourceDefinitions.
var crdGVK = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: manifests.CRDKind}

// crdsEstablished is a poll condition: every CRD named is Established. A
// CRD whose names another one holds never will be: that is an error.
func crdsEstablished(k *kube, names []string) func(context.Context) (bool, string, error) {
	return func(ctx context.Context) (bool, string, error) {
		ri, _, err := k.resource(ctx, crdGVK, "")
		if err != nil {
			return false, "", err
		}
		var waiting []string
		for _, name := range names {
			crd, err := ri.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				if fatal(err) != nil {
					return false, "", err
				}
				waiting = append(waiting, name+": "+firstLine(err.Error()))
				continue
			}
			established, why, err := crdCondition(crd.Object)
			if err != nil {
				return false, "", fmt.Errorf("customresourcedefinition/%s: %w", name, err)
			}
			if !established {
				waiting = append(waiting, name+": "+why)
			}
		}
		if len(waiting) > 0 {
			return false, fmt.Sprintf("%d of %d established; %s", len(names)-len(waiting), len(names), waiting[0]), nil
		}
		return true, fmt.Sprintf("%d %s", len(names), plural(len(names), "CRD", "CRDs")), nil
	}
}

// crdCondition reads a CRD's status: whether it is Established, and if not
// why, or an error when its names conflict with another CRD's.
func crdCondition(obj map[string]any) (established bool, why string, err error) {
	conds, _, _ := unstructured.NestedSlice(obj, "status", "conditions")
	why = "no status yet"
	for _, c := range conds {
		c, _ := c.(map[string]any)
		typ, _ := c["type"].(string)
		status, _ := c["status"].(string)
		msg, _ := c["message"].(string)
		switch {
		case typ == "Established" && status == "True":
			return true, "", nil
		case typ == "NamesAccepted" && status == "False":
			return false, "", fmt.Errorf("names not accepted: %s", msg)
		case typ == "Established":
			why = "not established: " + msg
		}
	}
	return false, why, nil
}

// prunePDB deletes the PodDisruptionBudget an earlier `install --ha` made,
// and reports whether there was one.
func prunePDB(ctx context.Context, k *kube, ns string) (bool, error) {
	pdbs := k.client.PolicyV1().PodDisruptionBudgets(ns)
	pdb, err := pdbs.Get(ctx, manifests.ControllerName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read poddisruptionbudget/%s: %w", manifests.ControllerName, err)
	case pdb.Labels[manifests.PartOfLabel] != manifests.PartOf:
		return false, nil // not ours
	}
	if err := pdbs.Delete(ctx, manifests.ControllerName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("delete poddisruptionbudget/%s: %w", manifests.ControllerName, err)
	}
	return true, nil
}

// applyError adds what to do to an apply failure.
func applyError(err error, namespace string) error {
	switch {
	case apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
		return fmt.Errorf("%w\nnamespace %s is still being deleted (by mesh uninstall?): wait until kubectl get namespace %s finds nothing, then run mesh install again", err, namespace, namespace)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w\nask a cluster admin to run mesh install, or to grant you the right named above", err)
	case apierrors.IsInvalid(err):
		return fmt.Errorf("%w\nthe API server rejected a manifest: check --registry, --version and --control-plane-namespace", err)
	}
	return err
}

// checkServerVersion returns the API server's version and URL, or an error
// when it cannot be reached or is older than 1.minKubeMinor.
func checkServerVersion(ctx context.Context, k *kube) (string, error) {
	info, err := reachAPI(ctx, k)
	if err != nil {
		return "", err
	}
	if err := supportedVersion(info); err != nil {
		return "", err
	}
	return info.GitVersion + " at " + k.Server, nil
}

// reachAPI asks the API server for its version, saying what to check when
// it does not answer.
func reachAPI(ctx context.Context, k *kube) (*version.Info, error) {
	info, err := k.discovery.ServerVersionWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the Kubernetes API at %s: %w\nis the cluster running, and is the kubeconfig context %q the right one?", k.Server, err, k.Context)
	}
	return info, nil
}

// supportedVersion refuses Kubernetes older than 1.minKubeMinor.
func supportedVersion(info *version.Info) error {
	major, errMajor := strconv.Atoi(strings.TrimRight(info.Major, "+"))
	minor, errMinor := strconv.Atoi(strings.TrimRight(info.Minor, "+"))
	if errMajor != nil || errMinor != nil {
		return nil // unknown distributions' version strings: let them try
	}
	if major < 1 || major == 1 && minor < minKubeMinor {
		return fmt.Errorf("the cluster runs Kubernetes %s: mesh needs 1.%d or newer (native sidecar containers, CEL's IP and CIDR functions in CRDs)", info.GitVersion, minKubeMinor)
	}
	return nil
}
