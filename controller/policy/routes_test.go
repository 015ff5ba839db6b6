package policy

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/controller/route"
)

// Builders of routes.

func serverParent(name string) gatewayv1.ParentReference {
	g, k := gatewayv1.Group(policyv1alpha1.GroupName), gatewayv1.Kind(policyv1alpha1.KindServer)
	return gatewayv1.ParentReference{Group: &g, Kind: &k, Name: gatewayv1.ObjectName(name)}
}

func serviceParent(name string) gatewayv1.ParentReference {
	g, k := gatewayv1.Group(""), gatewayv1.Kind("Service")
	return gatewayv1.ParentReference{Group: &g, Kind: &k, Name: gatewayv1.ObjectName(name)}
}

func httpRoute(name string, age int, parents []gatewayv1.ParentReference, rules ...gatewayv1.HTTPRouteRule) *gatewayv1.HTTPRoute {
	return &gatewayv1.HTTPRoute{
		TypeMeta:   metav1.TypeMeta{APIVersion: gatewayv1.GroupVersion.String(), Kind: kindHTTPRoute},
		ObjectMeta: meta(name, age),
		Spec:       gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parents}, Rules: rules},
	}
}

func grpcRoute(name string, age int, parents []gatewayv1.ParentReference, rules ...gatewayv1.GRPCRouteRule) *gatewayv1.GRPCRoute {
	return &gatewayv1.GRPCRoute{
		TypeMeta:   metav1.TypeMeta{APIVersion: gatewayv1.GroupVersion.String(), Kind: kindGRPCRoute},
		ObjectMeta: meta(name, age),
		Spec:       gatewayv1.GRPCRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parents}, Rules: rules},
	}
}

func rule(matches ...gatewayv1.HTTPRouteMatch) gatewayv1.HTTPRouteRule {
	return gatewayv1.HTTPRouteRule{Matches: matches}
}

func pathMatch(t gatewayv1.PathMatchType, value string) gatewayv1.HTTPRouteMatch {
	return gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: &t, Value: &value}}
}

func withMethod(m gatewayv1.HTTPRouteMatch, method string) gatewayv1.HTTPRouteMatch {
	hm := gatewayv1.HTTPMethod(method)
	m.Method = &hm
	return m
}

func withHeader(m gatewayv1.HTTPRouteMatch, name, value string) gatewayv1.HTTPRouteMatch {
	m.Headers = append(m.Headers, gatewayv1.HTTPHeaderMatch{Name: gatewayv1.HTTPHeaderName(name), Value: value})
	return m
}

func withQuery(m gatewayv1.HTTPRouteMatch, name, value string) gatewayv1.HTTPRouteMatch {
	m.QueryParams = append(m.QueryParams, gatewayv1.HTTPQueryParamMatch{Name: gatewayv1.HTTPHeaderName(name), Value: value})
	return m
}

func grpcRule(service, method string) gatewayv1.GRPCRouteRule {
	return gatewayv1.GRPCRouteRule{Matches: []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{Service: ptr(service), Method: ptr(method)}}}}
}

func ptr[T any](v T) *T { return &v }

func toRoute(kind, name string) policyv1alpha1.TargetRef {
	return policyv1alpha1.TargetRef{Group: gatewayv1.GroupName, Kind: kind, Name: name}
}

// Expected messages.

func exact(p string) *destinationv1.Match {
	return &destinationv1.Match{Path: &destinationv1.Match_Exact{Exact: p}}
}

func prefix(p string) *destinationv1.Match {
	return &destinationv1.Match{Path: &destinationv1.Match_Prefix{Prefix: p}}
}

func regex(p string) *destinationv1.Match {
	return &destinationv1.Match{Path: &destinationv1.Match_Regex{Regex: p}}
}

func method(m *destinationv1.Match, method string) *destinationv1.Match {
	m.Method = method
	return m
}

func header(m *destinationv1.Match, name, value string) *destinationv1.Match {
	m.Headers = append(m.Headers, &destinationv1.HeaderMatch{Name: name, Value: &destinationv1.HeaderMatch_Exact{Exact: value}})
	return m
}

func query(m *destinationv1.Match, name, value string) *destinationv1.Match {
	m.Query = append(m.Query, &destinationv1.HeaderMatch{Name: name, Value: &destinationv1.HeaderMatch_Exact{Exact: value}})
	return m
}

func wantRoute(kind, name string, authz ...*inboundv1.Authorization) *inboundv1.InboundRoute {
	return &inboundv1.InboundRoute{Kind: kind, Name: name, Authorizations: authz}
}

func routeRule(route uint32, name string, m *destinationv1.Match) *inboundv1.InboundRouteRule {
	return &inboundv1.InboundRouteRule{Route: route, RuleName: name, Match: m}
}

// TestInboundRoutes: which routes a Server's port carries, in what order,
// with which authorizations, and what each route's status says of its
// Server parents.
func TestInboundRoutes(t *testing.T) {
	ns := namespace(testNS, nil)
	srv := server("web-http", 0, intstr.FromInt32(8080), policyv1alpha1.ProtocolHTTP1, map[string]string{"app": "web"})
	web := []gatewayv1.ParentReference{serverParent("web-http")}
	// on is the expected port 8080 with its routes.
	on := func(routes []*inboundv1.InboundRoute, rules []*inboundv1.InboundRouteRule, authz ...*inboundv1.Authorization) *inboundv1.PodPolicy {
		p := port(8080, "web-http", http1, authz...)
		p.Routes, p.RouteRules = routes, rules
		return unauthenticated(p)
	}
	accepted := routeCondition{ok: true, reason: gatewayv1.RouteReasonAccepted,
		message: "selects requests of Server web-http for authorization; the pod's port serves them, whatever backendRefs say"}
	tests := []struct {
		name         string
		objs         []runtime.Object
		want         *inboundv1.PodPolicy
		wantOutcomes map[routeKey][]routeCondition
		wantWarnings []string
	}{
		{
			name: "a route's policies go with it, the Server's with the port; a rule without matches takes every path",
			objs: []runtime.Object{
				httpRoute("api", 0, web, rule(pathMatch(gatewayv1.PathMatchPathPrefix, "/api")), rule()),
				authzPolicy("api-users", toRoute("HTTPRoute", "api"), networkRef("office")),
				authzPolicy("ops", toServer("web-http")),
				networkAuthn("office", policyv1alpha1.Network{CIDR: "10.0.0.0/8"}),
			},
			want: on([]*inboundv1.InboundRoute{
				wantRoute("HTTPRoute", "api", authorization("api-users", nets("NetworkAuthentication/office", cidr("10.0.0.0/8")))),
			}, []*inboundv1.InboundRouteRule{
				routeRule(0, "0", prefix("/api")),
				routeRule(0, "1", prefix("/")),
			}, allowAll("ops")),
			wantOutcomes: map[routeKey][]routeCondition{{kindHTTPRoute, "api"}: {accepted}},
		},
		{
			name: "precedence: exact, longest prefix, method, most headers, most query parameters, regex last; then the oldest route",
			objs: []runtime.Object{
				httpRoute("young", 20, web,
					rule(pathMatch(gatewayv1.PathMatchRegularExpression, "/a.*")),
					rule(withQuery(pathMatch(gatewayv1.PathMatchPathPrefix, "/a"), "q", "1")),
					rule(pathMatch(gatewayv1.PathMatchPathPrefix, "/a")),
				),
				httpRoute("old", 10, web,
					rule(pathMatch(gatewayv1.PathMatchPathPrefix, "/a")),
					rule(withHeader(pathMatch(gatewayv1.PathMatchPathPrefix, "/a"), "X-Canary", "1")),
					rule(withMethod(pathMatch(gatewayv1.PathMatchPathPrefix, "/a"), "GET")),
					rule(pathMatch(gatewayv1.PathMatchPathPrefix, "/a/b")),
					rule(pathMatch(gatewayv1.PathMatchExact, "/z")),
				),
			},
			want: on([]*inboundv1.InboundRoute{wantRoute("HTTPRoute", "old"), wantRoute("HTTPRoute", "young")}, []*inboundv1.InboundRouteRule{
				routeRule(0, "4", exact("/z")),
				routeRule(0, "3", prefix("/a/b")),
				routeRule(0, "2", method(prefix("/a"), "GET")),
				routeRule(0, "1", header(prefix("/a"), "x-canary", "1")),
				routeRule(1, "1", query(prefix("/a"), "q", "1")),
				routeRule(0, "0", prefix("/a")),
				routeRule(1, "2", prefix("/a")),
				routeRule(1, "0", regex("/a.*")),
			}),
			wantOutcomes: map[routeKey][]routeCondition{{kindHTTPRoute, "old"}: {accepted}, {kindHTTPRoute, "young"}: {accepted}},
		},
		{
			name: "a GRPCRoute takes the Server: its HTTPRoutes are refused; gRPC precedence",
			objs: []runtime.Object{
				httpRoute("http", 0, web, rule()),
				grpcRoute("grpc", 5, web, grpcRule("shop.Cart", ""), grpcRule("shop.Cart", "Add"), gatewayv1.GRPCRouteRule{}),
				authzPolicy("adders", toRoute("GRPCRoute", "grpc")),
			},
			want: on([]*inboundv1.InboundRoute{wantRoute("GRPCRoute", "grpc", allowAll("adders"))}, []*inboundv1.InboundRouteRule{
				routeRule(0, "1", &destinationv1.Match{GrpcService: "shop.Cart", GrpcMethod: "Add"}),
				routeRule(0, "0", &destinationv1.Match{GrpcService: "shop.Cart"}),
				routeRule(0, "2", &destinationv1.Match{}),
			}),
			wantOutcomes: map[routeKey][]routeCondition{
				{kindGRPCRoute, "grpc"}: {accepted},
				{kindHTTPRoute, "http"}: {{reason: gatewayv1.RouteReasonUnsupportedValue,
					message: "a GRPCRoute (shop/grpc) is attached to Server web-http; GRPCRoute takes precedence (GEP-1426)"}},
			},
			wantWarnings: []string{"HTTPRoute shop/http is not accepted by Server web-http (UnsupportedValue)"},
		},
		{
			name: "routes it cannot honour are refused, and the port has none",
			objs: []runtime.Object{
				func() runtime.Object {
					r := httpRoute("filtered", 0, web, rule())
					r.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier}}
					return r
				}(),
				func() runtime.Object {
					r := httpRoute("hosts", 0, web, rule())
					r.Spec.Hostnames = []gatewayv1.Hostname{"web.example"}
					return r
				}(),
				httpRoute("badregex", 0, web, rule(pathMatch(gatewayv1.PathMatchRegularExpression, "/(a"))),
				authzPolicy("filtered-users", toRoute("HTTPRoute", "filtered")),
			},
			want: on(nil, nil),
			wantOutcomes: map[routeKey][]routeCondition{
				{kindHTTPRoute, "filtered"}: {{reason: gatewayv1.RouteReasonUnsupportedValue,
					message: "rule 0: filters are not applied to inbound requests (a Server parent); attach the route to a Service for them"}},
				{kindHTTPRoute, "hosts"}: {{reason: gatewayv1.RouteReasonUnsupportedValue, message: "hostnames are not supported on a Server parent"}},
				{kindHTTPRoute, "badregex"}: {{reason: gatewayv1.RouteReasonUnsupportedValue,
					message: "rule 0 match 0 path: regular expression \"/(a\": error parsing regexp: missing closing ): `/(a`"}},
			},
			wantWarnings: []string{"HTTPRoute shop/filtered is not accepted", "HTTPRoute shop/hosts is not accepted", "HTTPRoute shop/badregex is not accepted",
				"AuthorizationPolicy shop/filtered-users allows nothing: HTTPRoute filtered is attached to no Server"},
		},
		{
			name: "parents it cannot attach to; a Service parent is not ours",
			objs: []runtime.Object{
				server("tcp", 0, intstr.FromInt32(9000), policyv1alpha1.ProtocolOpaque, map[string]string{"app": "db"}),
				httpRoute("many", 0, []gatewayv1.ParentReference{
					serverParent("gone"),
					serverParent("tcp"),
					func() gatewayv1.ParentReference {
						p := serverParent("web-http")
						p.Namespace = ptr(gatewayv1.Namespace("billing"))
						return p
					}(),
					func() gatewayv1.ParentReference {
						p := serverParent("web-http")
						p.Port = ptr(gatewayv1.PortNumber(8080))
						return p
					}(),
					func() gatewayv1.ParentReference {
						p := serverParent("web-http")
						p.SectionName = ptr(gatewayv1.SectionName("http"))
						return p
					}(),
					serviceParent("web"),
				}, rule()),
				httpRoute("outbound", 0, []gatewayv1.ParentReference{serviceParent("web")}, rule()),
			},
			want: on(nil, nil),
			wantOutcomes: map[routeKey][]routeCondition{{kindHTTPRoute, "many"}: {
				{reason: gatewayv1.RouteReasonNoMatchingParent, message: "Server gone not found in namespace shop"},
				{reason: gatewayv1.RouteReasonUnsupportedValue, message: "Server tcp forwards its port as TCP (proxyProtocol opaque): it has no HTTP request to route"},
				{reason: gatewayv1.RouteReasonUnsupportedValue, message: "Server billing/web-http is in another namespace; a route attaches to the Servers of its own"},
				{reason: gatewayv1.RouteReasonUnsupportedValue, message: "parentRef to Server web-http names a port; a Server has one, leave port out"},
				{reason: gatewayv1.RouteReasonUnsupportedValue, message: "parentRef to Server web-http names a section; a Server has none, leave sectionName out"},
			}},
			wantWarnings: []string{"Server gone (NoMatchingParent)", "Server tcp (UnsupportedValue)", "Server web-http (UnsupportedValue): Server billing",
				"names a port", "names a section"},
		},
		{
			name: "a route attached to two Servers goes with both; namespace-wide policies stay the port's",
			objs: []runtime.Object{
				server("web-admin", 0, intstr.FromInt32(9090), policyv1alpha1.ProtocolHTTP1, map[string]string{"app": "web"}),
				httpRoute("both", 0, []gatewayv1.ParentReference{serverParent("web-http"), serverParent("web-admin")}, rule(pathMatch(gatewayv1.PathMatchExact, "/x"))),
				authzPolicy("everyone", toNamespace(testNS)),
			},
			want: func() *inboundv1.PodPolicy {
				pp := on([]*inboundv1.InboundRoute{wantRoute("HTTPRoute", "both")}, []*inboundv1.InboundRouteRule{routeRule(0, "0", exact("/x"))}, allowAll("everyone"))
				admin := port(9090, "web-admin", http1, allowAll("everyone"))
				admin.Routes, admin.RouteRules = pp.Ports[0].Routes, pp.Ports[0].RouteRules
				pp.Ports = append(pp.Ports, admin)
				return pp
			}(),
			wantOutcomes: map[routeKey][]routeCondition{{kindHTTPRoute, "both"}: {accepted, {ok: true, reason: gatewayv1.RouteReasonAccepted,
				message: "selects requests of Server web-admin for authorization; the pod's port serves them, whatever backendRefs say"}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := append([]runtime.Object{ns, srv}, tc.objs...)
			got, warnings := resolve(t, testDefaults(""), pod("web-0"), objs)
			if diff := cmp.Diff(tc.want, got, protocmp.Transform(), ignoreRevision); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
			checkWarnings(t, warnings, tc.wantWarnings)

			b := nsBuilder{in: inputs(t, objs), td: testTD}
			_, outcomes := b.routes(b.servers(), nil)
			gotOutcomes := map[routeKey][]routeCondition{}
			for k, os := range outcomes {
				for _, o := range os {
					gotOutcomes[k] = append(gotOutcomes[k], o.accepted)
				}
			}
			if diff := cmp.Diff(tc.wantOutcomes, gotOutcomes, cmp.AllowUnexported(routeCondition{}, routeKey{})); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRoutesChangeRevision: a policy whose routes change gets a new
// revision, so proxies are sent it.
func TestRoutesChangeRevision(t *testing.T) {
	srv := server("web-http", 0, intstr.FromInt32(8080), policyv1alpha1.ProtocolHTTP1, nil)
	base := []runtime.Object{srv, httpRoute("r", 0, []gatewayv1.ParentReference{serverParent("web-http")}, rule(pathMatch(gatewayv1.PathMatchExact, "/a")))}
	a, _ := resolve(t, testDefaults(""), pod("web-0"), base)
	b, _ := resolve(t, testDefaults(""), pod("web-0"), []runtime.Object{srv, httpRoute("r", 0, []gatewayv1.ParentReference{serverParent("web-http")}, rule(pathMatch(gatewayv1.PathMatchExact, "/b")))})
	c, _ := resolve(t, testDefaults(""), pod("web-0"), base)
	if a.GetRevision() == b.GetRevision() {
		t.Errorf("revision %s for both /a and /b", a.GetRevision())
	}
	if a.GetRevision() != c.GetRevision() {
		t.Errorf("revisions %s and %s for one policy", a.GetRevision(), c.GetRevision())
	}
}

func TestServerParentStatuses(t *testing.T) {
	t0, t1 := metav1.NewTime(epoch), metav1.NewTime(epoch.Add(time.Hour))
	web := serverParent("web-http")
	cond := func(typ string, ok bool, reason, msg string, at metav1.Time) metav1.Condition {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		return metav1.Condition{Type: typ, Status: s, ObservedGeneration: 3, Reason: reason, Message: msg, LastTransitionTime: at}
	}
	resolved := func(at metav1.Time) metav1.Condition {
		return cond("ResolvedRefs", true, "ResolvedRefs", "a Server parent resolves no reference: its requests go to the pod's port", at)
	}
	ours := func(ref gatewayv1.ParentReference, accepted metav1.Condition, at metav1.Time) gatewayv1.RouteParentStatus {
		return gatewayv1.RouteParentStatus{ParentRef: ref, ControllerName: route.ControllerName, Conditions: []metav1.Condition{accepted, resolved(at)}}
	}
	// Entries the writer must keep as they are: another controller's, and
	// controller/route's for a Service parent.
	gateway := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "gw"}, ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: t0}}}
	service := ours(serviceParent("web"), cond("Accepted", true, "Accepted", "attached to Service shop/web", t0), t0)
	ok := parentOutcome{ref: web, accepted: routeCondition{ok: true, reason: "Accepted", message: "selects"}}
	gone := parentOutcome{ref: web, accepted: routeCondition{reason: "NoMatchingParent", message: "Server web-http not found"}}
	accepted := ours(web, cond("Accepted", true, "Accepted", "selects", t0), t0)
	tests := []struct {
		name        string
		current     []gatewayv1.RouteParentStatus
		want        []parentOutcome
		wantOut     []gatewayv1.RouteParentStatus
		wantChanged bool
	}{
		{name: "first, after the others' entries", current: []gatewayv1.RouteParentStatus{gateway, service}, want: []parentOutcome{ok}, wantChanged: true,
			wantOut: []gatewayv1.RouteParentStatus{gateway, service, ours(web, cond("Accepted", true, "Accepted", "selects", t1), t1)}},
		{name: "unchanged: not written", current: []gatewayv1.RouteParentStatus{accepted, gateway, service}, want: []parentOutcome{ok},
			wantOut: []gatewayv1.RouteParentStatus{gateway, service, accepted}},
		{name: "a transition: a new time for Accepted only", current: []gatewayv1.RouteParentStatus{gateway, accepted}, want: []parentOutcome{gone}, wantChanged: true,
			wantOut: []gatewayv1.RouteParentStatus{gateway, ours(web, cond("Accepted", false, "NoMatchingParent", "Server web-http not found", t1), t0)}},
		{name: "no Server parent any more: ours go, the others stay", current: []gatewayv1.RouteParentStatus{service, accepted}, wantChanged: true,
			wantOut: []gatewayv1.RouteParentStatus{service}},
		{name: "never ours: nothing to write", current: []gatewayv1.RouteParentStatus{gateway, service},
			wantOut: []gatewayv1.RouteParentStatus{gateway, service}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, changed := serverParentStatuses(tc.current, tc.want, 3, t1)
			if changed != tc.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tc.wantChanged)
			}
			if diff := cmp.Diff(tc.wantOut, out); diff != "" {
				t.Errorf("parents (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRouteStatus: the controller writes the Server parents' entries of a
// route beside the entries of others, follows its Server, writes nothing
// that is already right, and sends the proxy the route within a second.
func TestRouteStatus(t *testing.T) {
	srv := server("web-http", 0, intstr.FromInt32(8080), policyv1alpha1.ProtocolHTTP1, nil)
	r := httpRoute("api", 0, []gatewayv1.ParentReference{serverParent("web-http"), serviceParent("web")}, rule(pathMatch(gatewayv1.PathMatchPathPrefix, "/api")))
	// controller/route's entry for the Service parent: ours by name, not
	// this writer's to touch.
	service := gatewayv1.RouteParentStatus{ParentRef: serviceParent("web"), ControllerName: route.ControllerName,
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.NewTime(epoch)}}}
	r.Status.Parents = []gatewayv1.RouteParentStatus{service}
	h := newHarness(t, harnessOptions{objects: []runtime.Object{namespace(testNS, nil), pod("web-0"), srv, r}})
	w := h.watch(t, testNS, "web-0")
	if rules := w.recv().GetPorts()[0].GetRouteRules(); len(rules) != 1 || rules[0].GetMatch().GetPrefix() != "/api" {
		t.Errorf("route rules %v, want /api's", rules)
	}
	st := h.waitRouteAccepted(t, "api", metav1.ConditionTrue, string(gatewayv1.RouteReasonAccepted))
	if !slices.ContainsFunc(st, func(p gatewayv1.RouteParentStatus) bool { return cmp.Equal(p, service) }) {
		t.Errorf("parents %+v lost controller/route's entry", st)
	}

	// Nothing changes: nothing is written again.
	writes := h.routeStatusWrites()
	h.apply(t, srv)
	h.apply(t, namespace(testNS, map[string]string{"unrelated": "x"}))
	time.Sleep(200 * time.Millisecond)
	if n := h.routeStatusWrites(); n != writes {
		t.Errorf("%d route status writes after changes that change no status, want none", n-writes)
	}

	since := time.Now()
	h.delete(t, srv)
	if ports := w.recvWithin(since, time.Second).GetPorts(); len(ports) != 0 {
		t.Errorf("ports %v after the Server went, want none", ports)
	}
	h.waitRouteAccepted(t, "api", metav1.ConditionFalse, string(gatewayv1.RouteReasonNoMatchingParent))

	// The route leaves the Server: its entry goes, controller/route's stays.
	// (The fake clientset does not refuse a write over an older version,
	// as the API server does: the update waits for the writer to settle.)
	h.apply(t, srv)
	h.waitRouteAccepted(t, "api", metav1.ConditionTrue, string(gatewayv1.RouteReasonAccepted))
	cur, err := h.gateway.GatewayV1().HTTPRoutes(testNS).Get(context.Background(), "api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.ParentRefs = []gatewayv1.ParentReference{serviceParent("web")}
	h.apply(t, cur)
	eventually(t, "the Server parent's entry to go", func() bool {
		got, err := h.gateway.GatewayV1().HTTPRoutes(testNS).Get(context.Background(), "api", metav1.GetOptions{})
		return err == nil && len(got.Status.Parents) == 1 && cmp.Equal(got.Status.Parents[0], service)
	})
}

// TestRouteTargetedPolicyReachesProxy: an AuthorizationPolicy created for
// a route reaches the route's entry in the pod's policy.
func TestRouteTargetedPolicyReachesProxy(t *testing.T) {
	srv := server("web-http", 0, intstr.FromInt32(8080), policyv1alpha1.ProtocolHTTP1, nil)
	r := grpcRoute("cart", 0, []gatewayv1.ParentReference{serverParent("web-http")}, grpcRule("shop.Cart", "Add"))
	h := newHarness(t, harnessOptions{objects: []runtime.Object{namespace(testNS, nil), pod("web-0"), srv, r}})
	w := h.watch(t, testNS, "web-0")
	if routes := w.recv().GetPorts()[0].GetRoutes(); len(routes) != 1 || len(routes[0].GetAuthorizations()) != 0 {
		t.Fatalf("routes %v, want cart without authorizations", routes)
	}
	since := time.Now()
	h.apply(t, authzPolicy("adders", toRoute("GRPCRoute", "cart")))
	routes := w.recvWithin(since, time.Second).GetPorts()[0].GetRoutes()
	if diff := cmp.Diff([]*inboundv1.InboundRoute{wantRoute("GRPCRoute", "cart", allowAll("adders"))}, routes, protocmp.Transform()); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}

// waitRouteAccepted waits until HTTPRoute name of testNS has our entry
// for Server web-http with an Accepted condition of status and reason,
// and returns its parents.
func (h *harness) waitRouteAccepted(t *testing.T, name string, status metav1.ConditionStatus, reason string) []gatewayv1.RouteParentStatus {
	t.Helper()
	var last []gatewayv1.RouteParentStatus
	deadline := time.Now().Add(waitTimeout)
	for {
		r, err := h.gateway.GatewayV1().HTTPRoutes(testNS).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Status.Parents
		for _, p := range last {
			if string(p.ControllerName) != route.ControllerName || !isServerParent(p.ParentRef) {
				continue
			}
			for _, c := range p.Conditions {
				if c.Type == string(gatewayv1.RouteConditionAccepted) && c.Status == status && c.Reason == reason {
					if c.Message == "" || c.LastTransitionTime.IsZero() || c.ObservedGeneration != r.Generation {
						t.Errorf("%s: condition %+v lacks a message, a time or the generation", name, c)
					}
					return last
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: parents %+v, want ours Accepted=%s %s", name, last, status, reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// routeStatusWrites counts the route status updates the controller made.
func (h *harness) routeStatusWrites() int {
	n := 0
	for _, a := range h.gateway.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "status" {
			n++
		}
	}
	return n
}

// TestFingerprint: equal outcomes built apart have one fingerprint, so a
// status already written is not written again before the cache has it.
func TestFingerprint(t *testing.T) {
	out := func(name, msg string) []parentOutcome {
		return []parentOutcome{{ref: serverParent(name), accepted: routeCondition{ok: true, reason: "Accepted", message: msg}}}
	}
	if a, b := fingerprint(out("web", "m")), fingerprint(out("web", "m")); a != b {
		t.Errorf("fingerprints %q and %q of equal outcomes", a, b)
	}
	for _, other := range [][]parentOutcome{out("api", "m"), out("web", "n"), nil} {
		if fingerprint(other) == fingerprint(out("web", "m")) {
			t.Errorf("%v has the fingerprint of another outcome", other)
		}
	}
}
