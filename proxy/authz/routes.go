package authz

import (
	"fmt"
	"strings"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/proxy/route"
)

// Inbound routes (docs/policy.md, "Routes"): the HTTPRoutes or GRPCRoutes
// attached to a port's Server. A request on such a port must match one
// of them, and is allowed by the authorizations of the route it matched
// or by the port's own. Matching is proxy/route's, the one place that
// knows match semantics: the controller sends the same Match messages as
// for outbound routes, compiled here into a route.Table whose rules stand
// for the routes' matches.

// Routes are the inbound routes of one port. Immutable once compiled.
type Routes struct {
	// table holds one rule per match, in the controller's order; nil
	// when the controller's routes could not be compiled, which matches
	// nothing.
	table *route.Table
	// of gives the route of each of table's rules.
	of     map[*route.Rule]int
	routes []inboundRoute
}

type inboundRoute struct {
	kind, name string
	authzs     []authorization
}

// Len is the number of routes; they are numbered from 0.
func (rs *Routes) Len() int { return len(rs.routes) }

// Route names route i: its kind ("HTTPRoute", "GRPCRoute") and name.
func (rs *Routes) Route(i int) (kind, name string) { return rs.routes[i].kind, rs.routes[i].name }

// Authorize returns the name of the first authorization of route i that
// allows c; ok is false when none does. The port's own authorizations,
// which allow every route, are Policy.Authorize's. It does not allocate.
func (rs *Routes) Authorize(i int, c Client) (name string, ok bool) {
	c.Addr = c.Addr.Unmap()
	for j := range rs.routes[i].authzs {
		if rs.routes[i].authzs[j].matches(c) {
			return rs.routes[i].authzs[j].name, true
		}
	}
	return "", false
}

// Routes returns the inbound routes of port, nil when it has none (then
// the port's authorizations decide every request, as without routes).
func (p *Policy) Routes(port uint16) *Routes {
	if p == nil {
		return nil
	}
	if s, ok := p.ports[port]; ok {
		return s.routes
	}
	return nil
}

// Headers looks up a request's header fields: the value of the field
// name (lower case), repeated fields joined with ", ", and whether it is
// there at all. route.Request is one.
type Headers interface {
	Header(name string) (string, bool)
}

// Miss says why Match found no route.
type Miss uint8

const (
	// NoMatch: no rule's match holds for the request.
	NoMatch Miss = iota
	// AmbiguousPath: the path is one an application could read as another
	// than the matcher would ("." or ".." segments, an empty segment, an
	// encoded "?", not absolute): it matches no route, since a request
	// the matcher puts under an open route could reach a guarded one.
	AmbiguousPath
	// NeedsHeaders: a rule that may hold depends on header fields the
	// caller did not pass; guessing either way could let a request in
	// that the route's policy keeps out, so none is chosen.
	NeedsHeaders
)

func (m Miss) String() string {
	switch m {
	case AmbiguousPath:
		return "ambiguous path"
	case NeedsHeaders:
		return "needs headers"
	}
	return "no match"
}

// RouteMatch is what Match found.
type RouteMatch struct {
	// Route is the index of the route matched, when Found.
	Route int
	Found bool
	// Miss says why nothing was found.
	Miss Miss
}

// Match returns the route of a request: the route of the first rule, in
// the controller's order, whose match holds. path is the request's path
// percent-decoded (as url.URL.Path, as probes are matched), query its raw
// query; headers answers the header lookups, nil when the caller cannot
// (then NeedsHeaders when a rule's header match had to be tried). It
// allocates the request it hands the table.
func (rs *Routes) Match(method, path, query string, headers Headers) RouteMatch {
	if ambiguousPath(path) {
		return RouteMatch{Miss: AmbiguousPath}
	}
	if rs.table == nil {
		return RouteMatch{}
	}
	target := path
	if query != "" {
		target = path + "?" + query
	}
	req := &matchRequest{method: method, target: target, headers: headers}
	m, ok := rs.table.Match(req, false)
	switch {
	case req.asked:
		return RouteMatch{Miss: NeedsHeaders}
	case !ok:
		return RouteMatch{}
	}
	return RouteMatch{Route: rs.of[m.Rule], Found: true}
}

// matchRequest is a request as the table matches it.
type matchRequest struct {
	method, target string
	headers        Headers // nil: unknown
	// asked: a header was looked up without headers to look in.
	asked bool
}

func (r *matchRequest) Method() string { return r.method }
func (r *matchRequest) Path() string   { return r.target }

func (r *matchRequest) Header(name string) (string, bool) {
	if r.headers == nil {
		r.asked = true
		return "", false
	}
	return r.headers.Header(name)
}

// ambiguousPath reports whether a decoded path could name one resource to
// the matcher and another to an application that resolves dot segments,
// merges slashes, or splits at an encoded "?": such a request could pass
// under an open route and reach a guarded one. Clients normalize paths
// (RFC 3986 5.2.4), so none of this is normal traffic.
func ambiguousPath(p string) bool {
	if p == "" || p[0] != '/' || strings.Contains(p, "//") || strings.IndexByte(p, '?') >= 0 {
		return true
	}
	for rest := p[1:]; ; {
		seg, after, more := strings.Cut(rest, "/")
		if seg == "." || seg == ".." {
			return true
		}
		if !more {
			return false
		}
		rest = after
	}
}

// routes compiles the inbound routes of a port. Routes it cannot use
// never widen what is allowed: an authorization is dropped as on the
// port, and a route list that cannot be compiled as a whole matches no
// request (404), rather than letting a request a dropped rule would have
// guarded fall to a later, more open one. nil: the port has no routes.
func (c *compiler) routes(pp *inboundv1.PortPolicy) *Routes {
	in, rules := pp.GetRoutes(), pp.GetRouteRules()
	if len(in) == 0 {
		if len(rules) > 0 {
			c.drop("server %q: %d route rules without routes are ignored", pp.GetServer(), len(rules))
		}
		return nil
	}
	rs := &Routes{routes: make([]inboundRoute, len(in))}
	for i, r := range in {
		rs.routes[i] = inboundRoute{kind: r.GetKind(), name: r.GetName()}
		rs.routes[i].authzs = c.authorizations(fmt.Sprintf("server %s: %s %s", pp.GetServer(), r.GetKind(), r.GetName()), r.GetAuthorizations())
	}
	if err := rs.compile(rules); err != nil {
		c.drop("server %q: inbound routes: %v; every request of port %d but probes gets 404 until the controller sends routes this proxy can use",
			pp.GetServer(), err, pp.GetPort())
		rs.table, rs.of = nil, nil
	}
	return rs
}

// compile builds the table of rules.
func (rs *Routes) compile(rules []*inboundv1.InboundRouteRule) error {
	kind := rs.routes[0].kind
	for _, r := range rs.routes {
		switch {
		case r.kind != "HTTPRoute" && r.kind != "GRPCRoute":
			return fmt.Errorf("route %s is of kind %q, neither HTTPRoute nor GRPCRoute", r.name, r.kind)
		case r.kind != kind:
			return fmt.Errorf("routes of two kinds, %s and %s", kind, r.kind)
		}
	}
	table := &destinationv1.RouteTable{HttpRules: make([]*destinationv1.Rule, len(rules))}
	for i, r := range rules {
		switch {
		case int(r.GetRoute()) >= len(rs.routes):
			return fmt.Errorf("rule %d names route %d of %d", i, r.GetRoute(), len(rs.routes))
		case r.GetMatch() == nil:
			return fmt.Errorf("rule %d has no match", i) // not "every request": a malformed rule must not widen
		}
		ir := rs.routes[r.GetRoute()]
		table.HttpRules[i] = &destinationv1.Rule{
			Route:    &destinationv1.Resource{Kind: ir.kind, Name: ir.name},
			RuleName: r.GetRuleName(),
			Matches:  []*destinationv1.Match{r.GetMatch()},
		}
	}
	t, err := route.Compile(table)
	if err != nil {
		return err
	}
	rs.table, rs.of = t, make(map[*route.Rule]int, len(rules))
	for i, r := range t.HTTPRules() { // one per rule, in order
		rs.of[r] = int(rules[i].GetRoute())
	}
	return nil
}
