package inject

import "testing"

// TestTapClientIsViz: a proxy's tap server admits mesh-viz alone, the
// component that relays tap to users the cluster's RBAC allows; not the
// controller, whose process serves every pod (issue 12).
func TestTapClientIsViz(t *testing.T) {
	cfg := Config{TrustDomain: "example.org", ControlPlaneNamespace: "mesh"}
	want := map[string]string{
		envTapClientID:      "spiffe://example.org/ns/mesh/sa/mesh-viz",
		envIdentityServerID: "spiffe://example.org/ns/mesh/sa/mesh-controller",
	}
	got := map[string]string{}
	for _, e := range identityEnv(cfg) {
		if _, ok := want[e.Name]; ok {
			got[e.Name] = e.Value
		}
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %q, want %q", name, got[name], v)
		}
	}
}
