package v1alpha1

import "testing"

func TestRefs(t *testing.T) {
	tests := []struct {
		name             string
		target           TargetRef
		server, ns       bool
		route            string // the kind TargetsRoute reports, "" for none
		authn            AuthenticationRef
		meshTLS, network bool
		sa               bool
	}{
		{name: "server with group", target: TargetRef{Group: GroupName, Kind: KindServer}, server: true,
			authn: AuthenticationRef{Group: GroupName, Kind: KindMeshTLSAuthentication}, meshTLS: true},
		{name: "server without group", target: TargetRef{Kind: KindServer}, server: true,
			authn: AuthenticationRef{Kind: KindNetworkAuthentication}, network: true},
		{name: "namespace", target: TargetRef{Kind: "Namespace"}, ns: true,
			authn: AuthenticationRef{Kind: "ServiceAccount"}, sa: true},
		{name: "foreign group", target: TargetRef{Group: "policy.linkerd.io", Kind: KindServer},
			authn: AuthenticationRef{Group: "policy.linkerd.io", Kind: KindMeshTLSAuthentication}},
		{name: "namespace in a group", target: TargetRef{Group: GroupName, Kind: "Namespace"},
			authn: AuthenticationRef{Group: GroupName, Kind: "ServiceAccount"}},
		{name: "HTTPRoute", target: TargetRef{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute"}, route: "HTTPRoute"},
		{name: "GRPCRoute without group", target: TargetRef{Kind: "GRPCRoute"}, route: "GRPCRoute"},
		{name: "Linkerd's HTTPRoute", target: TargetRef{Group: "policy.linkerd.io", Kind: "HTTPRoute"}},
		{name: "a route of our group", target: TargetRef{Group: GroupName, Kind: "HTTPRoute"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.target.TargetsServer(); got != tc.server {
				t.Errorf("TargetsServer = %v, want %v", got, tc.server)
			}
			if got := tc.target.TargetsNamespace(); got != tc.ns {
				t.Errorf("TargetsNamespace = %v, want %v", got, tc.ns)
			}
			if kind, ok := tc.target.TargetsRoute(); kind != tc.route || ok != (tc.route != "") {
				t.Errorf("TargetsRoute = %q, %v, want %q", kind, ok, tc.route)
			}
			if got := tc.authn.IsMeshTLSAuthentication(); got != tc.meshTLS {
				t.Errorf("IsMeshTLSAuthentication = %v, want %v", got, tc.meshTLS)
			}
			if got := tc.authn.IsNetworkAuthentication(); got != tc.network {
				t.Errorf("IsNetworkAuthentication = %v, want %v", got, tc.network)
			}
			if got := tc.authn.IsServiceAccount(); got != tc.sa {
				t.Errorf("IsServiceAccount = %v, want %v", got, tc.sa)
			}
		})
	}
}

func TestServerRef(t *testing.T) {
	tests := []struct {
		ref  ServerRef
		want bool
	}{
		{ref: ServerRef{Group: GroupName, Kind: KindServer, Name: "web"}, want: true},
		{ref: ServerRef{Kind: KindServer, Name: "web"}, want: true},
		{ref: ServerRef{Group: "policy.linkerd.io", Kind: KindServer, Name: "web"}},
		{ref: ServerRef{Group: GroupName, Kind: "Namespace", Name: "web"}},
	}
	for _, tc := range tests {
		if got := tc.ref.TargetsServer(); got != tc.want {
			t.Errorf("%+v: TargetsServer = %v, want %v", tc.ref, got, tc.want)
		}
	}
}
