package route

import (
	"fmt"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// fromGRPC converts a GRPCRoute. Its filters are a subset of HTTPRoute's
// and convert the same way.
func (b *builder) fromGRPC(r *gatewayv1.GRPCRoute) route {
	rt := route{ref: RouteRef{Kind: KindGRPCRoute, Namespace: r.Namespace, Name: r.Name}, meta: &r.ObjectMeta, parentRefs: r.Spec.ParentRefs}
	var p problems
	annotated := routePolicy(r.Annotations, &p)
	for i, in := range r.Spec.Rules {
		where := fmt.Sprintf("rule %s", ruleName(in.Name, i))
		rule := Rule{Route: rt.ref, Name: ruleName(in.Name, i)}
		rule.Filters = b.grpcFilters(in.Filters, filterSite{ns: r.Namespace, where: where}, &p)
		rt.policies = append(rt.policies, annotated)
		for j, br := range in.BackendRefs {
			bwhere := fmt.Sprintf("%s backendRef %d", where, j)
			be, ok := b.backend(br.BackendRef, r.Namespace, bwhere, &p)
			if !ok {
				continue
			}
			be.Filters = append(b.grpcFilters(br.Filters, filterSite{ns: r.Namespace, where: bwhere, backend: true}, &p), be.Filters...)
			rule.Backends = append(rule.Backends, be)
		}
		var matches []Match
		for j, m := range in.Matches {
			matches = append(matches, grpcMatch(m, fmt.Sprintf("%s match %d", where, j), &p))
		}
		if len(matches) == 0 {
			matches = []Match{{}} // the spec's default: every request
		}
		rt.rules = append(rt.rules, rule)
		rt.matches = append(rt.matches, matches)
	}
	rt.invalid, rt.unresolved = p.invalid, p.unresolved
	return rt
}

func grpcMatch(m gatewayv1.GRPCRouteMatch, where string, p *problems) Match {
	var out Match
	if m.Method != nil {
		out.GRPCService = deref(m.Method.Service, "")
		out.GRPCMethod = deref(m.Method.Method, "")
		if deref(m.Method.Type, gatewayv1.GRPCMethodMatchExact) == gatewayv1.GRPCMethodMatchRegularExpression {
			out.GRPCRegex = true
			for _, e := range []string{out.GRPCService, out.GRPCMethod} {
				if err := checkRegex(where+" method", e); err != nil {
					p.refuse(gatewayv1.RouteReasonUnsupportedValue, "%v", err)
				}
			}
		}
	}
	for _, h := range m.Headers {
		regex := deref(h.Type, gatewayv1.GRPCHeaderMatchExact) == gatewayv1.GRPCHeaderMatchRegularExpression
		out.Headers = append(out.Headers, valueMatch(lower(string(h.Name)), h.Value, regex, where+" header", p))
	}
	return out
}

// grpcFilters converts a GRPCRoute's filters through httpFilters: the
// types they share have the same names and fields.
func (b *builder) grpcFilters(in []gatewayv1.GRPCRouteFilter, at filterSite, p *problems) []Filter {
	conv := make([]gatewayv1.HTTPRouteFilter, 0, len(in))
	for _, f := range in {
		conv = append(conv, gatewayv1.HTTPRouteFilter{
			Type:                   gatewayv1.HTTPRouteFilterType(f.Type),
			RequestHeaderModifier:  f.RequestHeaderModifier,
			ResponseHeaderModifier: f.ResponseHeaderModifier,
			ExtensionRef:           f.ExtensionRef,
		})
	}
	return b.httpFilters(conv, at, p)
}
