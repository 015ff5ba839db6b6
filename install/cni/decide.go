package cni

import (
	"log/slog"
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/mesh-dev/mesh/install/cni/interception"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/ports"
	"github.com/mesh-dev/mesh/proxy/iptables"
)

// rulesConfig is the iptables.Config of the settings.
func rulesConfig(in interception.Settings) iptables.Config {
	subnets := make([]netip.Prefix, len(in.SkipOutboundSubnets))
	for i, p := range in.SkipOutboundSubnets {
		subnets[i] = p.Masked()
	}
	return iptables.Config{
		InboundPort:         in.InboundPort,
		OutboundPort:        in.OutboundPort,
		AdminPort:           in.AdminPort,
		TapPort:             in.TapPort,
		ProxyUID:            in.ProxyUID,
		SkipInboundPorts:    in.SkipInboundPorts,
		SkipOutboundPorts:   in.SkipOutboundPorts,
		SkipOutboundSubnets: subnets,
	}
}

// Decision is what ADD does with one pod.
type Decision struct {
	// Mesh is false when the pod keeps its network as it is; Reason says why.
	Mesh   bool
	Reason string
	// Rules are the pod's interception settings when Mesh is true.
	Rules interception.Settings
}

// Decide says whether pod is meshed and with which rules. A pod is meshed
// when it carries the mesh-proxy container, does not opt out and has its
// own network namespace. Its settings come from interception.Annotation
// when the injector wrote it, or else from the same config.mesh.dev/skip-*
// annotations mesh-init's flags are derived from, where a malformed value
// is logged and ignored as the injector ignores it.
func Decide(pod *corev1.Pod, log *slog.Logger) (Decision, error) {
	switch {
	case pod.Spec.HostNetwork:
		return Decision{Reason: "the pod uses the node's network"}, nil
	case pod.Annotations[names.AnnotationInject] == names.Disabled:
		return Decision{Reason: "the pod opts out with " + names.AnnotationInject + "=" + names.Disabled}, nil
	case !hasProxy(pod):
		return Decision{Reason: "the pod has no " + names.ProxyContainerName + " container"}, nil
	}
	if v, ok := pod.Annotations[interception.Annotation]; ok {
		in, err := interception.Parse(v)
		if err != nil {
			return Decision{}, err
		}
		return Decision{Mesh: true, Reason: "annotation " + interception.Annotation, Rules: in}, nil
	}
	var in interception.Settings
	for _, a := range []struct {
		name string
		set  *ports.Set
	}{
		{names.AnnotationSkipInboundPorts, &in.SkipInboundPorts},
		{names.AnnotationSkipOutboundPorts, &in.SkipOutboundPorts},
	} {
		v, ok := pod.Annotations[a.name]
		if !ok {
			continue
		}
		s, err := ports.Parse(v)
		if err != nil {
			log.Warn("ignoring malformed annotation", "annotation", a.name, "value", v, "err", err)
			continue
		}
		*a.set = s
	}
	if v, ok := pod.Annotations[names.AnnotationSkipOutboundSubnets]; ok {
		subnets, err := iptables.ParseSubnets(v)
		if err != nil {
			log.Warn("ignoring malformed annotation", "annotation", names.AnnotationSkipOutboundSubnets, "value", v, "err", err)
		} else {
			in.SkipOutboundSubnets = subnets
		}
	}
	return Decision{Mesh: true, Reason: "the pod's " + names.ConfigPrefix + "skip-* annotations", Rules: in}, nil
}

func hasProxy(pod *corev1.Pod) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == names.ProxyContainerName {
				return true
			}
		}
	}
	return false
}
