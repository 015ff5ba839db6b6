// Package authztest builds inbound policies (api/inbound/v1 PodPolicy
// messages) for tests and benchmarks of the proxy's authorization: short
// builders for what the controller sends, and a large policy of the size
// the benchmarks measure.
package authztest

import (
	"fmt"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
)

// MeshTLS is an authentication by proven identity.
func MeshTLS(name string, patterns ...string) *inboundv1.Authentication {
	return &inboundv1.Authentication{Name: name, Kind: &inboundv1.Authentication_MeshTls{
		MeshTls: &inboundv1.Identities{Patterns: patterns}}}
}

// Networks is an authentication by client address.
func Networks(name string, nets ...*inboundv1.Network) *inboundv1.Authentication {
	return &inboundv1.Authentication{Name: name, Kind: &inboundv1.Authentication_Networks{
		Networks: &inboundv1.Networks{Networks: nets}}}
}

// CIDR is a network with holes.
func CIDR(cidr string, except ...string) *inboundv1.Network {
	return &inboundv1.Network{Cidr: cidr, Except: except}
}

// Authz is an authorization requiring every one of required.
func Authz(name string, required ...*inboundv1.Authentication) *inboundv1.Authorization {
	return &inboundv1.Authorization{Name: name, Required: required}
}

// Default is a policy whose every port takes authorizations; name is the
// default policy's ("deny", "audit", ...).
func Default(name string, authorizations ...*inboundv1.Authorization) *inboundv1.PodPolicy {
	return &inboundv1.PodPolicy{Revision: name, DefaultPolicy: name, DefaultAuthorizations: authorizations, Audit: name == "audit"}
}

// AllowAll is the all-unauthenticated default.
func AllowAll() *inboundv1.PodPolicy {
	return Default("all-unauthenticated", Authz("default:all-unauthenticated"))
}

// Large is a policy of servers Servers on ports firstPort,
// firstPort+1, ..., each with authorizations AuthorizationPolicies. Every
// authorization but the last of each port requires an identity and a
// network no client has (spiffe://cluster.local/ns/bench/sa/client-N and
// 198.51.100.N/32); the last one, "allowed", requires allowed, so a client
// matching it is decided only after all the others were tried. Its
// default is deny.
func Large(servers, authorizations int, firstPort uint16, allowed ...*inboundv1.Authentication) *inboundv1.PodPolicy {
	msg := &inboundv1.PodPolicy{Revision: fmt.Sprintf("large-%dx%d", servers, authorizations), DefaultPolicy: "deny"}
	for s := range servers {
		pp := &inboundv1.PortPolicy{Port: uint32(firstPort) + uint32(s), Server: fmt.Sprintf("server-%d", s)}
		for a := range authorizations - 1 {
			pp.Authorizations = append(pp.Authorizations, Authz(fmt.Sprintf("policy-%d", a),
				MeshTLS("MeshTLSAuthentication/bench", fmt.Sprintf("spiffe://cluster.local/ns/bench/sa/client-%d", a)),
				Networks("NetworkAuthentication/bench", CIDR(fmt.Sprintf("198.51.100.%d/32", a%256)))))
		}
		pp.Authorizations = append(pp.Authorizations, Authz("allowed", allowed...))
		msg.Ports = append(msg.Ports, pp)
	}
	return msg
}

// Route is an inbound route of a port (PortPolicy.routes): an HTTPRoute
// or GRPCRoute and the authorizations that target it.
func Route(kind, name string, authorizations ...*inboundv1.Authorization) *inboundv1.InboundRoute {
	return &inboundv1.InboundRoute{Kind: kind, Name: name, Authorizations: authorizations}
}

// Rule is one match of a rule of route number route
// (PortPolicy.route_rules).
func Rule(route uint32, name string, m *destinationv1.Match) *inboundv1.InboundRouteRule {
	return &inboundv1.InboundRouteRule{Route: route, RuleName: name, Match: m}
}

// Prefix, Exact and Regex are path matches.
func Prefix(p string) *destinationv1.Match {
	return &destinationv1.Match{Path: &destinationv1.Match_Prefix{Prefix: p}}
}

// Exact: see Prefix.
func Exact(p string) *destinationv1.Match {
	return &destinationv1.Match{Path: &destinationv1.Match_Exact{Exact: p}}
}

// Regex: see Prefix.
func Regex(p string) *destinationv1.Match {
	return &destinationv1.Match{Path: &destinationv1.Match_Regex{Regex: p}}
}

// Header is an exact header match, to add to a Match's Headers.
func Header(name, value string) *destinationv1.HeaderMatch {
	return &destinationv1.HeaderMatch{Name: name, Value: &destinationv1.HeaderMatch_Exact{Exact: value}}
}

// Routed is a policy like Large whose every Server has routes of rules
// rules each, route r matching the prefixes /r<r>/<rule> with method
// GET; the last route's last rule matches "/" (every path), and only
// allowed's clients may use it: a path no other rule takes ("/x") falls
// to it. The Servers themselves allow nobody.
func Routed(servers, routes, rules int, firstPort uint16, allowed ...*inboundv1.Authentication) *inboundv1.PodPolicy {
	msg := &inboundv1.PodPolicy{Revision: fmt.Sprintf("routed-%dx%dx%d", servers, routes, rules), DefaultPolicy: "deny"}
	for s := range servers {
		pp := &inboundv1.PortPolicy{Port: uint32(firstPort) + uint32(s), Server: fmt.Sprintf("server-%d", s)}
		for r := range routes {
			route := Route("HTTPRoute", fmt.Sprintf("route-%d", r))
			if r == routes-1 {
				route.Authorizations = []*inboundv1.Authorization{Authz("allowed", allowed...)}
			}
			pp.Routes = append(pp.Routes, route)
			for n := range rules {
				m := Prefix(fmt.Sprintf("/r%d/%d", r, n))
				if r == routes-1 && n == rules-1 {
					m = Prefix("/")
				}
				m.Method = "GET"
				pp.RouteRules = append(pp.RouteRules, Rule(uint32(r), fmt.Sprint(n), m))
			}
		}
		msg.Ports = append(msg.Ports, pp)
	}
	return msg
}
