package interception

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/mesh-dev/mesh/internal/ports"
)

// TestShape pins the JSON the injector writes and the plugin reads: a
// change here is a change of the contract between two components that
// upgrade separately.
func TestShape(t *testing.T) {
	s := Settings{
		InboundPort: 4143, OutboundPort: 4140, AdminPort: 4191, TapPort: 4190, ProxyUID: 2102,
		SkipInboundPorts: ports.MustParse("22,9000-9010"), SkipOutboundPorts: ports.MustParse("25"),
		SkipOutboundSubnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	}
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"inboundPort":4143,"outboundPort":4140,"adminPort":4191,"tapPort":4190,"proxyUID":2102,` +
		`"skipInboundPorts":"22,9000-9010","skipOutboundPorts":"25","skipOutboundSubnets":["10.0.0.0/8"]}`
	if string(raw) != want {
		t.Errorf("Settings marshal as\n%s\nwant\n%s", raw, want)
	}
	if raw, _ := json.Marshal(Settings{}); string(raw) != "{}" {
		t.Errorf("the defaults marshal as %s, want {}", raw)
	}
	got, err := Parse(want)
	if err != nil {
		t.Fatal(err)
	}
	if got.InboundPort != 4143 || got.ProxyUID != 2102 || got.SkipInboundPorts.String() != "22,9000-9010" ||
		got.SkipOutboundPorts.String() != "25" || len(got.SkipOutboundSubnets) != 1 {
		t.Errorf("Parse(%s) = %+v", want, got)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, wantErr string }{
		{`{`, Annotation},
		{`{"skipInboundPorts":"22-"}`, Annotation},
		{`{"skipOutboundPorts":"70000"}`, Annotation},
		{`{"skipOutboundSubnets":["10.0.0.0/33"]}`, Annotation},
		{`{"skipOutboundSubnets":[""]}`, "empty subnet"},
		{`{"proxyUID":-1}`, "not a UID"},
		{`{"inboundPort":70000}`, Annotation},
	} {
		if _, err := Parse(tc.in); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Parse(%s): %v, want an error mentioning %q", tc.in, err, tc.wantErr)
		}
	}
}
