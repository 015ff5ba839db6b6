package authz

import (
	"fmt"
	"maps"
	"slices"
)

// View is a Policy as `mesh diagnostics policy` shows it: what the proxy
// enforces, after Compile dropped what it could not use, rather than what
// the controller sent. A pattern "*" shows as the trust domain's prefix
// it stands for ("spiffe://cluster.local/*").
type View struct {
	Revision      string `json:"revision"`
	DefaultPolicy string `json:"default_policy"`
	Audit         bool   `json:"audit"`
	// DefaultAuthorizations decide every port no Server selects.
	DefaultAuthorizations []AuthorizationView `json:"default_authorizations"`
	// Servers are the ports Servers select, by port number.
	Servers []ServerView `json:"servers"`
	// Probes are the kubelet probes exempt from the policy, by port.
	Probes []ProbeView `json:"probes"`
}

// ServerView is the policy of one port a Server selects.
type ServerView struct {
	Port           uint16              `json:"port"`
	Name           string              `json:"name"`
	Protocol       string              `json:"protocol"`
	Authorizations []AuthorizationView `json:"authorizations"`
	// RateLimit is the Server's HTTPLocalRateLimitPolicy; nil for none.
	RateLimit *RateLimitView `json:"rate_limit,omitempty"`
	// Routes are the inbound routes attached to the Server; nil for none.
	Routes *RoutesView `json:"routes,omitempty"`
}

// AuthorizationView is one authorization: it allows a client that matches
// every one of Required (every client when Required is empty).
type AuthorizationView struct {
	Name     string               `json:"name"`
	Required []AuthenticationView `json:"required"`
}

// AuthenticationView is one condition on the client: a network it connects
// from, or an identity it proved. Both empty: it matches no client (the
// controller sent one the proxy could not use).
type AuthenticationView struct {
	Networks   []NetworkView `json:"networks,omitempty"`
	Identities []string      `json:"identities,omitempty"`
}

// NetworkView is a CIDR with its holes.
type NetworkView struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}

// RateLimitView is a Server's rate limit, in requests per second; zero is
// no limit of that scope.
type RateLimitView struct {
	Name        string `json:"name"`
	TotalRPS    uint32 `json:"total_rps"`
	IdentityRPS uint32 `json:"identity_rps"`
	// Overrides are those Compile kept, in order.
	Overrides []OverrideView `json:"overrides"`
}

// OverrideView is the rate of the clients of some identities.
type OverrideView struct {
	RPS        uint32   `json:"rps"`
	Identities []string `json:"identities"`
}

// RoutesView is a Server's inbound routes.
type RoutesView struct {
	Routes []RouteView `json:"routes"`
	// Unusable: the routes could not be compiled, so every request of the
	// port but probes gets 404 (the proxy's log says why).
	Unusable bool `json:"unusable,omitempty"`
	// Rules are the route rules in match order: "Kind/name rule".
	Rules []string `json:"rules"`
}

// RouteView is one HTTPRoute or GRPCRoute and its own authorizations.
type RouteView struct {
	Kind           string              `json:"kind"`
	Name           string              `json:"name"`
	Authorizations []AuthorizationView `json:"authorizations"`
}

// ProbeView is one exempt kubelet probe.
type ProbeView struct {
	Port  uint16 `json:"port"`
	Path  string `json:"path"`
	Query string `json:"query,omitempty"`
	GRPC  bool   `json:"grpc,omitempty"`
}

// View returns what p enforces; the zero View (no servers, no
// authorizations: everyone denied) for a nil p. Slices are never nil, so
// their JSON is [] rather than null.
func (p *Policy) View() View {
	v := View{DefaultAuthorizations: []AuthorizationView{}, Servers: []ServerView{}, Probes: []ProbeView{}}
	if p == nil {
		return v
	}
	v.Revision, v.DefaultPolicy, v.Audit = p.revision, p.defaultPolicy, p.audit
	v.DefaultAuthorizations = authorizationsView(p.dflt.authzs)
	for _, port := range slices.Sorted(maps.Keys(p.ports)) {
		s := p.ports[port]
		sv := ServerView{Port: port, Name: s.name, Protocol: s.protocol.String(), Authorizations: authorizationsView(s.authzs)}
		if s.limiter != nil {
			sv.RateLimit = s.limiter.view()
		}
		if s.routes != nil {
			sv.Routes = s.routes.view()
		}
		v.Servers = append(v.Servers, sv)
	}
	for _, port := range slices.Sorted(maps.Keys(p.probes)) {
		for _, pr := range p.probes[port] {
			v.Probes = append(v.Probes, ProbeView{Port: port, Path: pr.paths[0], Query: pr.query, GRPC: pr.grpc})
		}
	}
	return v
}

func authorizationsView(in []authorization) []AuthorizationView {
	out := make([]AuthorizationView, 0, len(in))
	for _, a := range in {
		av := AuthorizationView{Name: a.name, Required: make([]AuthenticationView, 0, len(a.required))}
		for _, r := range a.required {
			av.Required = append(av.Required, r.view())
		}
		out = append(out, av)
	}
	return out
}

func (a *authentication) view() AuthenticationView {
	if a.ids != nil {
		return AuthenticationView{Identities: a.ids.view()}
	}
	var v AuthenticationView
	for _, n := range a.networks {
		nv := NetworkView{CIDR: n.prefix.String()}
		for _, e := range n.except {
			nv.Except = append(nv.Except, e.String())
		}
		v.Networks = append(v.Networks, nv)
	}
	return v
}

// view lists the patterns: exact IDs sorted (index may have moved them
// into a set, which has no order), then prefixes as "<prefix>*".
func (m *idPatterns) view() []string {
	exact := slices.Clone(m.exact)
	for id := range m.exactSet {
		exact = append(exact, id)
	}
	slices.Sort(exact)
	for _, p := range m.prefixes {
		exact = append(exact, p+"*")
	}
	return exact
}

func (l *Limiter) view() *RateLimitView {
	v := &RateLimitView{Name: l.msg.GetName(), TotalRPS: l.total.rps, IdentityRPS: l.identity.rps, Overrides: []OverrideView{}}
	for _, o := range l.overrides {
		v.Overrides = append(v.Overrides, OverrideView{RPS: o.rate.rps, Identities: o.ids.view()})
	}
	return v
}

func (rs *Routes) view() *RoutesView {
	v := &RoutesView{Routes: make([]RouteView, 0, len(rs.routes)), Unusable: rs.table == nil, Rules: []string{}}
	for _, r := range rs.routes {
		v.Routes = append(v.Routes, RouteView{Kind: r.kind, Name: r.name, Authorizations: authorizationsView(r.authzs)})
	}
	if rs.table != nil {
		for _, rule := range rs.table.HTTPRules() {
			v.Rules = append(v.Rules, fmt.Sprintf("%s/%s %s", rule.Route.Kind, rule.Route.Name, rule.Name))
		}
	}
	return v
}
