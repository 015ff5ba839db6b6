package authz_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/proxy/authz"
	at "github.com/mesh-dev/mesh/proxy/authz/authztest"
)

// TestView checks that View shows what Compile kept: a network with a bad
// CIDR and an identity pattern that does not parse are gone, "*" is the
// trust domain's prefix, and servers come in port order whatever the
// message's order.
func TestView(t *testing.T) {
	msg := &inboundv1.PodPolicy{
		Revision: "r7", DefaultPolicy: "all-authenticated",
		DefaultAuthorizations: []*inboundv1.Authorization{at.Authz("default:all-authenticated", at.MeshTLS("any", "*"))},
		Ports: []*inboundv1.PortPolicy{
			{
				Port: 9090, Server: "admin", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_GRPC,
				Authorizations: []*inboundv1.Authorization{at.Authz("ops",
					at.Networks("nets", at.CIDR("10.1.2.3/8", "10.9.0.0/16"), at.CIDR("not-a-cidr")),
					at.MeshTLS("ids", "spiffe://cluster.local/ns/ops/sa/b", "spiffe://cluster.local/ns/ops/sa/a", "spiffe://cluster.local/ns/x/*", "bad id"))},
				RateLimit: &inboundv1.RateLimit{Name: "admin-limit", TotalRps: 100, Overrides: []*inboundv1.RateLimitOverride{
					{Rps: 5, Identities: []string{"spiffe://cluster.local/ns/ops/sa/a"}}, {Rps: 0, Identities: []string{"*"}}}},
			},
			{
				Port: 8080, Server: "web", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP1,
				Routes:     []*inboundv1.InboundRoute{at.Route("HTTPRoute", "api", at.Authz("api-readers", at.MeshTLS("r", "*")))},
				RouteRules: []*inboundv1.InboundRouteRule{at.Rule(0, "0", at.Prefix("/api"))},
			},
		},
		Probes: []*inboundv1.Probe{{Port: 8080, Path: "/healthz?full=1"}},
	}
	p, dropped := authz.Compile(msg, authz.Options{TrustDomain: "cluster.local"})
	if len(dropped) != 3 {
		t.Errorf("dropped %d entries, want 3 (bad CIDR, bad ID, override without rate): %v", len(dropped), dropped)
	}
	want := authz.View{
		Revision: "r7", DefaultPolicy: "all-authenticated",
		DefaultAuthorizations: []authz.AuthorizationView{{Name: "default:all-authenticated",
			Required: []authz.AuthenticationView{{Identities: []string{"spiffe://cluster.local/*"}}}}},
		Servers: []authz.ServerView{
			{
				Port: 8080, Name: "web", Protocol: "HTTP/1", Authorizations: []authz.AuthorizationView{},
				Routes: &authz.RoutesView{
					Routes: []authz.RouteView{{Kind: "HTTPRoute", Name: "api", Authorizations: []authz.AuthorizationView{
						{Name: "api-readers", Required: []authz.AuthenticationView{{Identities: []string{"spiffe://cluster.local/*"}}}}}}},
					Rules: []string{"HTTPRoute/api 0"},
				},
			},
			{
				Port: 9090, Name: "admin", Protocol: "gRPC",
				Authorizations: []authz.AuthorizationView{{Name: "ops", Required: []authz.AuthenticationView{
					{Networks: []authz.NetworkView{{CIDR: "10.0.0.0/8", Except: []string{"10.9.0.0/16"}}}},
					{Identities: []string{"spiffe://cluster.local/ns/ops/sa/a", "spiffe://cluster.local/ns/ops/sa/b", "spiffe://cluster.local/ns/x/*"}},
				}}},
				RateLimit: &authz.RateLimitView{Name: "admin-limit", TotalRPS: 100, Overrides: []authz.OverrideView{
					{RPS: 5, Identities: []string{"spiffe://cluster.local/ns/ops/sa/a"}}}},
			},
		},
		Probes: []authz.ProbeView{{Port: 8080, Path: "/healthz", Query: "full=1"}},
	}
	if diff := cmp.Diff(want, p.View()); diff != "" {
		t.Errorf("View (-want +got):\n%s", diff)
	}
}

// TestViewNil: no policy is a view that allows nobody, with empty lists
// rather than nulls in its JSON.
func TestViewNil(t *testing.T) {
	var p *authz.Policy
	want := authz.View{DefaultAuthorizations: []authz.AuthorizationView{}, Servers: []authz.ServerView{}, Probes: []authz.ProbeView{}}
	if diff := cmp.Diff(want, p.View()); diff != "" {
		t.Errorf("View of nil (-want +got):\n%s", diff)
	}
}

// TestViewManyIdentities: past the few IDs compared in turn, the IDs
// live in a set, and View still lists them all, sorted.
func TestViewManyIdentities(t *testing.T) {
	var ids []string
	for _, c := range "jihgfedcba" {
		ids = append(ids, "spiffe://cluster.local/ns/n/sa/"+string(c))
	}
	p, _ := authz.Compile(at.Default("deny", at.Authz("many", at.MeshTLS("ids", ids...))), authz.Options{})
	got := p.View().DefaultAuthorizations[0].Required[0].Identities
	if len(got) != len(ids) || got[0] != ids[len(ids)-1] || got[len(got)-1] != ids[0] {
		t.Errorf("identities %v: want all %d, sorted", got, len(ids))
	}
}
