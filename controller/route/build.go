package route

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
)

// Inputs are the objects a Snapshot is built from, as the caches hold
// them: read them, never change them.
type Inputs struct {
	// Services are every Service of the cluster: the parents and backends
	// of routes, and the Services whose annotations give a policy.
	Services   []*corev1.Service
	HTTPRoutes []*gatewayv1.HTTPRoute
	GRPCRoutes []*gatewayv1.GRPCRoute
	// Faults are every HTTPFault of the cluster, which ExtensionRef
	// filters of routes in their namespace may name.
	Faults []*policyv1alpha1.HTTPFault
}

// Snapshot is the routing of every Service port with routes or a policy,
// and the status every route should have. Immutable once built.
type Snapshot struct {
	// producer holds the tables of the routes in each Service's own
	// namespace; consumer those of other namespaces' routes, by client
	// namespace.
	producer map[ServicePort]*Table
	consumer map[string]map[ServicePort]*Table
	// policyOnly holds the tables, without rules, of the ports of
	// Services whose annotations give a policy, for clients no route
	// applies to.
	policyOnly map[ServicePort]*Table
	// Status is the mesh's status entries of every route that has a
	// parentRef naming a Service, one per such parentRef in spec order.
	Status map[RouteRef]RouteStatus
	// Warnings say, by Service, what is wrong with its traffic
	// annotations, each one ignored; the index reports them as Events on
	// the Service. Sorted.
	Warnings map[types.NamespacedName][]string
}

// RouteStatus is what mesh says of one route.
type RouteStatus struct {
	Generation int64
	Parents    []ParentStatus
}

// ParentStatus is the status of a route on one parentRef.
type ParentStatus struct {
	Ref          gatewayv1.ParentReference
	Accepted     Condition
	ResolvedRefs Condition
}

// Condition is one condition without its times.
type Condition struct {
	OK      bool
	Reason  gatewayv1.RouteConditionReason
	Message string
}

// Lookup returns the table of a Service port for clients in namespace
// clientNS: the consumer routes of that namespace if it has any for the
// port, else the producer routes (GEP-1294, GEP-1686: "Consumer routes
// have priority over producer routes"), else a table of the Service's
// policy alone. nil when no route applies and the Service has no policy.
func (s *Snapshot) Lookup(p ServicePort, clientNS string) *Table {
	if s == nil {
		return nil
	}
	if t := s.consumer[clientNS][p]; t != nil {
		return t
	}
	if t := s.producer[p]; t != nil {
		return t
	}
	return s.policyOnly[p]
}

// Build resolves in into a Snapshot. It never fails: what is wrong with a
// route is in its status.
func Build(in Inputs) *Snapshot {
	b := builder{in: in, snap: &Snapshot{
		producer:   map[ServicePort]*Table{},
		consumer:   map[string]map[ServicePort]*Table{},
		policyOnly: map[ServicePort]*Table{},
		Status:     map[RouteRef]RouteStatus{},
		Warnings:   map[types.NamespacedName][]string{},
	}, entries: map[tableKey][]entry{}, services: map[types.NamespacedName]*corev1.Service{}, policies: map[types.NamespacedName]*servicePolicy{},
		faults: map[types.NamespacedName]*policyv1alpha1.HTTPFault{}}
	for _, s := range in.Services {
		b.services[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	for _, f := range in.Faults {
		b.faults[types.NamespacedName{Namespace: f.Namespace, Name: f.Name}] = f
	}
	for _, s := range in.Services {
		b.addService(s)
	}
	grpcParents := map[tableKey]RouteRef{} // the GRPCRoute that holds each table
	var routes []route
	for _, r := range in.GRPCRoutes {
		rt := b.fromGRPC(r)
		routes = append(routes, rt)
		if rt.invalid == nil {
			for _, k := range b.attachments(rt) {
				if _, taken := grpcParents[k]; !taken {
					grpcParents[k] = rt.ref
				}
			}
		}
	}
	for _, r := range in.HTTPRoutes {
		routes = append(routes, b.fromHTTP(r))
	}
	for _, rt := range routes {
		b.add(rt, grpcParents)
	}
	b.publish()
	return b.snap
}

// tableKey is one table: a Service port and the namespace of the routes
// in it (the Service's for producer routes).
type tableKey struct {
	parent  ServicePort
	routeNS string
}

// entry is one Rule with what orders it.
type entry struct {
	rule    Rule
	created metav1.Time
	ruleIdx int
	grpc    bool
}

type builder struct {
	in       Inputs
	snap     *Snapshot
	entries  map[tableKey][]entry
	services map[types.NamespacedName]*corev1.Service
	// policies are those of the Services whose annotations give one.
	policies map[types.NamespacedName]*servicePolicy
	faults   map[types.NamespacedName]*policyv1alpha1.HTTPFault
}

// servicePolicy is what a Service's traffic annotations set.
type servicePolicy struct {
	policy policy
	// rule is the tables' Default: the Service with policy; nil when
	// policy sets nothing.
	rule    *Rule
	accrual *FailureAccrual
}

// service returns the Service, or nil when there is none.
func (b *builder) service(n types.NamespacedName) *corev1.Service { return b.services[n] }

// addService reads the traffic annotations of s. A bad one is ignored
// and becomes a warning; so do good ones on a Service without a cluster
// IP, which no proxy asks routes of.
func (b *builder) addService(s *corev1.Service) {
	name := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	pol, accrual, errs := parsePolicy(s.Annotations, true)
	var warnings []string
	for _, err := range errs {
		warnings = append(warnings, err.Error()+"; ignored")
	}
	if pol.empty() && !accrual.ok {
		if len(warnings) > 0 {
			b.snap.Warnings[name] = warnings
		}
		return
	}
	if !hasClusterIP(s) {
		b.snap.Warnings[name] = append(warnings, "the traffic annotations of a Service without a cluster IP (headless or ExternalName) have no effect: clients reach its pods by their own addresses")
		return
	}
	if len(warnings) > 0 {
		b.snap.Warnings[name] = warnings
	}
	sp := &servicePolicy{policy: pol}
	if !pol.empty() {
		sp.rule = &Rule{Route: RouteRef{Kind: KindService, Namespace: s.Namespace, Name: s.Name}}
		pol.apply(sp.rule)
	}
	if accrual.ok {
		sp.accrual = &accrual.v
	}
	b.policies[name] = sp
}

// hasClusterIP reports whether clients reach s by a virtual IP, which
// their proxies resolve to the Service: routes and policies apply only
// to such Services.
func hasClusterIP(s *corev1.Service) bool {
	return s.Spec.Type != corev1.ServiceTypeExternalName && s.Spec.ClusterIP != "" && s.Spec.ClusterIP != corev1.ClusterIPNone
}

// route is what HTTPRoute and GRPCRoute have in common once converted.
type route struct {
	ref        RouteRef
	meta       *metav1.ObjectMeta
	parentRefs []gatewayv1.ParentReference
	rules      []Rule // unsplit: Match unset, see matches
	matches    [][]Match
	// policies are the rules' own policies over the route's annotations,
	// one per rule: the parent Service's fills what they leave unset.
	policies []policy
	// invalid says why the route cannot be accepted anywhere
	// (UnsupportedValue or IncompatibleFilters); unresolved why some of
	// its references do not resolve (InvalidKind, BackendNotFound).
	invalid    *Condition
	unresolved *Condition
}

// serviceParent reports whether p names a Service (group "", kind
// Service): the GAMMA parents, the only ones mesh answers for.
func serviceParent(p gatewayv1.ParentReference) bool {
	return (p.Group != nil && *p.Group == "") && (p.Kind != nil && *p.Kind == "Service")
}

// parentService returns the Service p names, from a route in ns.
func parentService(p gatewayv1.ParentReference, ns string) types.NamespacedName {
	if p.Namespace != nil {
		ns = string(*p.Namespace)
	}
	return types.NamespacedName{Namespace: ns, Name: string(p.Name)}
}

// attachments returns the tables rt's valid Service parents put it in.
// Only a valid GRPCRoute refuses the HTTPRoutes of its tables.
func (b *builder) attachments(rt route) []tableKey {
	var keys []tableKey
	for _, p := range rt.parentRefs {
		if !serviceParent(p) {
			continue
		}
		ports, _ := b.parentPorts(p, rt.ref.Namespace)
		for _, port := range ports {
			keys = append(keys, tableKey{parent: ServicePort{parentService(p, rt.ref.Namespace), port}, routeNS: rt.ref.Namespace})
		}
	}
	return keys
}

// parentPorts returns the Service ports parentRef p attaches to, or the
// condition that refuses it.
func (b *builder) parentPorts(p gatewayv1.ParentReference, ns string) ([]int32, *Condition) {
	name := parentService(p, ns)
	svc := b.service(name)
	if svc == nil {
		return nil, &Condition{Reason: gatewayv1.RouteReasonNoMatchingParent, Message: fmt.Sprintf("Service %s not found", name)}
	}
	if !hasClusterIP(svc) {
		return nil, &Condition{Reason: gatewayv1.RouteReasonUnsupportedValue,
			Message: fmt.Sprintf("Service %s has no cluster IP (headless or ExternalName): mesh routes attach to cluster IP Services only", name)}
	}
	var ports []int32
	for _, sp := range svc.Spec.Ports {
		if p.Port == nil || *p.Port == sp.Port {
			ports = append(ports, sp.Port)
		}
	}
	if len(ports) == 0 {
		return nil, &Condition{Reason: gatewayv1.RouteReasonNoMatchingParent, Message: fmt.Sprintf("Service %s has no port %d", name, *p.Port)}
	}
	return ports, nil
}

// add records rt's status and puts its rules in the tables it attaches
// to. grpcParents are the tables some GRPCRoute attaches to.
func (b *builder) add(rt route, grpcParents map[tableKey]RouteRef) {
	st := RouteStatus{Generation: rt.meta.Generation}
	resolved := Condition{OK: true, Reason: gatewayv1.RouteReasonResolvedRefs, Message: "every reference resolves"}
	if rt.unresolved != nil {
		resolved = *rt.unresolved
	}
	for _, p := range rt.parentRefs {
		if !serviceParent(p) {
			continue
		}
		ps := ParentStatus{Ref: p, ResolvedRefs: resolved}
		ports, refused := b.parentPorts(p, rt.ref.Namespace)
		if refused == nil && rt.invalid != nil {
			refused = rt.invalid
		}
		if refused == nil && rt.ref.Kind == KindHTTPRoute {
			svc := parentService(p, rt.ref.Namespace)
			for _, port := range ports {
				if g, ok := grpcParents[tableKey{parent: ServicePort{svc, port}, routeNS: rt.ref.Namespace}]; ok {
					refused = &Condition{Reason: gatewayv1.RouteReasonUnsupportedValue,
						Message: fmt.Sprintf("a GRPCRoute (%s/%s) is attached to Service %s port %d; GRPCRoute takes precedence (GEP-1426)", g.Namespace, g.Name, svc, port)}
					break
				}
			}
		}
		if refused != nil {
			ps.Accepted = *refused
			st.Parents = append(st.Parents, ps)
			continue
		}
		ps.Accepted = Condition{OK: true, Reason: gatewayv1.RouteReasonAccepted, Message: "attached to Service " + parentService(p, rt.ref.Namespace).String()}
		st.Parents = append(st.Parents, ps)
		for _, port := range ports {
			k := tableKey{parent: ServicePort{parentService(p, rt.ref.Namespace), port}, routeNS: rt.ref.Namespace}
			b.addRules(k, rt)
		}
	}
	if len(st.Parents) > 0 {
		b.snap.Status[rt.ref] = st
	}
}

// addRules puts each match of each rule of rt in table k, once even when
// two parentRefs name the same port, with the parent Service's policy
// where the rule and the route leave a field unset.
func (b *builder) addRules(k tableKey, rt route) {
	if slices.ContainsFunc(b.entries[k], func(e entry) bool { return e.rule.Route == rt.ref }) {
		return
	}
	var svc policy
	if sp := b.policies[k.parent.Service]; sp != nil {
		svc = sp.policy
	}
	for i, r := range rt.rules {
		rt.policies[i].or(svc).apply(&r)
		for _, m := range rt.matches[i] {
			r := r
			r.Match = m
			b.entries[k] = append(b.entries[k], entry{rule: r, created: rt.meta.CreationTimestamp, ruleIdx: i, grpc: rt.ref.Kind == KindGRPCRoute})
		}
	}
}

// publish sorts every table's entries and files the tables, each with its
// Service's policy, and a table of the policy alone for every port of a
// Service that has one.
func (b *builder) publish() {
	for k, es := range b.entries {
		slices.SortStableFunc(es, compareEntries)
		t := &Table{Parent: k.parent}
		if sp := b.policies[k.parent.Service]; sp != nil {
			t.Default, t.FailureAccrual = sp.rule, sp.accrual
		}
		for _, e := range es {
			if e.grpc {
				t.GRPC = append(t.GRPC, e.rule)
			} else {
				t.HTTP = append(t.HTTP, e.rule)
			}
		}
		if k.routeNS == k.parent.Service.Namespace {
			b.snap.producer[k.parent] = t
			continue
		}
		if b.snap.consumer[k.routeNS] == nil {
			b.snap.consumer[k.routeNS] = map[ServicePort]*Table{}
		}
		b.snap.consumer[k.routeNS][k.parent] = t
	}
	for name, sp := range b.policies {
		for _, port := range b.services[name].Spec.Ports {
			p := ServicePort{Service: name, Port: port.Port}
			b.snap.policyOnly[p] = &Table{Parent: p, Default: sp.rule, FailureAccrual: sp.accrual}
		}
	}
}

// compareEntries orders matches as the spec says, the more specific
// first. HTTPRoute (httproute_types.go, the Matches doc): an Exact path,
// then the longest Prefix, then a method, then the most headers, then the
// most query parameters; a RegularExpression path is implementation
// specific and comes after every Exact and Prefix. GRPCRoute
// (grpcroute_types.go): the longest service, then the longest method,
// then the most headers. Ties: the oldest route, then namespace/name,
// then rule order (the stable sort keeps the order of matches in a rule).
func compareEntries(a, b entry) int {
	ma, mb := a.rule.Match, b.rule.Match
	var c int
	if a.grpc {
		c = cmp.Or(
			cmp.Compare(len(mb.GRPCService), len(ma.GRPCService)),
			cmp.Compare(len(mb.GRPCMethod), len(ma.GRPCMethod)),
			cmp.Compare(len(mb.Headers), len(ma.Headers)))
	} else {
		c = cmp.Or(
			cmp.Compare(pathRank(ma.PathType), pathRank(mb.PathType)),
			prefixLength(ma, mb),
			cmp.Compare(boolRank(mb.Method != ""), boolRank(ma.Method != "")),
			cmp.Compare(len(mb.Headers), len(ma.Headers)),
			cmp.Compare(len(mb.Query), len(ma.Query)))
	}
	if c != 0 {
		return c
	}
	if !a.created.Equal(&b.created) {
		if a.created.Before(&b.created) {
			return -1
		}
		return 1
	}
	return cmp.Or(
		strings.Compare(a.rule.Route.Namespace, b.rule.Route.Namespace),
		strings.Compare(a.rule.Route.Name, b.rule.Route.Name),
		cmp.Compare(a.ruleIdx, b.ruleIdx))
}

// pathRank orders path match types: Exact, Prefix, RegularExpression.
// PathAny never occurs in an HTTP table (a rule without matches gets
// PathPrefix "/"); it ranks with Prefix.
func pathRank(t PathType) int {
	switch t {
	case PathExact:
		return 0
	case PathRegex:
		return 2
	default:
		return 1
	}
}

// prefixLength puts the longer of two Prefix paths first.
func prefixLength(a, b Match) int {
	if a.PathType == PathPrefix && b.PathType == PathPrefix {
		return cmp.Compare(len(b.Path), len(a.Path))
	}
	return 0
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ruleName is spec.rules[i].name, or i.
func ruleName(name *gatewayv1.SectionName, i int) string {
	if name != nil && *name != "" {
		return string(*name)
	}
	return strconv.Itoa(i)
}

// timeouts converts a rule's timeouts; an unparsable duration (the CRD's
// pattern refuses them) makes the route UnsupportedValue.
func timeouts(t *gatewayv1.HTTPRouteTimeouts) (Timeouts, error) {
	var out Timeouts
	if t == nil {
		return out, nil
	}
	for _, f := range []struct {
		field string
		in    *gatewayv1.Duration
		out   *time.Duration
	}{{"request", t.Request, &out.Request}, {"backendRequest", t.BackendRequest, &out.BackendRequest}} {
		if f.in == nil {
			continue
		}
		d, err := time.ParseDuration(string(*f.in))
		if err != nil || d < 0 {
			return out, fmt.Errorf("timeouts.%s %q is not a duration", f.field, *f.in)
		}
		*f.out = d
	}
	return out, nil
}

// checkRegex reports a regular expression the proxy (Go's RE2) cannot
// compile.
func checkRegex(what, expr string) error {
	if _, err := regexp.Compile(expr); err != nil {
		return fmt.Errorf("%s: regular expression %q: %w", what, expr, err)
	}
	return nil
}
