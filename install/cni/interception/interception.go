// Package interception is the contract between the proxy injector and the
// mesh CNI plugin: the pod annotation in which the injector, in CNI mode,
// hands the plugin the settings `mesh-proxy init` would have taken as
// flags. It imports only the standard library, internal/names and
// internal/ports, so the injector can write it without depending on the
// plugin's libraries or on proxy/.
package interception

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/ports"
)

// Annotation is the pod annotation that holds Settings as JSON.
const Annotation = names.AnnotationInterception

// Settings is the JSON of Annotation. Every field is optional and its zero
// value means mesh-proxy init's default, so `{}` installs the same rules as
// `mesh-proxy init` with no flags. Fields this version does not know are
// ignored, so an injector newer than the plugin does not stop pods from
// starting.
//
//	{"inboundPort":4143,"outboundPort":4140,"adminPort":4191,"tapPort":4190,
//	 "proxyUID":2102,"skipInboundPorts":"22,9000-9010","skipOutboundPorts":"25",
//	 "skipOutboundSubnets":["10.0.0.0/8"]}
type Settings struct {
	InboundPort         uint16         `json:"inboundPort,omitempty"`
	OutboundPort        uint16         `json:"outboundPort,omitempty"`
	AdminPort           uint16         `json:"adminPort,omitempty"`
	TapPort             uint16         `json:"tapPort,omitempty"`
	ProxyUID            int            `json:"proxyUID,omitempty"`
	SkipInboundPorts    ports.Set      `json:"skipInboundPorts,omitzero"`
	SkipOutboundPorts   ports.Set      `json:"skipOutboundPorts,omitzero"`
	SkipOutboundSubnets []netip.Prefix `json:"skipOutboundSubnets,omitempty"`
}

// Parse reads the annotation's value. The injector wrote it, so a value
// that does not parse is an error: guessing could leave a meshed pod's
// traffic unintercepted.
func Parse(s string) (Settings, error) {
	var in Settings
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return Settings{}, fmt.Errorf("annotation %s: %w", Annotation, err)
	}
	if in.ProxyUID < 0 {
		return Settings{}, fmt.Errorf("annotation %s: proxy UID %d is not a UID", Annotation, in.ProxyUID)
	}
	for _, p := range in.SkipOutboundSubnets {
		if !p.IsValid() { // netip reads "" as the zero Prefix without error
			return Settings{}, fmt.Errorf("annotation %s: skipOutboundSubnets has an empty subnet", Annotation)
		}
	}
	return in, nil
}
