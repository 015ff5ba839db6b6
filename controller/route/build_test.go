package route

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// epoch is the creation time of the routes of these tests; age shifts it.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func service(ns, name, clusterIP string, ports ...int32) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{ClusterIP: clusterIP}}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Port: p})
	}
	return s
}

func services(svcs ...*corev1.Service) []*corev1.Service { return svcs }

func ptr[T any](v T) *T { return &v }

// svcParent is a GAMMA parentRef; port 0 means none, ns "" the route's.
func svcParent(ns, name string, port int32) gatewayv1.ParentReference {
	p := gatewayv1.ParentReference{Group: ptr(gatewayv1.Group("")), Kind: ptr(gatewayv1.Kind("Service")), Name: gatewayv1.ObjectName(name)}
	if ns != "" {
		p.Namespace = ptr(gatewayv1.Namespace(ns))
	}
	if port != 0 {
		p.Port = ptr(port)
	}
	return p
}

func backendRef(name string, port, weight int32) gatewayv1.HTTPBackendRef {
	return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
		BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr(port)},
		Weight:                 ptr(weight),
	}}
}

func httpRoute(ns, name string, age time.Duration, parents []gatewayv1.ParentReference, rules ...gatewayv1.HTTPRouteRule) *gatewayv1.HTTPRoute {
	return &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 3, CreationTimestamp: metav1.NewTime(epoch.Add(-age))},
		Spec:       gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parents}, Rules: rules},
	}
}

func grpcRoute(ns, name string, parents []gatewayv1.ParentReference, rules ...gatewayv1.GRPCRouteRule) *gatewayv1.GRPCRoute {
	return &gatewayv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1, CreationTimestamp: metav1.NewTime(epoch)},
		Spec:       gatewayv1.GRPCRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parents}, Rules: rules},
	}
}

func pathMatch(t gatewayv1.PathMatchType, v string) gatewayv1.HTTPRouteMatch {
	return gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: ptr(t), Value: ptr(v)}}
}

// tableNames lists a table's rules as "route/rule".
func tableNames(t *Table) []string {
	if t == nil {
		return nil
	}
	var out []string
	for _, r := range append(append([]Rule{}, t.HTTP...), t.GRPC...) {
		out = append(out, r.Route.Name+"/"+r.Name)
	}
	return out
}

var web = types.NamespacedName{Namespace: "shop", Name: "web"}

func TestAttachmentAndConsumerPrecedence(t *testing.T) {
	in := Inputs{
		Services: services(service("shop", "web", "10.0.0.1", 80, 8080), service("shop", "web-v2", "10.0.0.2", 80)),
		HTTPRoutes: []*gatewayv1.HTTPRoute{
			httpRoute("shop", "producer", 0, []gatewayv1.ParentReference{svcParent("", "web", 0)},
				gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 90), backendRef("web-v2", 80, 10)}}),
			httpRoute("shop", "only-8080", 0, []gatewayv1.ParentReference{svcParent("", "web", 8080)},
				gatewayv1.HTTPRouteRule{Matches: []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchExact, "/x")}}),
			httpRoute("front", "consumer", 0, []gatewayv1.ParentReference{svcParent("shop", "web", 80)},
				gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web-v2", 80, 1)}}),
		},
	}
	snap := Build(in)
	for _, tc := range []struct {
		name     string
		port     int32
		clientNS string
		want     []string
	}{
		{"producer route for another namespace", 80, "other", []string{"producer/0"}},
		{"producer route in its own namespace", 80, "shop", []string{"producer/0"}},
		{"consumer route wins in its namespace", 80, "front", []string{"consumer/0"}},
		{"a consumer route of one port leaves the others to the producer", 8080, "front", []string{"only-8080/0", "producer/0"}},
		{"portless and port routes merge by precedence", 8080, "other", []string{"only-8080/0", "producer/0"}},
		{"a port the Service does not have", 9090, "other", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tableNames(snap.Lookup(ServicePort{web, tc.port}, tc.clientNS))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("rules (-want +got):\n%s", diff)
			}
		})
	}
	split := snap.Lookup(ServicePort{web, 80}, "other").HTTP[0].Backends
	want := []Backend{
		{Service: ServicePort{web, 80}, Weight: 90},
		{Service: ServicePort{types.NamespacedName{Namespace: "shop", Name: "web-v2"}, 80}, Weight: 10},
	}
	if diff := cmp.Diff(want, split); diff != "" {
		t.Errorf("backends (-want +got):\n%s", diff)
	}
}

// TestHTTPPrecedence checks the order the HTTPRoute Matches doc gives:
// "Exact path match", "Prefix path match with largest number of
// characters", "Method match", "Largest number of header matches",
// "Largest number of query param matches"; then "The oldest Route based on
// creation timestamp", "The Route appearing first in alphabetical order by
// {namespace}/{name}", and the first matching rule in list order.
func TestHTTPPrecedence(t *testing.T) {
	header := func(n int) gatewayv1.HTTPRouteMatch {
		m := pathMatch(gatewayv1.PathMatchPathPrefix, "/")
		for i := range n {
			m.Headers = append(m.Headers, gatewayv1.HTTPHeaderMatch{Name: gatewayv1.HTTPHeaderName(fmt.Sprintf("X-H%d", i)), Value: "1"})
		}
		return m
	}
	query := pathMatch(gatewayv1.PathMatchPathPrefix, "/")
	query.QueryParams = []gatewayv1.HTTPQueryParamMatch{{Name: "q", Value: "1"}}
	method := pathMatch(gatewayv1.PathMatchPathPrefix, "/")
	method.Method = ptr(gatewayv1.HTTPMethod("POST"))
	named := func(name string, m ...gatewayv1.HTTPRouteMatch) gatewayv1.HTTPRouteRule {
		return gatewayv1.HTTPRouteRule{Name: ptr(gatewayv1.SectionName(name)), Matches: m}
	}
	parent := []gatewayv1.ParentReference{svcParent("", "web", 0)}
	in := Inputs{
		Services: services(service("shop", "web", "10.0.0.1", 80)),
		HTTPRoutes: []*gatewayv1.HTTPRoute{
			httpRoute("shop", "b-new", 0, parent,
				named("regex", pathMatch(gatewayv1.PathMatchRegularExpression, "/a.*")),
				named("query", query),
				named("header1", header(1)),
				named("default"),
			),
			httpRoute("shop", "a-new", 0, parent,
				named("tie-by-name", pathMatch(gatewayv1.PathMatchPathPrefix, "/tie")),
				named("method", method),
				named("header2", header(2)),
			),
			httpRoute("shop", "old", time.Hour, parent,
				named("tie-by-age", pathMatch(gatewayv1.PathMatchPathPrefix, "/tie")),
				named("prefix-short", pathMatch(gatewayv1.PathMatchPathPrefix, "/a")),
				named("prefix-long", pathMatch(gatewayv1.PathMatchPathPrefix, "/a/b/c")),
				named("exact", pathMatch(gatewayv1.PathMatchExact, "/a")),
				named("first-of-two", pathMatch(gatewayv1.PathMatchPathPrefix, "/sm")),
				named("second-of-two", pathMatch(gatewayv1.PathMatchPathPrefix, "/sm")),
			),
		},
	}
	want := []string{
		"old/exact",
		"old/prefix-long",
		"old/tie-by-age", "a-new/tie-by-name",
		"old/first-of-two", "old/second-of-two",
		"old/prefix-short",
		"a-new/method",
		"a-new/header2",
		"b-new/header1",
		"b-new/query",
		"b-new/default",
		"b-new/regex",
	}
	got := tableNames(Build(in).Lookup(ServicePort{web, 80}, "shop"))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

// TestGRPCPrecedence checks the GRPCRoute Matches doc: "Largest number of
// characters in a matching non-wildcard service", "Largest number of
// characters in a matching method", "Largest number of header matches".
func TestGRPCPrecedence(t *testing.T) {
	m := func(svc, method string, headers int) gatewayv1.GRPCRouteMatch {
		out := gatewayv1.GRPCRouteMatch{Method: &gatewayv1.GRPCMethodMatch{}}
		if svc != "" {
			out.Method.Service = ptr(svc)
		}
		if method != "" {
			out.Method.Method = ptr(method)
		}
		for i := range headers {
			out.Headers = append(out.Headers, gatewayv1.GRPCHeaderMatch{Name: gatewayv1.GRPCHeaderName(fmt.Sprintf("x-%d", i)), Value: "1"})
		}
		return out
	}
	rule := func(name string, match gatewayv1.GRPCRouteMatch) gatewayv1.GRPCRouteRule {
		return gatewayv1.GRPCRouteRule{Name: ptr(gatewayv1.SectionName(name)), Matches: []gatewayv1.GRPCRouteMatch{match}}
	}
	in := Inputs{
		Services: services(service("shop", "web", "10.0.0.1", 80)),
		GRPCRoutes: []*gatewayv1.GRPCRoute{grpcRoute("shop", "g", []gatewayv1.ParentReference{svcParent("", "web", 80)},
			rule("headers", m("", "", 2)),
			rule("method-only", m("", "Get", 0)),
			rule("short-service", m("a.B", "", 0)),
			rule("long-service", m("pkg.Service", "", 0)),
			rule("long-service-method", m("pkg.Service", "Get", 0)),
			gatewayv1.GRPCRouteRule{Name: ptr(gatewayv1.SectionName("all"))},
		)},
	}
	want := []string{"g/long-service-method", "g/long-service", "g/short-service", "g/method-only", "g/headers", "g/all"}
	got := tableNames(Build(in).Lookup(ServicePort{web, 80}, "other"))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

func TestFiltersAndTimeouts(t *testing.T) {
	rule := gatewayv1.HTTPRouteRule{
		Filters: []gatewayv1.HTTPRouteFilter{
			{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{
				Set: []gatewayv1.HTTPHeader{{Name: "X-Set", Value: "1"}}, Add: []gatewayv1.HTTPHeader{{Name: "X-Add", Value: "2"}}, Remove: []string{"X-Gone"}}},
			{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{
				Path: &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr("/v2")}}},
		},
		BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 1), backendRef("web", 80, 0)},
		Timeouts:    &gatewayv1.HTTPRouteTimeouts{Request: ptr(gatewayv1.Duration("300ms")), BackendRequest: ptr(gatewayv1.Duration("1s"))},
	}
	in := Inputs{
		Services:   services(service("shop", "web", "10.0.0.1", 80)),
		HTTPRoutes: []*gatewayv1.HTTPRoute{httpRoute("shop", "r", 0, []gatewayv1.ParentReference{svcParent("", "web", 80)}, rule)},
	}
	got := Build(in).Lookup(ServicePort{web, 80}, "x").HTTP[0]
	want := Rule{
		Route: RouteRef{Kind: KindHTTPRoute, Namespace: "shop", Name: "r"},
		Name:  "0",
		Match: Match{PathType: PathPrefix, Path: "/"},
		Filters: []Filter{
			{Kind: FilterRequestHeaders, Headers: HeaderModifier{Set: []Header{{"x-set", "1"}}, Add: []Header{{"x-add", "2"}}, Remove: []string{"x-gone"}}},
			{Kind: FilterRewrite, Rewrite: Rewrite{Path: PathModifier{Type: PathReplacePrefix, Value: "/v2"}}},
		},
		Backends: []Backend{{Service: ServicePort{web, 80}, Weight: 1}},
		Timeouts: Timeouts{Request: 300 * time.Millisecond, BackendRequest: time.Second},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rule (-want +got):\n%s", diff)
	}
}

// TestParentRefsOfOnePort checks that a route naming one Service port
// twice (with and without the port) puts its rules in the table once, and
// gets one status entry per parentRef.
func TestParentRefsOfOnePort(t *testing.T) {
	in := Inputs{
		Services: services(service("shop", "web", "10.0.0.1", 80)),
		HTTPRoutes: []*gatewayv1.HTTPRoute{httpRoute("shop", "r", 0,
			[]gatewayv1.ParentReference{svcParent("", "web", 0), svcParent("shop", "web", 80)},
			gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 1)}})},
	}
	snap := Build(in)
	if got := tableNames(snap.Lookup(ServicePort{web, 80}, "x")); len(got) != 1 {
		t.Errorf("rules = %v, want the route's one rule once", got)
	}
	st := snap.Status[RouteRef{Kind: KindHTTPRoute, Namespace: "shop", Name: "r"}]
	if len(st.Parents) != 2 || !st.Parents[0].Accepted.OK || !st.Parents[1].Accepted.OK {
		t.Errorf("status = %+v, want two accepted parents", st)
	}
}
