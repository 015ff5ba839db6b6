package cni

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/ports"
	"github.com/mesh-dev/mesh/proxy/iptables"
)

// AnnotationInterception is the pod annotation the injector writes in CNI
// mode: the settings `mesh-proxy init` would have taken as flags, as JSON
// (Interception). It belongs with the other shared names in internal/names
// once the injector writes it; it is spelled here until then.
const AnnotationInterception = "mesh.dev/interception"

// Interception is the JSON of AnnotationInterception. Every field is
// optional and its zero value means mesh-proxy init's default, so `{}`
// installs the same rules as `mesh-proxy init` with no flags. Fields this
// version does not know are ignored, so an injector newer than the plugin
// does not stop pods from starting.
//
//	{"inboundPort":4143,"outboundPort":4140,"adminPort":4191,"tapPort":4190,
//	 "proxyUID":2102,"skipInboundPorts":"22,9000-9010","skipOutboundPorts":"25",
//	 "skipOutboundSubnets":["10.0.0.0/8"]}
type Interception struct {
	InboundPort         uint16         `json:"inboundPort,omitempty"`
	OutboundPort        uint16         `json:"outboundPort,omitempty"`
	AdminPort           uint16         `json:"adminPort,omitempty"`
	TapPort             uint16         `json:"tapPort,omitempty"`
	ProxyUID            int            `json:"proxyUID,omitempty"`
	SkipInboundPorts    ports.Set      `json:"skipInboundPorts,omitzero"`
	SkipOutboundPorts   ports.Set      `json:"skipOutboundPorts,omitzero"`
	SkipOutboundSubnets []netip.Prefix `json:"skipOutboundSubnets,omitempty"`
}

// IPTables is the iptables.Config of these settings.
func (in Interception) IPTables() iptables.Config {
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

// ParseInterception reads the annotation's value. The injector wrote it, so
// a value that does not parse is an error: guessing could leave a meshed
// pod's traffic unintercepted.
func ParseInterception(s string) (Interception, error) {
	var in Interception
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return Interception{}, fmt.Errorf("annotation %s: %w", AnnotationInterception, err)
	}
	if in.ProxyUID < 0 {
		return Interception{}, fmt.Errorf("annotation %s: proxy UID %d is not a UID", AnnotationInterception, in.ProxyUID)
	}
	for _, p := range in.SkipOutboundSubnets {
		if !p.IsValid() { // netip reads "" as the zero Prefix without error
			return Interception{}, fmt.Errorf("annotation %s: skipOutboundSubnets has an empty subnet", AnnotationInterception)
		}
	}
	return in, nil
}

// Decision is what ADD does with one pod.
type Decision struct {
	// Mesh is false when the pod keeps its network as it is; Reason says why.
	Mesh   bool
	Reason string
	// Rules are the pod's interception settings when Mesh is true.
	Rules Interception
}

// Decide says whether pod is meshed and with which rules. A pod is meshed
// when it carries the mesh-proxy container, does not opt out and has its
// own network namespace. Its settings come from AnnotationInterception
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
	if v, ok := pod.Annotations[AnnotationInterception]; ok {
		in, err := ParseInterception(v)
		if err != nil {
			return Decision{}, err
		}
		return Decision{Mesh: true, Reason: "annotation " + AnnotationInterception, Rules: in}, nil
	}
	var in Interception
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
