// Package names holds the names the injector, the controller, the proxy
// and the CLI share: annotations, labels, container names, ports, the
// proxy's UID, ServiceAccounts, the default inbound policies.
//
// They are the contract of DESIGN.md, written once: a name that two
// components spelled separately could drift apart, and a pod injected by
// one version would then go unrecognised by another. The package imports
// nothing of ours, so the proxy, the controller and identity/ can all use
// it without depending on install/ or on each other.
package names

import "strconv"

// Annotations and labels of the contract in DESIGN.md.
const (
	// AnnotationInject opts a namespace or pod in (Enabled) or a pod out (Disabled).
	AnnotationInject = "mesh.dev/inject"
	// LabelWebhook set to WebhookIgnore on a namespace keeps the proxy
	// injector out of it whatever its annotations say: the webhook
	// configuration's namespaceSelector does not send its pods, so even
	// with failurePolicy Fail (--ha) an injector outage cannot block them,
	// and the injector skips any it is sent. A label, not an annotation,
	// because only labels can be selected on.
	LabelWebhook  = "mesh.dev/webhook"
	WebhookIgnore = "ignore"
	// AnnotationProxyVersion marks an injected pod with the proxy's
	// version; viz scrapes only pods that carry it.
	AnnotationProxyVersion = "mesh.dev/proxy-version"
	// AnnotationInterception on a pod injected in CNI mode holds, as JSON,
	// the interception settings the mesh CNI plugin applies when the pod's
	// network is created, in place of mesh-init's flags
	// (install/cni/interception.Settings is its shape).
	AnnotationInterception = "mesh.dev/interception"
	// AnnotationCNI set to Enabled on the control-plane namespace says the
	// install is in CNI mode (`mesh install --cni`): the injector writes
	// AnnotationInterception instead of the mesh-init container, and
	// `mesh check` checks the CNI plugin's DaemonSet.
	AnnotationCNI = "mesh.dev/cni"
	// LabelControlPlaneNamespace marks an injected pod with the namespace of
	// the control plane it belongs to.
	LabelControlPlaneNamespace = "mesh.dev/control-plane-ns"
	// ConfigPrefix starts every per-pod override annotation.
	ConfigPrefix = "config.mesh.dev/"

	Enabled  = "enabled"
	Disabled = "disabled"
)

// The per-pod override annotations (ConfigPrefix + name), read by the
// injector when it writes the sidecar.
const (
	AnnotationOpaquePorts         = ConfigPrefix + "opaque-ports"
	AnnotationSkipInboundPorts    = ConfigPrefix + "skip-inbound-ports"
	AnnotationSkipOutboundPorts   = ConfigPrefix + "skip-outbound-ports"
	AnnotationSkipOutboundSubnets = ConfigPrefix + "skip-outbound-subnets"
	AnnotationProxyLogLevel       = ConfigPrefix + "proxy-log-level"
	AnnotationProxyCPURequest     = ConfigPrefix + "proxy-cpu-request"
	AnnotationProxyMemoryRequest  = ConfigPrefix + "proxy-memory-request"
	AnnotationProxyCPULimit       = ConfigPrefix + "proxy-cpu-limit"
	AnnotationProxyMemoryLimit    = ConfigPrefix + "proxy-memory-limit"

	// The proxy's limits (mesh-proxy's flags of the same names).
	AnnotationProxyMaxConnections       = ConfigPrefix + "proxy-max-connections"
	AnnotationProxyMaxConnsPerHost      = ConfigPrefix + "proxy-max-conns-per-host"
	AnnotationProxyOpaqueIdleTimeout    = ConfigPrefix + "proxy-opaque-idle-timeout"
	AnnotationProxyHTTP1BodyIdleTimeout = ConfigPrefix + "proxy-http1-body-idle-timeout"
	// AnnotationProxyMaxProcs is the proxy's GOMAXPROCS (--max-procs),
	// over the one the injector derives from the proxy's CPU limit.
	AnnotationProxyMaxProcs = ConfigPrefix + "proxy-max-procs"
	// AnnotationProxyAdminProfiling "true" serves the Go runtime's profiles
	// on the proxy's admin port, to loopback clients only
	// (--admin-profiling): for kubectl port-forward or exec, never the
	// network.
	AnnotationProxyAdminProfiling = ConfigPrefix + "proxy-admin-profiling"

	// AnnotationDefaultInboundPolicy on a pod or its namespace (the pod's
	// wins) overrides the install's default inbound policy, one of
	// DefaultInboundPolicies. The controller reads it from the pod and the
	// namespace when it serves the pod's proxy its policy; the injector
	// only checks it, and leaves it on the pod. A malformed value is
	// ignored: the next one down (the namespace's, then the install's)
	// applies.
	AnnotationDefaultInboundPolicy = ConfigPrefix + "default-inbound-policy"
)

// Names of the containers an injected pod gains.
const (
	ProxyContainerName = "mesh-proxy"
	InitContainerName  = "mesh-init"
)

// The proxy's defaults of DESIGN.md: what mesh-proxy listens on with no
// flags, what `mesh-proxy init` redirects to with none, and what the
// injector writes into the pod.
const (
	// ProxyUID is the UID (and GID) the proxy runs as; mesh-proxy init
	// exempts its connections from interception.
	ProxyUID = 2102

	InboundPort  = 4143
	OutboundPort = 4140
	// AdminPort serves metrics and probes; it is never redirected, so
	// kubelet and scrapers reach the proxy itself.
	AdminPort = 4191
	// TapPort serves tap over mesh TLS; it is never redirected either.
	TapPort = 4190
	// AdminPortName names AdminPort in the proxy container's ports: viz
	// scrapes the port of that name.
	AdminPortName = "mesh-admin"
)

// The control plane's namespace and ServiceAccounts: workload identities
// are derived from them, so proxies can name the control plane's SPIFFE IDs.
const (
	DefaultControlPlaneNamespace = "mesh-system"
	// ControllerServiceAccount is mesh-controller's: the identity and
	// destination services present the SPIFFE ID of it, which proxies
	// require.
	ControllerServiceAccount = "mesh-controller"
	// VizServiceAccount is mesh-viz's: its SPIFFE ID is the only client a
	// proxy's tap server admits.
	VizServiceAccount = "mesh-viz"
)

// Where an injected pod's identity material is, shared by the injector that
// mounts it and the proxy that reads it.
const (
	// IdentityTokenAudience is the audience of the projected ServiceAccount
	// token a proxy proves its identity with; the identity service accepts
	// no other, so the token is useless to the API server or anyone else.
	IdentityTokenAudience = "identity.mesh.dev"
	// IdentityTokenDir is where that token is mounted in the proxy, as
	// file IdentityTokenFile.
	IdentityTokenDir  = "/var/run/secrets/mesh.dev/identity"
	IdentityTokenFile = "token"
	// SPIFFESocketDir holds the proxy's SPIFFE Workload API socket,
	// SPIFFESocketFile, in the proxy and in the application containers.
	SPIFFESocketDir  = "/var/run/mesh/spiffe"
	SPIFFESocketFile = "socket"
)

// The control plane's ports proxies dial, as `mesh install` exposes them
// through headless Services.
const (
	// DestinationPort serves the destination and inbound policy APIs to
	// proxies, over mesh TLS.
	DestinationPort = 8086
	// IdentityPort serves the identity service's Certify API.
	IdentityPort = 8080
)

// DefaultDestinationAddr is where proxies reach the controller's gRPC API
// when it runs in namespace ns: the headless Service of `mesh install`.
// The name is absolute (a trailing dot), so that it resolves the same
// from every namespace without trying the pod's DNS search domains first.
func DefaultDestinationAddr(ns string) string {
	return "mesh-controller." + ns + ".svc.cluster.local.:" + strconv.Itoa(DestinationPort)
}

// DefaultIdentityAddr is the identity service of a control plane in
// namespace ns: the headless Service of `mesh install`, absolute like
// DefaultDestinationAddr's.
func DefaultIdentityAddr(ns string) string {
	return "mesh-identity." + ns + ".svc.cluster.local.:" + strconv.Itoa(IdentityPort)
}
