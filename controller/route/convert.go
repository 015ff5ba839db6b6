package route

import (
	"fmt"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// problems collects what is wrong with a route while it is converted:
// invalid makes it unacceptable on every parent, unresolved sets its
// ResolvedRefs to False. The first problem of each names the reason.
type problems struct {
	invalid, unresolved *Condition
}

func (p *problems) refuse(reason gatewayv1.RouteConditionReason, format string, args ...any) {
	p.invalid = note(p.invalid, reason, fmt.Sprintf(format, args...))
}

func (p *problems) unresolve(reason gatewayv1.RouteConditionReason, format string, args ...any) {
	p.unresolved = note(p.unresolved, reason, fmt.Sprintf(format, args...))
}

// note adds msg to c, keeping c's reason if it has one.
func note(c *Condition, reason gatewayv1.RouteConditionReason, msg string) *Condition {
	if c == nil {
		return &Condition{Reason: reason, Message: msg}
	}
	c.Message += "; " + msg
	return c
}

// fromHTTP converts an HTTPRoute.
func (b *builder) fromHTTP(r *gatewayv1.HTTPRoute) route {
	rt := route{ref: RouteRef{Kind: KindHTTPRoute, Namespace: r.Namespace, Name: r.Name}, meta: &r.ObjectMeta, parentRefs: r.Spec.ParentRefs}
	var p problems
	annotated := routePolicy(r.Annotations, &p)
	for i, in := range r.Spec.Rules {
		where := fmt.Sprintf("rule %s", ruleName(in.Name, i))
		rule := Rule{Route: rt.ref, Name: ruleName(in.Name, i)}
		rule.Filters = b.httpFilters(in.Filters, filterSite{ns: r.Namespace, where: where}, &p)
		own := annotated
		if t, err := timeouts(in.Timeouts); err != nil {
			p.refuse(gatewayv1.RouteReasonUnsupportedValue, "%s: %v", where, err)
		} else {
			rule.Timeouts = t
			// The rule's own timeouts.request wins over the
			// annotations, "0s" (none) included.
			if in.Timeouts != nil && in.Timeouts.Request != nil {
				own.request = some(t.Request)
			}
		}
		rt.policies = append(rt.policies, own)
		for j, br := range in.BackendRefs {
			bwhere := fmt.Sprintf("%s backendRef %d", where, j)
			be, ok := b.backend(br.BackendRef, r.Namespace, bwhere, &p)
			if !ok {
				continue
			}
			be.Filters = append(b.httpFilters(br.Filters, filterSite{ns: r.Namespace, where: bwhere, backend: true}, &p), be.Filters...)
			rule.Backends = append(rule.Backends, be)
		}
		var matches []Match
		for j, m := range in.Matches {
			matches = append(matches, httpMatch(m, fmt.Sprintf("%s match %d", where, j), &p))
		}
		if len(matches) == 0 {
			// The spec's default match: path prefix "/".
			matches = []Match{{PathType: PathPrefix, Path: "/"}}
		}
		rt.rules = append(rt.rules, rule)
		rt.matches = append(rt.matches, matches)
	}
	rt.invalid, rt.unresolved = p.invalid, p.unresolved
	return rt
}

// routePolicy reads a route's traffic annotations; each bad one refuses
// the route (UnsupportedValue), its message naming the annotation, its
// value and what it takes.
func routePolicy(ann map[string]string, p *problems) policy {
	pol, _, errs := parsePolicy(ann, false)
	for _, err := range errs {
		p.refuse(gatewayv1.RouteReasonUnsupportedValue, "%v", err)
	}
	return pol
}

// httpMatch converts one HTTPRouteMatch.
func httpMatch(m gatewayv1.HTTPRouteMatch, where string, p *problems) Match {
	out := Match{PathType: PathPrefix, Path: "/"}
	if m.Path != nil {
		if m.Path.Value != nil {
			out.Path = *m.Path.Value
		}
		switch t := deref(m.Path.Type, gatewayv1.PathMatchPathPrefix); t {
		case gatewayv1.PathMatchExact:
			out.PathType = PathExact
		case gatewayv1.PathMatchPathPrefix:
			out.PathType = PathPrefix
		case gatewayv1.PathMatchRegularExpression:
			out.PathType = PathRegex
			if err := checkRegex(where+" path", out.Path); err != nil {
				p.refuse(gatewayv1.RouteReasonUnsupportedValue, "%v", err)
			}
		default:
			p.refuse(gatewayv1.RouteReasonUnsupportedValue, "%s: path match type %q is not supported", where, t)
		}
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
	}
	for _, h := range m.Headers {
		regex := deref(h.Type, gatewayv1.HeaderMatchExact) == gatewayv1.HeaderMatchRegularExpression
		out.Headers = append(out.Headers, valueMatch(lower(string(h.Name)), h.Value, regex, where+" header", p))
	}
	for _, q := range m.QueryParams {
		regex := deref(q.Type, gatewayv1.QueryParamMatchExact) == gatewayv1.QueryParamMatchRegularExpression
		out.Query = append(out.Query, valueMatch(string(q.Name), q.Value, regex, where+" query parameter", p))
	}
	return out
}

func valueMatch(name, value string, regex bool, where string, p *problems) ValueMatch {
	if regex {
		if err := checkRegex(where+" "+name, value); err != nil {
			p.refuse(gatewayv1.RouteReasonUnsupportedValue, "%v", err)
		}
	}
	return ValueMatch{Name: name, Value: value, Regex: regex}
}

// filterSite is where filters are: the namespace of their route, where
// in it for messages, and whether on a backendRef.
type filterSite struct {
	ns, where string
	backend   bool
}

// httpFilters converts the filters of a rule or a backendRef. Kinds mesh
// does not implement make the route UnsupportedValue; RequestRedirect
// with URLRewrite is IncompatibleFilters (httproute_types.go: they "MUST
// NOT be used together"), and so are two HTTPFaults, which mesh would
// have to merge; ExtensionRef filters are extensionRef's.
func (b *builder) httpFilters(in []gatewayv1.HTTPRouteFilter, at filterSite, p *problems) []Filter {
	var out []Filter
	var redirect, rewrite bool
	faults := 0
	for _, f := range in {
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			out = append(out, Filter{Kind: FilterRequestHeaders, Headers: headerModifier(f.RequestHeaderModifier)})
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			out = append(out, Filter{Kind: FilterResponseHeaders, Headers: headerModifier(f.ResponseHeaderModifier)})
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			redirect = true
			out = append(out, Filter{Kind: FilterRedirect, Redirect: redirectFilter(f.RequestRedirect)})
		case gatewayv1.HTTPRouteFilterURLRewrite:
			rewrite = true
			out = append(out, Filter{Kind: FilterRewrite, Rewrite: rewriteFilter(f.URLRewrite)})
		case gatewayv1.HTTPRouteFilterExtensionRef:
			ext := b.extensionRef(f.ExtensionRef, at, p)
			if ext.Kind == FilterFault {
				faults++
			}
			out = append(out, ext)
		default:
			p.refuse(gatewayv1.RouteReasonUnsupportedValue, "%s: filter type %q is not supported by mesh", at.where, f.Type)
		}
	}
	if redirect && rewrite {
		p.refuse(gatewayv1.RouteReasonIncompatibleFilters, "%s: RequestRedirect and URLRewrite cannot be used together", at.where)
	}
	if faults > 1 {
		p.refuse(gatewayv1.RouteReasonIncompatibleFilters, "%s: %d HTTPFault filters: mesh applies at most one per rule", at.where, faults)
	}
	return out
}

func headerModifier(h *gatewayv1.HTTPHeaderFilter) HeaderModifier {
	var out HeaderModifier
	if h == nil {
		return out
	}
	for _, s := range h.Set {
		out.Set = append(out.Set, Header{Name: strings.ToLower(string(s.Name)), Value: s.Value})
	}
	for _, a := range h.Add {
		out.Add = append(out.Add, Header{Name: strings.ToLower(string(a.Name)), Value: a.Value})
	}
	for _, r := range h.Remove {
		out.Remove = append(out.Remove, strings.ToLower(r))
	}
	return out
}

func pathModifier(m *gatewayv1.HTTPPathModifier) PathModifier {
	if m == nil {
		return PathModifier{}
	}
	switch m.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		return PathModifier{Type: PathReplaceFull, Value: deref(m.ReplaceFullPath, "")}
	case gatewayv1.PrefixMatchHTTPPathModifier:
		return PathModifier{Type: PathReplacePrefix, Value: deref(m.ReplacePrefixMatch, "")}
	}
	return PathModifier{}
}

func redirectFilter(r *gatewayv1.HTTPRequestRedirectFilter) Redirect {
	out := Redirect{StatusCode: http.StatusFound}
	if r == nil {
		return out
	}
	out.Scheme = deref(r.Scheme, "")
	out.Hostname = string(deref(r.Hostname, ""))
	out.Path = pathModifier(r.Path)
	out.Port = deref(r.Port, 0)
	out.StatusCode = deref(r.StatusCode, http.StatusFound)
	return out
}

func rewriteFilter(r *gatewayv1.HTTPURLRewriteFilter) Rewrite {
	if r == nil {
		return Rewrite{}
	}
	return Rewrite{Hostname: string(deref(r.Hostname, "")), Path: pathModifier(r.Path)}
}

// backend resolves a backendRef of a route in ns. ok is false for a
// backend of weight 0, which is left out. An unresolvable backend keeps
// its weight with a Fail filter, and unresolves the route.
func (b *builder) backend(ref gatewayv1.BackendRef, ns, where string, p *problems) (Backend, bool) {
	weight := deref(ref.Weight, 1)
	if weight <= 0 {
		return Backend{}, false
	}
	svc := types.NamespacedName{Namespace: string(deref(ref.Namespace, gatewayv1.Namespace(ns))), Name: string(ref.Name)}
	out := Backend{Service: ServicePort{Service: svc, Port: deref(ref.Port, 0)}, Weight: uint32(weight)}
	fail := func(reason gatewayv1.RouteConditionReason, format string, args ...any) (Backend, bool) {
		msg := fmt.Sprintf(format, args...)
		p.unresolve(reason, "%s: %s", where, msg)
		out.Filters = []Filter{{Kind: FilterFail, Fail: Fail{Status: http.StatusInternalServerError, Message: msg}}}
		return out, true
	}
	group, kind := deref(ref.Group, ""), deref(ref.Kind, "Service")
	if group != "" || kind != "Service" {
		return fail(gatewayv1.RouteReasonInvalidKind, "backend %s/%s %s: mesh forwards to Services only", group, kind, ref.Name)
	}
	s := b.service(svc)
	if s == nil {
		return fail(gatewayv1.RouteReasonBackendNotFound, "Service %s not found", svc)
	}
	if ref.Port == nil {
		return fail(gatewayv1.RouteReasonBackendNotFound, "backend Service %s: no port given (a Service backend needs one)", svc)
	}
	for _, sp := range s.Spec.Ports {
		if sp.Port == *ref.Port {
			return out, true
		}
	}
	return fail(gatewayv1.RouteReasonBackendNotFound, "Service %s has no port %d", svc, *ref.Port)
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// lower is a header name as the proxy compares it.
func lower(name string) string { return strings.ToLower(name) }
