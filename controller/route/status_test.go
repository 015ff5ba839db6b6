package route

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
)

// TestStatusReasons checks every reason of docs/traffic.md 2.3 on the
// first Service parentRef of a route.
func TestStatusReasons(t *testing.T) {
	okRefs := Condition{OK: true, Reason: gatewayv1.RouteReasonResolvedRefs}
	accepted := Condition{OK: true, Reason: gatewayv1.RouteReasonAccepted}
	filter := func(f gatewayv1.HTTPRouteFilter) gatewayv1.HTTPRouteRule {
		return gatewayv1.HTTPRouteRule{Filters: []gatewayv1.HTTPRouteFilter{f}}
	}
	grpcOnWeb := grpcRoute("shop", "g", []gatewayv1.ParentReference{svcParent("", "web", 80)})
	for _, tc := range []struct {
		name         string
		parent       gatewayv1.ParentReference
		rule         gatewayv1.HTTPRouteRule
		grpc         *gatewayv1.GRPCRoute
		wantAccepted Condition
		wantRefs     Condition
	}{
		{name: "accepted", parent: svcParent("", "web", 80),
			rule:         gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 1)}},
			wantAccepted: accepted, wantRefs: okRefs},
		{name: "missing Service", parent: svcParent("", "nope", 0),
			wantAccepted: Condition{Reason: gatewayv1.RouteReasonNoMatchingParent}, wantRefs: okRefs},
		{name: "port the Service lacks", parent: svcParent("", "web", 81),
			wantAccepted: Condition{Reason: gatewayv1.RouteReasonNoMatchingParent}, wantRefs: okRefs},
		{name: "headless parent", parent: svcParent("", "headless", 0),
			wantAccepted: Condition{Reason: gatewayv1.RouteReasonUnsupportedValue}, wantRefs: okRefs},
		{name: "GRPCRoute on the same port", parent: svcParent("", "web", 0), grpc: grpcOnWeb,
			wantAccepted: Condition{Reason: gatewayv1.RouteReasonUnsupportedValue}, wantRefs: okRefs},
		{name: "filter type mesh does not implement", parent: svcParent("", "web", 80),
			rule:         filter(gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestMirror}),
			wantAccepted: Condition{Reason: gatewayv1.RouteReasonUnsupportedValue}, wantRefs: okRefs},
		{name: "regular expression RE2 refuses", parent: svcParent("", "web", 80),
			rule:         gatewayv1.HTTPRouteRule{Matches: []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchRegularExpression, "/(a")}},
			wantAccepted: Condition{Reason: gatewayv1.RouteReasonUnsupportedValue}, wantRefs: okRefs},
		{name: "redirect with rewrite", parent: svcParent("", "web", 80),
			rule: gatewayv1.HTTPRouteRule{Filters: []gatewayv1.HTTPRouteFilter{
				{Type: gatewayv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{}},
				{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{}},
			}},
			wantAccepted: Condition{Reason: gatewayv1.RouteReasonIncompatibleFilters}, wantRefs: okRefs},
		{name: "missing backend", parent: svcParent("", "web", 80),
			rule:         gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("gone", 80, 1)}},
			wantAccepted: accepted, wantRefs: Condition{Reason: gatewayv1.RouteReasonBackendNotFound}},
		{name: "backend port the Service lacks", parent: svcParent("", "web", 80),
			rule:         gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 81, 1)}},
			wantAccepted: accepted, wantRefs: Condition{Reason: gatewayv1.RouteReasonBackendNotFound}},
		{name: "backend of another kind", parent: svcParent("", "web", 80),
			rule: func() gatewayv1.HTTPRouteRule {
				b := backendRef("web", 80, 1)
				b.Kind = ptr(gatewayv1.Kind("ServiceImport"))
				b.Group = ptr(gatewayv1.Group("multicluster.x-k8s.io"))
				return gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{b}}
			}(),
			wantAccepted: accepted, wantRefs: Condition{Reason: gatewayv1.RouteReasonInvalidKind}},
		{name: "HTTPFault", parent: svcParent("", "web", 80),
			rule: filter(faultRef("f")), wantAccepted: accepted, wantRefs: okRefs},
		{name: "extensionRef of a kind mesh does not serve", parent: svcParent("", "web", 80),
			rule: filter(gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterExtensionRef,
				ExtensionRef: &gatewayv1.LocalObjectReference{Group: "example.com", Kind: "Filter", Name: "f"}}),
			wantAccepted: accepted, wantRefs: Condition{Reason: gatewayv1.RouteReasonInvalidKind}},
		{name: "missing HTTPFault", parent: svcParent("", "web", 80),
			rule: filter(faultRef("gone")), wantAccepted: accepted, wantRefs: Condition{Reason: gatewayv1.RouteReasonBackendNotFound}},
		{name: "HTTPFault mesh cannot apply", parent: svcParent("", "web", 80),
			rule: filter(faultRef("empty")), wantAccepted: Condition{Reason: gatewayv1.RouteReasonUnsupportedValue}, wantRefs: okRefs},
		{name: "two HTTPFaults in a rule", parent: svcParent("", "web", 80),
			rule:         gatewayv1.HTTPRouteRule{Filters: []gatewayv1.HTTPRouteFilter{faultRef("f"), faultRef("f")}},
			wantAccepted: Condition{Reason: gatewayv1.RouteReasonIncompatibleFilters}, wantRefs: okRefs},
		{name: "HTTPFault on a backendRef", parent: svcParent("", "web", 80),
			rule: func() gatewayv1.HTTPRouteRule {
				b := backendRef("web", 80, 1)
				b.Filters = []gatewayv1.HTTPRouteFilter{faultRef("f")}
				return gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{b}}
			}(),
			wantAccepted: Condition{Reason: gatewayv1.RouteReasonUnsupportedValue}, wantRefs: okRefs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Inputs{
				Services:   services(service("shop", "web", "10.0.0.1", 80), service("shop", "headless", "None", 80)),
				HTTPRoutes: []*gatewayv1.HTTPRoute{httpRoute("shop", "r", 0, []gatewayv1.ParentReference{tc.parent}, tc.rule)},
				Faults:     []*policyv1alpha1.HTTPFault{abortFault("shop", "f", 50, 503), {ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "empty"}}},
			}
			if tc.grpc != nil {
				in.GRPCRoutes = append(in.GRPCRoutes, tc.grpc)
			}
			snap := Build(in)
			st, ok := snap.Status[RouteRef{Kind: KindHTTPRoute, Namespace: "shop", Name: "r"}]
			if !ok || len(st.Parents) != 1 {
				t.Fatalf("status = %+v, want one parent", st)
			}
			if st.Generation != 3 {
				t.Errorf("generation = %d, want 3", st.Generation)
			}
			ignoreMessage := cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Message" }, cmp.Ignore())
			if diff := cmp.Diff(tc.wantAccepted, st.Parents[0].Accepted, ignoreMessage); diff != "" {
				t.Errorf("Accepted (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantRefs, st.Parents[0].ResolvedRefs, ignoreMessage); diff != "" {
				t.Errorf("ResolvedRefs (-want +got):\n%s", diff)
			}
			if st.Parents[0].Accepted.Message == "" {
				t.Error("Accepted has no message")
			}
			served := snap.Lookup(ServicePort{web, 80}, "shop") != nil && tc.grpc == nil
			if served != tc.wantAccepted.OK {
				t.Errorf("served = %v, want %v (only accepted routes are served)", served, tc.wantAccepted.OK)
			}
		})
	}
}

// TestStatusSkipsOtherParents checks that a parentRef naming a Gateway
// gets no entry of mesh's.
func TestStatusSkipsOtherParents(t *testing.T) {
	gw := gatewayv1.ParentReference{Name: "gw"}
	in := Inputs{
		Services:   services(service("shop", "web", "10.0.0.1", 80)),
		HTTPRoutes: []*gatewayv1.HTTPRoute{httpRoute("shop", "r", 0, []gatewayv1.ParentReference{gw})},
	}
	if st, ok := Build(in).Status[RouteRef{Kind: KindHTTPRoute, Namespace: "shop", Name: "r"}]; ok {
		t.Errorf("status of a Gateway-only route = %+v, want none", st)
	}
}

// TestUnresolvedBackendFails checks that a missing backend keeps its
// weight and answers 500, as the spec asks.
func TestUnresolvedBackendFails(t *testing.T) {
	in := Inputs{
		Services: services(service("shop", "web", "10.0.0.1", 80)),
		HTTPRoutes: []*gatewayv1.HTTPRoute{httpRoute("shop", "r", 0, []gatewayv1.ParentReference{svcParent("", "web", 80)},
			gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 3), backendRef("gone", 80, 1)}})},
	}
	got := Build(in).Lookup(ServicePort{web, 80}, "x").HTTP[0].Backends
	if len(got) != 2 || got[1].Weight != 1 || len(got[1].Filters) != 1 || got[1].Filters[0].Kind != FilterFail || got[1].Filters[0].Fail.Status != 500 {
		t.Errorf("backends = %+v, want the missing one with weight 1 and a Fail 500 filter", got)
	}
}

// TestParentStatusesTimeInsensitive checks that status is rewritten only
// when something but a time changed, and that a condition keeps its
// lastTransitionTime while its status holds.
func TestParentStatusesTimeInsensitive(t *testing.T) {
	t0, t1 := metav1.NewTime(epoch), metav1.NewTime(epoch.Add(time.Hour))
	want := RouteStatus{Generation: 2, Parents: []ParentStatus{{
		Ref:          svcParent("", "web", 80),
		Accepted:     Condition{OK: true, Reason: gatewayv1.RouteReasonAccepted, Message: "ok"},
		ResolvedRefs: Condition{OK: true, Reason: gatewayv1.RouteReasonResolvedRefs, Message: "ok"},
	}}}
	first, changed := parentStatuses(nil, want, t0)
	if !changed || len(first) != 1 {
		t.Fatalf("first write: changed %v, parents %+v", changed, first)
	}
	if _, changed := parentStatuses(first, want, t1); changed {
		t.Error("the same status an hour later counts as a change")
	}
	want.Parents[0].ResolvedRefs = Condition{Reason: gatewayv1.RouteReasonBackendNotFound, Message: "gone"}
	next, changed := parentStatuses(first, want, t1)
	if !changed {
		t.Fatal("a new ResolvedRefs reason is no change")
	}
	for _, c := range next[0].Conditions {
		wantTime := t0
		if c.Type == string(gatewayv1.RouteConditionResolvedRefs) {
			wantTime = t1
		}
		if !c.LastTransitionTime.Equal(&wantTime) {
			t.Errorf("%s lastTransitionTime = %v, want %v", c.Type, c.LastTransitionTime, wantTime)
		}
	}
	// Removing mesh's entries (no Service parent any more) is a change.
	if out, changed := parentStatuses(next, RouteStatus{}, t1); !changed || len(out) != 0 {
		t.Errorf("dropping mesh's entry: changed %v, parents %+v", changed, out)
	}
}

// TestParentStatusesKeepServerParents: an entry of ours for a Server
// parent is controller/policy's (an inbound route); the Service writer
// keeps it as it is, or the two writers would undo each other for ever.
func TestParentStatusesKeepServerParents(t *testing.T) {
	now := metav1.NewTime(epoch)
	server := gatewayv1.RouteParentStatus{
		ParentRef:      gatewayv1.ParentReference{Group: ptr(gatewayv1.Group("policy.mesh.dev")), Kind: ptr(gatewayv1.Kind("Server")), Name: "web-http"},
		ControllerName: ControllerName,
		Conditions:     []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: now}},
	}
	out, changed := parentStatuses([]gatewayv1.RouteParentStatus{server}, RouteStatus{}, now)
	if changed || len(out) != 1 || !equality.Semantic.DeepEqual(out[0], server) {
		t.Errorf("a Server parent's entry: changed %v, parents %+v", changed, out)
	}
}
