package policy

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
)

// Inbound routes (docs/policy.md, "Routes"): HTTPRoutes and GRPCRoutes
// whose parentRefs name a Server of their namespace, as in Linkerd
// (policy-controller/k8s/index/src/inbound/routes.rs). They select the
// requests AuthorizationPolicies may target; mesh neither forwards by
// them (the request goes to the pod's port whatever backendRefs say) nor
// applies their filters, so a route with filters or hostnames is refused
// on its Server parents rather than half applied.

// Kinds of routes.
const (
	kindHTTPRoute = "HTTPRoute"
	kindGRPCRoute = "GRPCRoute"
)

// routeKey names a route of the namespace being built.
type routeKey struct{ kind, name string }

func (k routeKey) String() string { return k.kind + " " + k.name }

// serverRoutes are the accepted routes of one Server, as its ports'
// PortPolicy carries them: immutable once built, shared by every pod.
type serverRoutes struct {
	routes []*inboundv1.InboundRoute
	rules  []*inboundv1.InboundRouteRule
}

// GetRoutes and GetRules are nil for a nil *serverRoutes, a Server
// without routes.
func (sr *serverRoutes) GetRoutes() []*inboundv1.InboundRoute {
	if sr == nil {
		return nil
	}
	return sr.routes
}

// GetRules: see GetRoutes.
func (sr *serverRoutes) GetRules() []*inboundv1.InboundRouteRule {
	if sr == nil {
		return nil
	}
	return sr.rules
}

// parentOutcome is what a route's status says about one of its
// parentRefs that names a Server.
type parentOutcome struct {
	ref      gatewayv1.ParentReference
	accepted routeCondition
}

// routeCondition is the Accepted condition of a route on one parent.
type routeCondition struct {
	ok      bool
	reason  gatewayv1.RouteConditionReason
	message string
}

// String is the condition as a log line or a test reads it.
func (c routeCondition) String() string {
	return fmt.Sprintf("Accepted=%v %s: %s", c.ok, c.reason, c.message)
}

// inboundRoute is an HTTPRoute or GRPCRoute converted for its Server
// parents.
type inboundRoute struct {
	key        routeKey
	meta       *metav1.ObjectMeta
	parentRefs []gatewayv1.ParentReference
	// ruleNames and matches are per rule: its name (or index) and its
	// matches, the spec's default when it has none.
	ruleNames []string
	matches   [][]*destinationv1.Match
	// invalid says why the route is refused on every Server parent; ""
	// when it is usable.
	invalid string
}

// isServerParent reports whether p names a Server of policy.mesh.dev;
// both group and kind must be given (their defaults are a Gateway's).
func isServerParent(p gatewayv1.ParentReference) bool {
	return p.Group != nil && string(*p.Group) == policyv1alpha1.GroupName && p.Kind != nil && string(*p.Kind) == policyv1alpha1.KindServer
}

// inboundRoutes converts the namespace's routes that name a Server among
// their parents, oldest first (then by kind and name).
func (b *nsBuilder) inboundRoutes() []inboundRoute {
	var out []inboundRoute
	for _, r := range b.in.httpRoutes {
		if slices.ContainsFunc(r.Spec.ParentRefs, isServerParent) {
			out = append(out, fromHTTPRoute(r))
		}
	}
	for _, r := range b.in.grpcRoutes {
		if slices.ContainsFunc(r.Spec.ParentRefs, isServerParent) {
			out = append(out, fromGRPCRoute(r))
		}
	}
	slices.SortFunc(out, func(a, b inboundRoute) int {
		if c := a.meta.CreationTimestamp.Compare(b.meta.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Or(strings.Compare(a.key.kind, b.key.kind), strings.Compare(a.key.name, b.key.name))
	})
	return out
}

// problems gathers what makes a route unusable, for its message.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) String() string { return strings.Join(p, "; ") }

func fromHTTPRoute(r *gatewayv1.HTTPRoute) inboundRoute {
	rt := inboundRoute{key: routeKey{kindHTTPRoute, r.Name}, meta: &r.ObjectMeta, parentRefs: r.Spec.ParentRefs}
	var p problems
	if len(r.Spec.Hostnames) > 0 {
		p.add("hostnames are not supported on a Server parent")
	}
	for i, rule := range r.Spec.Rules {
		where := "rule " + ruleName(rule.Name, i)
		filters := len(rule.Filters)
		for _, br := range rule.BackendRefs {
			filters += len(br.Filters)
		}
		if filters > 0 {
			p.add("%s: filters are not applied to inbound requests (a Server parent); attach the route to a Service for them", where)
		}
		var ms []*destinationv1.Match
		for j, m := range rule.Matches {
			ms = append(ms, httpMatch(m, fmt.Sprintf("%s match %d", where, j), &p))
		}
		if len(ms) == 0 {
			ms = []*destinationv1.Match{{Path: &destinationv1.Match_Prefix{Prefix: "/"}}} // the spec's default
		}
		rt.ruleNames = append(rt.ruleNames, ruleName(rule.Name, i))
		rt.matches = append(rt.matches, ms)
	}
	rt.invalid = p.String()
	return rt
}

func fromGRPCRoute(r *gatewayv1.GRPCRoute) inboundRoute {
	rt := inboundRoute{key: routeKey{kindGRPCRoute, r.Name}, meta: &r.ObjectMeta, parentRefs: r.Spec.ParentRefs}
	var p problems
	if len(r.Spec.Hostnames) > 0 {
		p.add("hostnames are not supported on a Server parent")
	}
	for i, rule := range r.Spec.Rules {
		where := "rule " + ruleName(rule.Name, i)
		filters := len(rule.Filters)
		for _, br := range rule.BackendRefs {
			filters += len(br.Filters)
		}
		if filters > 0 {
			p.add("%s: filters are not applied to inbound requests (a Server parent); attach the route to a Service for them", where)
		}
		var ms []*destinationv1.Match
		for j, m := range rule.Matches {
			ms = append(ms, grpcMatch(m, fmt.Sprintf("%s match %d", where, j), &p))
		}
		if len(ms) == 0 {
			ms = []*destinationv1.Match{{}} // the spec's default: every request
		}
		rt.ruleNames = append(rt.ruleNames, ruleName(rule.Name, i))
		rt.matches = append(rt.matches, ms)
	}
	rt.invalid = p.String()
	return rt
}

// ruleName is spec.rules[i].name, or i.
func ruleName(name *gatewayv1.SectionName, i int) string {
	if name != nil && *name != "" {
		return string(*name)
	}
	return strconv.Itoa(i)
}

// httpMatch converts one HTTPRouteMatch; what the proxy could not compile
// (a regular expression Go's RE2 refuses) is a problem of the route.
func httpMatch(m gatewayv1.HTTPRouteMatch, where string, p *problems) *destinationv1.Match {
	out := &destinationv1.Match{Path: &destinationv1.Match_Prefix{Prefix: "/"}}
	if m.Path != nil {
		value := deref(m.Path.Value, "/")
		switch t := deref(m.Path.Type, gatewayv1.PathMatchPathPrefix); t {
		case gatewayv1.PathMatchExact:
			out.Path = &destinationv1.Match_Exact{Exact: value}
		case gatewayv1.PathMatchPathPrefix:
			out.Path = &destinationv1.Match_Prefix{Prefix: value}
		case gatewayv1.PathMatchRegularExpression:
			checkRegex(where+" path", value, p)
			out.Path = &destinationv1.Match_Regex{Regex: value}
		default:
			p.add("%s: path match type %q is not supported", where, t)
		}
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
	}
	for _, h := range m.Headers {
		regex := deref(h.Type, gatewayv1.HeaderMatchExact) == gatewayv1.HeaderMatchRegularExpression
		out.Headers = append(out.Headers, valueMatch(strings.ToLower(string(h.Name)), h.Value, regex, where+" header", p))
	}
	for _, q := range m.QueryParams {
		regex := deref(q.Type, gatewayv1.QueryParamMatchExact) == gatewayv1.QueryParamMatchRegularExpression
		out.Query = append(out.Query, valueMatch(string(q.Name), q.Value, regex, where+" query parameter", p))
	}
	return out
}

// grpcMatch converts one GRPCRouteMatch.
func grpcMatch(m gatewayv1.GRPCRouteMatch, where string, p *problems) *destinationv1.Match {
	out := &destinationv1.Match{}
	if m.Method != nil {
		out.GrpcService = deref(m.Method.Service, "")
		out.GrpcMethod = deref(m.Method.Method, "")
		if deref(m.Method.Type, gatewayv1.GRPCMethodMatchExact) == gatewayv1.GRPCMethodMatchRegularExpression {
			out.GrpcRegex = true
			for _, e := range []string{out.GrpcService, out.GrpcMethod} {
				checkRegex(where+" method", e, p)
			}
		}
	}
	for _, h := range m.Headers {
		regex := deref(h.Type, gatewayv1.GRPCHeaderMatchExact) == gatewayv1.GRPCHeaderMatchRegularExpression
		out.Headers = append(out.Headers, valueMatch(strings.ToLower(string(h.Name)), h.Value, regex, where+" header", p))
	}
	return out
}

func valueMatch(name, value string, regex bool, where string, p *problems) *destinationv1.HeaderMatch {
	if regex {
		checkRegex(where+" "+name, value, p)
		return &destinationv1.HeaderMatch{Name: name, Value: &destinationv1.HeaderMatch_Regex{Regex: value}}
	}
	return &destinationv1.HeaderMatch{Name: name, Value: &destinationv1.HeaderMatch_Exact{Exact: value}}
}

// checkRegex adds a problem for a regular expression the proxy (Go's RE2)
// cannot compile: a route it would have to drop is refused here instead.
func checkRegex(where, expr string, p *problems) {
	if _, err := regexp.Compile(expr); err != nil {
		p.add("%s: regular expression %q: %v", where, expr, err)
	}
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// routes attaches the inbound routes to servers, the usable Servers, with
// the authorizations of the policies that target each route (byRoute).
// It returns the routes of each Server that has any, by Server name, and
// the outcome of every route on each of its Server parentRefs, in spec
// order, by route. A Server with a valid GRPCRoute takes no HTTPRoute
// (GEP-1426, as controller/route does on a Service).
func (b *nsBuilder) routes(servers []serverRule, byRoute map[routeKey][]*inboundv1.Authorization) (byServer map[string]*serverRoutes, outcomes map[routeKey][]parentOutcome) {
	usable := make(map[string]serverRule, len(servers))
	for _, s := range servers {
		usable[s.name] = s
	}
	exists := make(map[string]bool, len(b.in.servers))
	for _, s := range b.in.servers {
		exists[s.Name] = true
	}
	all := b.inboundRoutes()
	// A first pass finds the Servers a valid GRPCRoute is attached to.
	grpcHolder := map[string]routeKey{}
	for _, rt := range all {
		if rt.key.kind != kindGRPCRoute || rt.invalid != "" {
			continue
		}
		for _, ref := range rt.parentRefs {
			if name, ok := b.serverOf(ref, usable, exists, rt); ok && grpcHolder[name] == (routeKey{}) {
				grpcHolder[name] = rt.key
			}
		}
	}
	outcomes = map[routeKey][]parentOutcome{}
	attached := map[string][]inboundRoute{} // by Server, oldest first
	for _, rt := range all {
		for _, ref := range rt.parentRefs {
			if !isServerParent(ref) {
				continue
			}
			out := parentOutcome{ref: ref}
			name, ok := b.serverOf(ref, usable, exists, rt)
			switch {
			case !ok:
				out.accepted = b.refusal(ref, usable, exists, rt)
			case rt.invalid != "":
				out.accepted = routeCondition{reason: gatewayv1.RouteReasonUnsupportedValue, message: rt.invalid}
			case rt.key.kind == kindHTTPRoute && grpcHolder[name] != (routeKey{}):
				out.accepted = routeCondition{reason: gatewayv1.RouteReasonUnsupportedValue,
					message: fmt.Sprintf("a GRPCRoute (%s/%s) is attached to Server %s; GRPCRoute takes precedence (GEP-1426)", b.in.name, grpcHolder[name].name, name)}
			default:
				out.accepted = routeCondition{ok: true, reason: gatewayv1.RouteReasonAccepted,
					message: fmt.Sprintf("selects requests of Server %s for authorization; the pod's port serves them, whatever backendRefs say", name)}
				if !slices.ContainsFunc(attached[name], func(a inboundRoute) bool { return a.key == rt.key }) {
					attached[name] = append(attached[name], rt)
				}
			}
			if !out.accepted.ok {
				b.warn("%s %s/%s is not accepted by Server %s (%s): %s", rt.key.kind, b.in.name, rt.key.name, ref.Name, out.accepted.reason, out.accepted.message)
			}
			outcomes[rt.key] = append(outcomes[rt.key], out)
		}
	}
	byServer = make(map[string]*serverRoutes, len(attached))
	for name, rts := range attached {
		byServer[name] = serverTable(rts, byRoute)
	}
	for key, authz := range byRoute {
		if slices.ContainsFunc(outcomes[key], func(o parentOutcome) bool { return o.accepted.ok }) {
			continue
		}
		for _, a := range authz {
			b.warn("AuthorizationPolicy %s/%s allows nothing: %s %s is attached to no Server (it does not exist, names no Server among its parentRefs, or no Server accepts it)",
				b.in.name, a.GetName(), key.kind, key.name)
		}
	}
	return byServer, outcomes
}

// serverOf returns the usable Server ref names for rt, if it may attach.
func (b *nsBuilder) serverOf(ref gatewayv1.ParentReference, usable map[string]serverRule, exists map[string]bool, rt inboundRoute) (string, bool) {
	if !isServerParent(ref) || !b.refusal(ref, usable, exists, rt).ok {
		return "", false
	}
	return string(ref.Name), true
}

// refusal is the condition of a parentRef naming a Server for what it
// says alone: ok when the Server is usable and takes HTTP routes.
func (b *nsBuilder) refusal(ref gatewayv1.ParentReference, usable map[string]serverRule, exists map[string]bool, rt inboundRoute) routeCondition {
	name := string(ref.Name)
	no := func(reason gatewayv1.RouteConditionReason, format string, args ...any) routeCondition {
		return routeCondition{reason: reason, message: fmt.Sprintf(format, args...)}
	}
	switch {
	case ref.Namespace != nil && string(*ref.Namespace) != rt.meta.Namespace:
		return no(gatewayv1.RouteReasonUnsupportedValue, "Server %s/%s is in another namespace; a route attaches to the Servers of its own", *ref.Namespace, name)
	case ref.Port != nil:
		return no(gatewayv1.RouteReasonUnsupportedValue, "parentRef to Server %s names a port; a Server has one, leave port out", name)
	case ref.SectionName != nil:
		return no(gatewayv1.RouteReasonUnsupportedValue, "parentRef to Server %s names a section; a Server has none, leave sectionName out", name)
	case !exists[name]:
		return no(gatewayv1.RouteReasonNoMatchingParent, "Server %s not found in namespace %s", name, b.in.name)
	}
	s, ok := usable[name]
	switch {
	case !ok:
		return no(gatewayv1.RouteReasonNoMatchingParent, "Server %s is ignored, its spec being invalid (the controller's log says why)", name)
	case s.protocol == inboundv1.ProxyProtocol_PROXY_PROTOCOL_OPAQUE || s.protocol == inboundv1.ProxyProtocol_PROXY_PROTOCOL_TLS:
		return no(gatewayv1.RouteReasonUnsupportedValue, "Server %s forwards its port as TCP (proxyProtocol %s): it has no HTTP request to route", name, forwardedProtocol(s.protocol))
	}
	return routeCondition{ok: true}
}

// forwardedProtocol names a protocol forwarded as TCP as a Server spells it.
func forwardedProtocol(p inboundv1.ProxyProtocol) policyv1alpha1.ProxyProtocol {
	if p == inboundv1.ProxyProtocol_PROXY_PROTOCOL_TLS {
		return policyv1alpha1.ProtocolTLS
	}
	return policyv1alpha1.ProtocolOpaque
}

// serverTable lays out the routes attached to one Server (oldest first)
// for its PortPolicy: the routes of one kind (GRPCRoutes when there are
// any: the others were refused), and every match of their rules in the
// spec's precedence order.
func serverTable(rts []inboundRoute, byRoute map[routeKey][]*inboundv1.Authorization) *serverRoutes {
	grpc := slices.ContainsFunc(rts, func(rt inboundRoute) bool { return rt.key.kind == kindGRPCRoute })
	sr := &serverRoutes{}
	var entries []*inboundv1.InboundRouteRule
	for _, rt := range rts {
		if (rt.key.kind == kindGRPCRoute) != grpc {
			continue
		}
		idx := uint32(len(sr.routes))
		sr.routes = append(sr.routes, &inboundv1.InboundRoute{Kind: rt.key.kind, Name: rt.key.name, Authorizations: byRoute[rt.key]})
		for i, ms := range rt.matches {
			for _, m := range ms {
				entries = append(entries, &inboundv1.InboundRouteRule{Route: idx, RuleName: rt.ruleNames[i], Match: m})
			}
		}
	}
	// The routes are oldest first and a stable sort keeps that order
	// among equals, then rule order, then the order of a rule's matches:
	// the spec's tie-breakers.
	slices.SortStableFunc(entries, func(a, b *inboundv1.InboundRouteRule) int { return compareMatches(a.GetMatch(), b.GetMatch(), grpc) })
	sr.rules = entries
	return sr
}

// compareMatches orders two matches as the spec says, the more specific
// first (docs/traffic.md 2.2, as controller/route orders outbound
// routes). HTTPRoute: an Exact path, then the longest Prefix, then a
// RegularExpression path (implementation specific: after every Exact and
// Prefix); then a method; then the most headers; then the most query
// parameters. GRPCRoute: the longest service, then the longest method,
// then the most headers.
func compareMatches(a, b *destinationv1.Match, grpc bool) int {
	if grpc {
		return cmp.Or(
			cmp.Compare(len(b.GetGrpcService()), len(a.GetGrpcService())),
			cmp.Compare(len(b.GetGrpcMethod()), len(a.GetGrpcMethod())),
			cmp.Compare(len(b.GetHeaders()), len(a.GetHeaders())))
	}
	return cmp.Or(
		cmp.Compare(pathRank(a), pathRank(b)),
		cmp.Compare(len(b.GetPrefix()), len(a.GetPrefix())), // 0 for other types
		cmp.Compare(boolRank(b.GetMethod() != ""), boolRank(a.GetMethod() != "")),
		cmp.Compare(len(b.GetHeaders()), len(a.GetHeaders())),
		cmp.Compare(len(b.GetQuery()), len(a.GetQuery())))
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

func pathRank(m *destinationv1.Match) int {
	switch m.GetPath().(type) {
	case *destinationv1.Match_Exact:
		return 0
	case *destinationv1.Match_Regex:
		return 2
	}
	return 1
}
