package cni

import (
	"encoding/json"
	"testing"

	"github.com/mesh-dev/mesh/install/cni/interception"
	"github.com/mesh-dev/mesh/proxy/iptables"
)

// FuzzInterceptionParse: the annotation is written by the injector but
// sits on a pod anyone who can create pods can annotate, so the parser
// must never panic, and whatever it accepts must render rules that read
// back the same after a round trip.
func FuzzInterceptionParse(f *testing.F) {
	for _, seed := range []string{
		`{}`, // mesh-proxy init's defaults
		`{"inboundPort":5143,"outboundPort":5140,"adminPort":5191,"tapPort":5190,"proxyUID":3000}`,
		`{"skipInboundPorts":"22,9000-9010","skipOutboundPorts":"25","skipOutboundSubnets":["10.0.0.0/8","fd00::/8"]}`,
		`{"skipInboundPorts":"70000"}`,            // out of range
		`{"skipOutboundSubnets":["10.0.0.0/33"]}`, // bad prefix
		`{"skipOutboundSubnets":[""]}`,            // the zero prefix
		`{"proxyUID":-1}`,
		`{"inboundPort":"4143"}`, // wrong type
		`null`, `[]`, `{`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		in, err := interception.Parse(s)
		if err != nil {
			return
		}
		for _, p := range in.SkipOutboundSubnets {
			if !p.IsValid() {
				t.Fatalf("accepted %q with an invalid subnet", s)
			}
		}
		rules := iptables.Rules(rulesConfig(in), false) + iptables.Rules(rulesConfig(in), true)
		raw, err := json.Marshal(in)
		if err != nil {
			t.Fatalf("accepted %q but cannot marshal it: %v", s, err)
		}
		again, err := interception.Parse(string(raw))
		if err != nil {
			t.Fatalf("accepted %q, marshalled %s, which it rejects: %v", s, raw, err)
		}
		if got := iptables.Rules(rulesConfig(again), false) + iptables.Rules(rulesConfig(again), true); got != rules {
			t.Fatalf("%q and its round trip %s render different rules:\n%s\n%s", s, raw, rules, got)
		}
	})
}
