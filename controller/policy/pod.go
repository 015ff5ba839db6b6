package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/internal/names"
)

// GRPCHealthCheckPath is the request path of a kubelet gRPC probe
// (grpc.health.v1.Health/Check).
const GRPCHealthCheckPath = "/grpc.health.v1.Health/Check"

// defaults are the install-wide inputs of a pod's policy.
type defaults struct {
	// policy is the install's default inbound policy, valid.
	policy string
	// clusterNetworks spell out the cluster-* default policies.
	clusterNetworks []*inboundv1.Network
}

// podPolicy computes pod's policy from its namespace's np. The warnings
// say what of the pod's own configuration was ignored, and which Server
// lost a port to an older one. It returns a nil policy only when the
// policy cannot be encoded, which the warnings then explain.
func (d *defaults) podPolicy(pod *corev1.Pod, np *namespacePolicy) (*inboundv1.PodPolicy, []string) {
	var warnings []string
	warn := func(format string, args ...any) { warnings = append(warnings, fmt.Sprintf(format, args...)) }

	policy := cmp.Or(np.defaultPolicy, d.policy)
	if v, ok := pod.Annotations[names.AnnotationDefaultInboundPolicy]; ok {
		if p, err := names.ParseDefaultInboundPolicy(v); err != nil {
			warn("annotation %s is ignored, the default %s applies: %v", names.AnnotationDefaultInboundPolicy, policy, err)
		} else {
			policy = p
		}
	}
	authz, audit := defaultAuthorizations(policy, d.clusterNetworks)
	pp := &inboundv1.PodPolicy{
		DefaultPolicy:         policy,
		DefaultAuthorizations: authz,
		Audit:                 audit,
		Probes:                probes(pod),
	}

	containers := appContainers(pod)
	podLabels := labels.Set(pod.Labels)
	claimed := map[uint32]string{} // port → Server
	for _, s := range np.servers { // oldest first: the first claim wins
		if !s.selector.Matches(podLabels) {
			continue
		}
		for _, port := range serverPorts(s.port, containers) {
			if owner, ok := claimed[port]; ok {
				warn("Servers %s and %s both select port %d; the older, %s, applies", owner, s.name, port, owner)
				continue
			}
			claimed[port] = s.name
			pp.Ports = append(pp.Ports, &inboundv1.PortPolicy{
				Port:           port,
				Server:         s.name,
				Protocol:       s.protocol,
				Authorizations: np.authorizations[s.name],
				RateLimit:      np.rateLimits[s.name],
				Routes:         np.routes[s.name].GetRoutes(),
				RouteRules:     np.routes[s.name].GetRules(),
			})
		}
	}
	slices.SortFunc(pp.Ports, func(a, b *inboundv1.PortPolicy) int { return cmp.Compare(a.GetPort(), b.GetPort()) })
	rev, err := revision(pp)
	if err != nil {
		return nil, append(warnings, err.Error())
	}
	pp.Revision = rev
	return pp, warnings
}

// appContainers are the containers of pod that are the application's: the
// regular ones and the native sidecars (restartable init containers), but
// not the mesh's own.
func appContainers(pod *corev1.Pod) []*corev1.Container {
	var out []*corev1.Container
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways && !isMesh(c) {
			out = append(out, c)
		}
	}
	for i := range pod.Spec.Containers {
		if c := &pod.Spec.Containers[i]; !isMesh(c) {
			out = append(out, c)
		}
	}
	return out
}

func isMesh(c *corev1.Container) bool {
	return c.Name == names.ProxyContainerName || c.Name == names.InitContainerName
}

// serverPorts resolves a Server's spec.port: a number is itself, whether
// or not a container declares it; a name is every TCP port of that name
// the containers declare, none when no container does (the Server then
// does not apply to the pod).
func serverPorts(port intstr.IntOrString, containers []*corev1.Container) []uint32 {
	if port.Type == intstr.Int {
		if port.IntVal < 1 || port.IntVal > 65535 {
			return nil
		}
		return []uint32{uint32(port.IntVal)}
	}
	var out []uint32
	for _, c := range containers {
		for _, p := range c.Ports {
			if p.Name == port.StrVal && isTCP(p) && p.ContainerPort >= 1 && p.ContainerPort <= 65535 {
				out = append(out, uint32(p.ContainerPort))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func isTCP(p corev1.ContainerPort) bool {
	return p.Protocol == "" || p.Protocol == corev1.ProtocolTCP
}

// probes returns the kubelet's HTTP and gRPC probes of pod's application
// containers, sorted and without duplicates. Exec and TCP probes carry no
// path to exempt, and are not listed.
func probes(pod *corev1.Pod) []*inboundv1.Probe {
	var out []*inboundv1.Probe
	for _, c := range appContainers(pod) {
		for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
			if p == nil {
				continue
			}
			switch {
			case p.HTTPGet != nil:
				if port, ok := probePort(p.HTTPGet.Port, c); ok {
					out = append(out, &inboundv1.Probe{Port: port, Path: probePath(p.HTTPGet.Path)})
				}
			case p.GRPC != nil:
				if p.GRPC.Port >= 1 && p.GRPC.Port <= 65535 {
					out = append(out, &inboundv1.Probe{Port: uint32(p.GRPC.Port), Path: GRPCHealthCheckPath})
				}
			}
		}
	}
	slices.SortFunc(out, compareProbes)
	return slices.CompactFunc(out, func(a, b *inboundv1.Probe) bool { return compareProbes(a, b) == 0 })
}

func compareProbes(a, b *inboundv1.Probe) int {
	return cmp.Or(cmp.Compare(a.GetPort(), b.GetPort()), strings.Compare(a.GetPath(), b.GetPath()))
}

// probePort resolves a probe's port as the kubelet does: a number, or the
// name of one of the probed container's own ports, or failing that a
// number written as a string.
func probePort(port intstr.IntOrString, c *corev1.Container) (uint32, bool) {
	n := int(port.IntVal)
	if port.Type == intstr.String {
		n = -1
		for _, p := range c.Ports {
			if p.Name == port.StrVal {
				n = int(p.ContainerPort)
				break
			}
		}
		if n < 0 {
			var err error
			if n, err = strconv.Atoi(port.StrVal); err != nil {
				return 0, false
			}
		}
	}
	if n < 1 || n > 65535 {
		return 0, false
	}
	return uint32(n), true
}

// probePath is an httpGet probe's path as the kubelet requests it: as
// declared, query included (a proxy matches the query too), with the
// leading "/" the kubelet adds when it is missing, and "/" when empty.
func probePath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

// revision is a short hash of pp's deterministic encoding (with no
// revision set), so that equal policies have equal revisions across
// controller restarts and replicas.
func revision(pp *inboundv1.PodPolicy) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(pp)
	if err != nil {
		// Only invalid UTF-8 in a string fails, which the API server's
		// JSON decoding never lets through; gRPC could not send it either.
		return "", fmt.Errorf("the policy cannot be encoded, the proxy keeps the one it has: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}
