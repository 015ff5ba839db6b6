package inject

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mesh-dev/mesh/internal/clusternet"
	"github.com/mesh-dev/mesh/internal/names"
)

// Environment variables of mesh-proxy (internal/envflag: MESH_PROXY_ + flag).
const (
	envLogLevel    = "MESH_PROXY_LOG_LEVEL"
	envLogFormat   = "MESH_PROXY_LOG_FORMAT"
	envOpaquePorts = "MESH_PROXY_OPAQUE_PORTS"
	// The control plane the proxy asks for endpoints, and the namespace
	// short names in requests are relative to.
	envDestinationAddr = "MESH_PROXY_DESTINATION_ADDR"
	envNamespace       = "MESH_PROXY_NAMESPACE"
	// The pod whose inbound policy the proxy watches from the controller.
	envPodName = "MESH_PROXY_POD_NAME"
	// Where traffic never falls back to plain text (Config.ClusterNetworks).
	envClusterNetworks = "MESH_PROXY_CLUSTER_NETWORKS"
	// The Go runtime's soft memory limit (runtime/debug.SetMemoryLimit).
	envGoMemLimit = "GOMEMLIMIT"
	// The proxy's GOMAXPROCS (--max-procs).
	envMaxProcs = "MESH_PROXY_MAX_PROCS"
	// The Go runtime's debugging settings, read once at start.
	envGoDebug = "GODEBUG"
	// The access log's format, "" for none (names.AnnotationAccessLog).
	envAccessLog = "MESH_PROXY_ACCESS_LOG"
	// Where the proxy exports spans (OTLP/gRPC host:port), and the share of
	// requests without a sampling decision it traces.
	envTracingCollector  = "MESH_PROXY_TRACING_COLLECTOR"
	envTracingSampleRate = "MESH_PROXY_TRACING_SAMPLE_RATE"
)

// proxyGoDebug keeps the Go runtime's monitor thread (sysmon) from its
// deep sleep. With GOMAXPROCS 1 the proxy's only P goes idle between
// requests at moderate rates; sysmon then parks, and the next request's
// first system call wakes it again, after which it polls every 20 µs until
// the P is idle once more, and retakes the P from any write that lasts
// longer than that, waking another thread to run the proxy meanwhile. On
// the local cluster at 500 RPS that was 4.4 sysmon wake-ups, 3 futex calls
// and about 40 µs of CPU per request in each proxy (docs/benchmarks.md,
// bench-mesh). A positive schedtrace is the runtime's only switch that
// keeps sysmon from parking (runtime/proc.go, sysmon): it stays awake and
// backs off to its slowest period, 10 ms, so it wakes 100 times a second
// whatever the load. The trace it would print every schedtrace ms is set
// to the largest period, 2^31-1 ms (24.8 days of the node's uptime): a
// proxy prints one scheduler line at start on a node up for longer, and
// a fatal error's dump includes the scheduler's state.
const proxyGoDebug = "schedtrace=2147483647"

// goMemLimitPercent of the container's memory limit is where the Go
// runtime starts collecting garbage harder: the rest is headroom for
// memory the runtime does not count (thread stacks, kernel buffers) so the
// proxy slows down under pressure instead of being OOM-killed.
const goMemLimitPercent = 90

// goMemLimit is GOMEMLIMIT for resources: goMemLimitPercent of the memory
// limit, in whole MiB when it is that large; false when there is no limit.
func goMemLimit(r corev1.ResourceRequirements) (string, bool) {
	lim, ok := r.Limits[corev1.ResourceMemory]
	if !ok || lim.Value() <= 0 {
		return "", false
	}
	b := lim.Value() / 100 * goMemLimitPercent
	if b >= 1<<20 {
		return strconv.FormatInt(b>>20, 10) + "MiB", true
	}
	return strconv.FormatInt(b, 10), true // bytes
}

// maxProcs is MESH_PROXY_MAX_PROCS for resources: the CPU limit rounded up
// to whole CPUs; false when there is no limit. The proxy finds the same
// limit in its cgroup by itself, but not on a node of cgroup v1, where
// the Go runtime's own reading rounds a limit under 2 CPUs up to 2.
func maxProcs(r corev1.ResourceRequirements) (string, bool) {
	lim, ok := r.Limits[corev1.ResourceCPU]
	if !ok || lim.Sign() <= 0 {
		return "", false
	}
	return strconv.FormatInt((lim.MilliValue()+999)/1000, 10), true
}

// initContainer is mesh-init: `mesh-proxy init` with the pod's skips, as
// root with only the capabilities iptables needs.
func initContainer(o overrides, cfg Config) corev1.Container {
	args := []string{"init"}
	if !o.skipInbound.Empty() {
		args = append(args, "--skip-inbound-ports="+o.skipInbound.String())
	}
	if !o.skipOutbound.Empty() {
		args = append(args, "--skip-outbound-ports="+o.skipOutbound.String())
	}
	if len(o.skipSubnets) > 0 {
		s := make([]string, len(o.skipSubnets))
		for i, p := range o.skipSubnets {
			s[i] = p.String()
		}
		args = append(args, "--skip-outbound-subnets="+strings.Join(s, ","))
	}
	return corev1.Container{
		Name:            names.InitContainerName,
		Image:           cfg.ProxyImage,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Args:            args,
		Resources:       *cfg.InitResources.DeepCopy(),
		// iptables takes its lock under /run; the root filesystem is read-only.
		VolumeMounts: []corev1.VolumeMount{{Name: LockVolumeName, MountPath: "/run"}},
		SecurityContext: &corev1.SecurityContext{
			// Explicit, so a pod-level runAsNonRoot or runAsUser does not
			// apply: changing netfilter rules takes root and NET_ADMIN.
			RunAsUser:                ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities: &corev1.Capabilities{
				Drop: []corev1.Capability{"ALL"},
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
			},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// proxyContainer is mesh-proxy as a native sidecar (an init container that
// restarts Always): it starts before the application, is ready before the
// application starts, and lets Jobs complete when their containers do.
func proxyContainer(o overrides, cfg Config) corev1.Container {
	env := []corev1.EnvVar{
		{Name: envLogLevel, Value: o.logLevel},
		{Name: envLogFormat, Value: "json"},
		{Name: envDestinationAddr, Value: cfg.DestinationAddr},
		{Name: envNamespace, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
		}},
		// From the downward API: a template's pods get their names only
		// when they are created.
		{Name: envPodName, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"},
		}},
	}
	if len(cfg.ClusterNetworks) > 0 {
		env = append(env, corev1.EnvVar{Name: envClusterNetworks, Value: clusternet.Format(cfg.ClusterNetworks)})
	}
	if o.opaquePorts != nil {
		env = append(env, corev1.EnvVar{Name: envOpaquePorts, Value: o.opaquePorts.String()})
	}
	for _, e := range []corev1.EnvVar{
		{Name: envAccessLog, Value: o.accessLog},
		{Name: envTracingCollector, Value: o.tracingCollector},
		{Name: envTracingSampleRate, Value: o.tracingSampleRate},
	} {
		if e.Value != "" { // unset: the proxy's default, off
			env = append(env, e)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(o.limits)) {
		env = append(env, corev1.EnvVar{Name: name, Value: o.limits[name]})
	}
	// An annotated proxy-max-procs is in o.limits, and wins.
	if _, annotated := o.limits[envMaxProcs]; !annotated {
		if v, ok := maxProcs(o.resources); ok {
			env = append(env, corev1.EnvVar{Name: envMaxProcs, Value: v})
		}
	}
	if v, ok := goMemLimit(o.resources); ok {
		env = append(env, corev1.EnvVar{Name: envGoMemLimit, Value: v})
	}
	env = append(env, corev1.EnvVar{Name: envGoDebug, Value: proxyGoDebug})
	var mounts []corev1.VolumeMount
	ports := []corev1.ContainerPort{
		{Name: "mesh-inbound", ContainerPort: names.InboundPort, Protocol: corev1.ProtocolTCP},
		{Name: names.AdminPortName, ContainerPort: names.AdminPort, Protocol: corev1.ProtocolTCP},
	}
	if cfg.identityEnabled() {
		env = append(env, identityEnv(cfg)...)
		mounts = identityMounts()
		// Tap needs the proxy's identity: without one there is no listener.
		ports = append(ports, corev1.ContainerPort{Name: "mesh-tap", ContainerPort: names.TapPort, Protocol: corev1.ProtocolTCP})
	}
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromInt32(names.AdminPort), Scheme: corev1.URISchemeHTTP,
			}},
			PeriodSeconds:    period,
			TimeoutSeconds:   1,
			SuccessThreshold: 1,
			FailureThreshold: failures,
		}
	}
	return corev1.Container{
		Name:            names.ProxyContainerName,
		Image:           cfg.ProxyImage,
		ImagePullPolicy: cfg.ImagePullPolicy,
		RestartPolicy:   ptr(corev1.ContainerRestartPolicyAlways),
		Env:             env,
		VolumeMounts:    mounts,
		Ports:           ports,
		// The application starts once the startup probe passes: checked
		// every second for up to two minutes.
		StartupProbe:   probe("/ready", 1, 120),
		ReadinessProbe: probe("/ready", 5, 3),
		LivenessProbe:  probe("/live", 10, 3),
		Resources:      o.resources,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(int64(names.ProxyUID)),
			RunAsGroup:               ptr(int64(names.ProxyUID)),
			RunAsNonRoot:             ptr(true),
			ReadOnlyRootFilesystem:   ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

func ptr[T any](v T) *T { return &v }
