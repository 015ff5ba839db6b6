// Package inject adds the mesh sidecar to a pod: the mesh-init container that
// installs the interception rules (or, in CNI mode, the annotation from which
// the mesh CNI plugin installs them) and the mesh-proxy native sidecar. It is
// pure logic on Kubernetes API types, shared by the proxy-injector webhook
// (controller/injector) and `mesh inject --manual`, so that both write
// exactly the same pod.
//
// The rules are those of DESIGN.md: a pod is injected when it or its
// namespace is annotated mesh.dev/inject=enabled, unless the pod says
// disabled; per-pod overrides are config.mesh.dev/* annotations, of which
// those of DefaultAnnotations may also be set on the namespace and, by
// `mesh install`, for every pod (Config.Defaults). A bad override never
// blocks a pod: it is ignored with a warning.
package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/identity/pki"
	"github.com/mesh-dev/mesh/install/cni/interception"
	"github.com/mesh-dev/mesh/internal/names"
)

// The names an injected pod carries (annotations, labels, container
// names, ports, the proxy's UID) are in internal/names, shared with the
// controller and the proxy.

// LockVolumeName is the emptyDir mounted at /run in mesh-init: iptables
// takes its xtables lock there, and the container's root is read-only.
const LockVolumeName = "mesh-init-xtables-lock"

// Defaults of the containers the injector writes.
const (
	DefaultImagePullPolicy = corev1.PullIfNotPresent
	DefaultProxyLogLevel   = "info"
)

// systemNamespace is never injected: its pods run the cluster itself.
const systemNamespace = metav1.NamespaceSystem

// Config is what every injected pod gets regardless of its annotations.
// ProxyImage and Version are required; the zero value of every other field
// means the default named on it.
type Config struct {
	// ProxyImage runs both mesh-init and mesh-proxy, e.g.
	// "ghcr.io/mesh-dev/mesh-proxy:v0.1.0".
	ProxyImage string
	// Version is written to the mesh.dev/proxy-version annotation.
	Version string
	// ControlPlaneNamespace is never injected and is written to the
	// mesh.dev/control-plane-ns label; "" means mesh-system.
	ControlPlaneNamespace string
	// IdentityAddr is the identity service proxies get certificates from;
	// "" means names.DefaultIdentityAddr(ControlPlaneNamespace).
	IdentityAddr string
	// TrustDomain of workload identities; "" means cluster.local.
	TrustDomain string
	// TrustAnchors is the PEM bundle proxies check the identity service
	// against (later bundles reach them over the identity service itself).
	// Empty means no identity: proxies run in plain text.
	TrustAnchors string
	// DestinationAddr is the control plane's gRPC address proxies ask for
	// endpoints; "" means names.DefaultDestinationAddr(ControlPlaneNamespace).
	DestinationAddr string
	// ImagePullPolicy of both containers; "" means IfNotPresent, so images
	// loaded into the node run without a registry.
	ImagePullPolicy corev1.PullPolicy
	// ProxyLogLevel is the proxy's level unless the pod overrides it; ""
	// means info.
	ProxyLogLevel string
	// ProxyResources of mesh-proxy unless the pod overrides them; the zero
	// value means requests cpu 10m and memory 20Mi, limit memory 128Mi:
	// an idle proxy uses under 20 MiB, and each connection held costs up to
	// about 20 KiB (a silent one: goroutines waiting for its first byte),
	// so the default --max-connections, 4,096 per side, of silent inbound
	// connections fits under the limit.
	ProxyResources corev1.ResourceRequirements
	// InitResources of mesh-init; the zero value means requests cpu 10m and
	// memory 10Mi, limits cpu 100m and memory 64Mi.
	InitResources corev1.ResourceRequirements
	// Defaults are the install's defaults for every pod: annotations of
	// DefaultAnnotations, which a namespace's and a pod's override, as
	// `mesh install` writes them on the control-plane namespace (the
	// webhook passes that namespace's annotations). A value here that is
	// malformed or not one of DefaultAnnotations is a warning, like a
	// namespace's, so that a namespace edited by hand cannot stop pods
	// from being injected. Nil means none: ProxyLogLevel and
	// ProxyResources, and the proxy's own defaults, apply.
	Defaults map[string]string
	// ClusterNetworks are the cluster's pod, service and node networks,
	// given to every proxy (MESH_PROXY_CLUSTER_NETWORKS): traffic inside
	// them never falls back to plain text when the controller cannot say
	// whether its destination is meshed. Empty means the proxy's default,
	// the RFC 1918 and ULA ranges.
	ClusterNetworks []netip.Prefix
	// CNI is the install's CNI mode (`mesh install --cni`): the mesh CNI
	// plugin on every node installs a pod's interception rules when its
	// network is created, so the pod gets no mesh-init container (nor its
	// xtables lock volume) and needs no NET_ADMIN; its skips travel to the
	// plugin in the names.AnnotationInterception annotation instead of
	// mesh-init's flags.
	CNI bool
}

// ErrConfig is wrapped by every error about a Config.
var ErrConfig = errors.New("inject: invalid config")

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.ControlPlaneNamespace == "" {
		c.ControlPlaneNamespace = names.DefaultControlPlaneNamespace
	}
	if c.DestinationAddr == "" {
		c.DestinationAddr = names.DefaultDestinationAddr(c.ControlPlaneNamespace)
	}
	if c.IdentityAddr == "" {
		c.IdentityAddr = names.DefaultIdentityAddr(c.ControlPlaneNamespace)
	}
	if c.TrustDomain == "" {
		c.TrustDomain = pki.DefaultTrustDomain
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = DefaultImagePullPolicy
	}
	if c.ProxyLogLevel == "" {
		c.ProxyLogLevel = DefaultProxyLogLevel
	}
	if isZero(c.ProxyResources) {
		c.ProxyResources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("20Mi"),
			},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		}
	}
	if isZero(c.InitResources) {
		c.InitResources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("10Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("100m"),
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			},
		}
	}
	return c
}

func isZero(r corev1.ResourceRequirements) bool {
	return len(r.Requests) == 0 && len(r.Limits) == 0 && len(r.Claims) == 0
}

// Validate reports a Config that cannot inject a working pod. Every error
// wraps ErrConfig.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.ProxyImage == "" {
		return fmt.Errorf("%w: the proxy image is required", ErrConfig)
	}
	if c.Version == "" {
		return fmt.Errorf("%w: the proxy version is required", ErrConfig)
	}
	if _, ok := parseLogLevel(c.ProxyLogLevel); !ok {
		return fmt.Errorf("%w: proxy log level %q: want %s", ErrConfig, c.ProxyLogLevel, logLevelsAccepted)
	}
	for _, p := range c.ClusterNetworks {
		// The proxy refuses what it cannot parse or what has host bits set,
		// and would crash-loop.
		if !p.IsValid() || p != p.Masked() {
			return fmt.Errorf("%w: cluster network %s: want a CIDR without host bits, like 10.0.0.0/8", ErrConfig, p)
		}
	}
	for name, r := range map[string]corev1.ResourceRequirements{"proxy": c.ProxyResources, "init": c.InitResources} {
		for res, req := range r.Requests {
			if lim, ok := r.Limits[res]; ok && req.Cmp(lim) > 0 {
				return fmt.Errorf("%w: %s %s request %s is above its limit %s", ErrConfig, name, res, req.String(), lim.String())
			}
		}
	}
	return nil
}

// Skip says why a pod was left alone, as a short stable word fit for a
// metric label. The zero value means the pod was injected.
type Skip string

// The reasons a pod is not injected.
const (
	SkipNone            Skip = ""
	SkipAlreadyInjected Skip = "already-injected"
	SkipSystemNamespace Skip = "system-namespace"
	SkipControlPlane    Skip = "control-plane-namespace"
	SkipDisabled        Skip = "disabled"
	SkipNotEnabled      Skip = "not-enabled"
	SkipHostNetwork     Skip = "host-network"
	SkipNotLinux        Skip = "not-linux"
)

// osLabel is the node label kubelet sets to its operating system, and
// linux its value on the only nodes the proxy and its init container run
// on.
const (
	osLabel = "kubernetes.io/os"
	linux   = "linux"
)

// Warning is one thing about a pod its owner should fix. It never stops a
// pod from running: a bad annotation is ignored and its default used.
type Warning struct {
	// Annotation is the key at fault, or "" when the warning is about the
	// pod as a whole (it asked for injection where none is possible).
	Annotation string
	// Message names the annotation, its value and what is accepted.
	Message string
}

// Result says what Pod or PodTemplate did.
type Result struct {
	// Injected is true when the pod was changed.
	Injected bool
	// Skip says why the pod was not injected, as a word; SkipNone when it was.
	Skip Skip
	// Reason says why the pod was not injected, in words; "" when it was.
	Reason string
	// Warnings are the messages of Details, in order: what the webhook
	// returns to kubectl and the CLI prints.
	Warnings []string
	// Details are the warnings with the annotation each is about, for
	// events and metrics. A warning with no annotation comes only with a
	// skipped pod.
	Details []Warning
}

func (r *Result) warn(annotation, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.Warnings = append(r.Warnings, msg)
	r.Details = append(r.Details, Warning{Annotation: annotation, Message: msg})
}

func (r *Result) skip(s Skip, format string, args ...any) {
	r.Skip = s
	r.Reason = fmt.Sprintf(format, args...)
}

// Pod injects pod in place when the rules of the package comment say so.
// ns is the pod's namespace; nil means one with no annotations, named
// pod.Namespace. The error is only ever about cfg (it wraps ErrConfig):
// anything wrong with the pod is a warning in the Result, and pod is
// changed only when Result.Injected.
func Pod(pod *corev1.Pod, ns *corev1.Namespace, cfg Config) (Result, error) {
	return PodTemplate(&pod.ObjectMeta, &pod.Spec, ns, cfg)
}

// PodTemplate is Pod for the parts of a pod, as found in the template of a
// Deployment, StatefulSet, DaemonSet, Job or CronJob: it changes meta and
// spec (both non-nil) in place. ns is the namespace the pods will run in;
// nil means one with no annotations named meta.Namespace (usually empty in
// a template, so callers pass the workload's namespace). `mesh inject
// --manual` sets mesh.dev/inject=enabled on meta first to inject regardless
// of the namespace.
func PodTemplate(meta *metav1.ObjectMeta, spec *corev1.PodSpec, ns *corev1.Namespace, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	cfg = cfg.withDefaults()
	if ns == nil {
		ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meta.Namespace}}
	}
	res, ok := shouldInject(meta, spec, ns, cfg)
	if !ok {
		return res, nil
	}
	o := parseOverrides(podLayers(meta.Annotations, ns, cfg), cfg, &res)
	mutate(meta, spec, o, cfg)
	res.Injected = true
	return res, nil
}

// shouldInject applies the opt-in rules; the Result says why not, and
// carries the warnings about mesh.dev/inject.
func shouldInject(meta *metav1.ObjectMeta, spec *corev1.PodSpec, ns *corev1.Namespace, cfg Config) (Result, bool) {
	var res Result
	if injected(meta, spec) {
		res.skip(SkipAlreadyInjected, "the pod already has the %s sidecar", names.ProxyContainerName)
		return res, false
	}
	nsName := ns.Name
	podSays := injectValue(&res, meta.Annotations, "the pod")
	nsSays := injectValue(&res, ns.Annotations, "namespace "+nsName)
	asked := podSays == names.Enabled || (podSays == "" && nsSays == names.Enabled)

	var protected Skip
	switch nsName {
	case systemNamespace:
		protected = SkipSystemNamespace
	case cfg.ControlPlaneNamespace:
		protected = SkipControlPlane
	}
	if protected != SkipNone {
		res.skip(protected, "pods in namespace %s are never injected", nsName)
		if asked {
			res.warn("", "%s=%s is ignored: pods in namespace %s are never injected", names.AnnotationInject, names.Enabled, nsName)
		}
		return res, false
	}
	switch {
	case podSays == names.Disabled:
		res.skip(SkipDisabled, "the pod is annotated %s=%s", names.AnnotationInject, names.Disabled)
		return res, false
	case !asked:
		res.skip(SkipNotEnabled, "neither the pod nor namespace %s is annotated %s=%s", nsName, names.AnnotationInject, names.Enabled)
		return res, false
	case spec.HostNetwork:
		res.skip(SkipHostNetwork, "the pod uses the node's network (hostNetwork: true)")
		res.warn("", "%s=%s is ignored: the pod uses hostNetwork, and intercepting its traffic would intercept the node's", names.AnnotationInject, names.Enabled)
		return res, false
	case spec.NodeSelector[osLabel] != "" && spec.NodeSelector[osLabel] != linux:
		os := spec.NodeSelector[osLabel]
		res.skip(SkipNotLinux, "the pod runs on %s nodes (nodeSelector %s=%s)", os, osLabel, os)
		res.warn("", "%s=%s is ignored: the pod selects %s nodes, and the proxy runs on Linux only", names.AnnotationInject, names.Enabled, quote(os))
		return res, false
	}
	return res, true
}

// injectValue returns the mesh.dev/inject value of annotations, or "" when
// absent or not understood (with a warning naming whose it is).
func injectValue(res *Result, annotations map[string]string, whose string) string {
	v, ok := annotations[names.AnnotationInject]
	if !ok {
		return ""
	}
	if v != names.Enabled && v != names.Disabled {
		res.warn(names.AnnotationInject, "annotation %s=%s on %s is ignored: want %s or %s",
			names.AnnotationInject, quote(v), whose, names.Enabled, names.Disabled)
		return ""
	}
	return v
}

// injected reports whether the pod already carries the sidecar, in part or
// whole: injecting again would duplicate container names and be rejected.
func injected(meta *metav1.ObjectMeta, spec *corev1.PodSpec) bool {
	if _, ok := meta.Annotations[names.AnnotationProxyVersion]; ok {
		return true
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			if c.Name == names.ProxyContainerName || c.Name == names.InitContainerName {
				return true
			}
		}
	}
	for _, v := range spec.Volumes {
		if v.Name == LockVolumeName {
			return true
		}
	}
	return false
}

// mutate adds the sidecar; shouldInject has said yes.
func mutate(meta *metav1.ObjectMeta, spec *corev1.PodSpec, o overrides, cfg Config) {
	meta.Annotations = withEntry(meta.Annotations, names.AnnotationProxyVersion, cfg.Version)
	meta.Labels = withEntry(meta.Labels, names.LabelControlPlaneNamespace, cfg.ControlPlaneNamespace)
	// The proxy's image is Linux only (amd64 and arm64): on a cluster with
	// Windows nodes, a pod the scheduler put there would never start.
	spec.NodeSelector = withEntry(spec.NodeSelector, osLabel, linux)
	// mesh-init runs first; mesh-proxy, a native sidecar, starts next and
	// must be ready before the pod's own init containers and containers
	// start, so their traffic is proxied from their first connection.
	if cfg.identityEnabled() {
		offerWorkloadAPI(spec) // before the proxy joins the list
		spec.Volumes = append(spec.Volumes, identityVolumes()...)
	}
	if cfg.CNI {
		// The plugin has installed the rules before any container starts.
		meta.Annotations[names.AnnotationInterception] = interceptionAnnotation(o)
		spec.InitContainers = append([]corev1.Container{proxyContainer(o, cfg)}, spec.InitContainers...)
		return
	}
	spec.InitContainers = append([]corev1.Container{initContainer(o, cfg), proxyContainer(o, cfg)}, spec.InitContainers...)
	spec.Volumes = append(spec.Volumes, corev1.Volume{
		Name:         LockVolumeName,
		VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
	})
}

// interceptionAnnotation is the value of names.AnnotationInterception: the
// pod's skips, the only settings of mesh-init's that a pod chooses. The
// ports and the proxy's UID are left to the plugin's defaults, which are
// the names package's constants the proxy container is written with.
func interceptionAnnotation(o overrides) string {
	s := interception.Settings{
		SkipInboundPorts:    o.skipInbound,
		SkipOutboundPorts:   o.skipOutbound,
		SkipOutboundSubnets: o.skipSubnets,
	}
	b, err := json.Marshal(s)
	if err != nil {
		// Settings holds port sets and prefixes that parsed, whose JSON
		// cannot fail; a failure is a bug in this package.
		panic(fmt.Sprintf("inject: marshalling %s: %v", names.AnnotationInterception, err))
	}
	return string(b)
}

func withEntry(m map[string]string, k, v string) map[string]string {
	m = maps.Clone(m)
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}
