package route

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/mesh-dev/mesh/internal/names"
)

func annotated[T interface{ SetAnnotations(map[string]string) }](obj T, kv ...string) T {
	ann := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		ann[kv[i]] = kv[i+1]
	}
	obj.SetAnnotations(ann)
	return obj
}

// policyOf is what a test compares of a rule: its timeouts and retry.
type policyOf struct {
	Timeouts Timeouts
	Retry    *Retry
}

func rulePolicy(r Rule) policyOf { return policyOf{r.Timeouts, r.Retry} }

// TestPolicyPrecedence checks that a rule's own timeouts win over its
// route's annotations, which win over its Service's, field by field; that
// the Service's policy is every table's Default, and its failure accrual
// every table's.
func TestPolicyPrecedence(t *testing.T) {
	svc := annotated(service("shop", "web", "10.0.0.1", 80),
		names.AnnotationRetryHTTP, "5xx", names.AnnotationRetryLimit, "3",
		names.AnnotationTimeoutRequest, "10s", names.AnnotationTimeoutResponse, "2s",
		names.AnnotationMaxFailures, "5")
	rule := func(name string, request *gatewayv1.Duration) gatewayv1.HTTPRouteRule {
		r := gatewayv1.HTTPRouteRule{Name: ptr(gatewayv1.SectionName(name)), BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 1)}}
		if request != nil {
			r.Timeouts = &gatewayv1.HTTPRouteTimeouts{Request: request}
		}
		return r
	}
	parent := []gatewayv1.ParentReference{svcParent("", "web", 80)}
	plain := httpRoute("shop", "plain", 0, parent, rule("own-timeout", ptr(gatewayv1.Duration("1s"))), rule("service", nil))
	plain.Spec.Rules[0].Matches = []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchExact, "/own")}
	plain.Spec.Rules[1].Matches = []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchExact, "/service")}
	route := annotated(httpRoute("shop", "annotated", 0, parent, rule("route", nil), rule("none", ptr(gatewayv1.Duration("0s")))),
		names.AnnotationRetryGRPC, "unavailable", names.AnnotationRetryLimit, "1", names.AnnotationTimeoutRequest, "5s")
	route.Spec.Rules[0].Matches = []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchExact, "/route")}
	route.Spec.Rules[1].Matches = []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchExact, "/none")}
	snap := Build(Inputs{Services: services(svc), HTTPRoutes: []*gatewayv1.HTTPRoute{plain, route}})
	tab := snap.Lookup(ServicePort{web, 80}, "front")
	if tab == nil {
		t.Fatal("no table")
	}

	fiveXX := []StatusRange{{500, 599}}
	want := map[string]policyOf{
		"own-timeout": {Timeouts{Request: time.Second, Response: 2 * time.Second}, retry(3, fiveXX, nil, 0)},
		"service":     {Timeouts{Request: 10 * time.Second, Response: 2 * time.Second}, retry(3, fiveXX, nil, 0)},
		"route":       {Timeouts{Request: 5 * time.Second, Response: 2 * time.Second}, retry(1, fiveXX, []uint32{14}, 0)},
		// timeouts.request "0s" is the rule's own: no request timeout.
		"none": {Timeouts{Response: 2 * time.Second}, retry(1, fiveXX, []uint32{14}, 0)},
	}
	got := map[string]policyOf{}
	for _, r := range tab.HTTP {
		got[r.Name] = rulePolicy(r)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rule policies (-want +got):\n%s", diff)
	}
	wantDefault := &Rule{Route: RouteRef{Kind: KindService, Namespace: "shop", Name: "web"},
		Timeouts: Timeouts{Request: 10 * time.Second, Response: 2 * time.Second}, Retry: retry(3, fiveXX, nil, 0)}
	if diff := cmp.Diff(wantDefault, tab.Default); diff != "" {
		t.Errorf("default rule (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&FailureAccrual{MaxFailures: 5}, tab.FailureAccrual); diff != "" {
		t.Errorf("failure accrual (-want +got):\n%s", diff)
	}
}

// TestPolicyWithoutRoutes checks the tables of Services with annotations
// and no route: every port, every client namespace, the Default rule
// alone; and none for a Service with neither.
func TestPolicyWithoutRoutes(t *testing.T) {
	api := annotated(service("shop", "api", "10.0.0.2", 80, 9090), names.AnnotationTimeoutIdle, "1m")
	lb := annotated(service("shop", "lb", "10.0.0.3", 80), names.AnnotationFailureAccrual, "disabled")
	snap := Build(Inputs{Services: services(api, lb, service("shop", "web", "10.0.0.1", 80))})
	apiName := types.NamespacedName{Namespace: "shop", Name: "api"}
	for _, p := range []ServicePort{{apiName, 80}, {apiName, 9090}} {
		for _, ns := range []string{"shop", "other"} {
			tab := snap.Lookup(p, ns)
			if tab == nil || len(tab.HTTP)+len(tab.GRPC) != 0 || tab.Parent != p || tab.FailureAccrual != nil {
				t.Fatalf("Lookup(%v, %s) = %+v, want a table of the Default rule alone", p, ns, tab)
			}
			if tab.Default == nil || tab.Default.Timeouts != (Timeouts{Idle: time.Minute}) || tab.Default.Retry != nil {
				t.Errorf("Lookup(%v, %s) default rule = %+v, want the idle timeout alone", p, ns, tab.Default)
			}
		}
	}
	if tab := snap.Lookup(ServicePort{apiName, 81}, "shop"); tab != nil {
		t.Errorf("a port the Service does not have got %+v", tab)
	}
	tab := snap.Lookup(ServicePort{types.NamespacedName{Namespace: "shop", Name: "lb"}, 80}, "x")
	if tab == nil || tab.Default != nil || tab.FailureAccrual == nil || !tab.FailureAccrual.Disabled {
		t.Errorf("a Service with a balancer annotation alone: %+v, want a table of its failure accrual and no Default", tab)
	}
	if tab := snap.Lookup(ServicePort{web, 80}, "x"); tab != nil {
		t.Errorf("a Service with neither routes nor annotations got %+v", tab)
	}
	if len(snap.Warnings) != 0 {
		t.Errorf("warnings %v, want none", snap.Warnings)
	}
}

// TestBadRouteAnnotation checks that a bad traffic annotation refuses the
// route with UnsupportedValue, naming the annotation, the value and what
// it takes, and that the route is not served.
func TestBadRouteAnnotation(t *testing.T) {
	for _, tc := range []struct {
		name, annotation, value, want string
	}{
		{"bad statuses", names.AnnotationRetryHTTP, "5yy", "want a comma-separated list of statuses"},
		{"bad limit", names.AnnotationRetryLimit, "100", "want a whole number of retries from 0 to 10"},
		{"bad timeout", names.AnnotationTimeoutResponse, "1 second", "want a duration"},
		{"balancer on a route", names.AnnotationMaxBackoff, "1m", "apply to Services only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, grpc := range []bool{false, true} {
				parent := []gatewayv1.ParentReference{svcParent("", "web", 80)}
				in := Inputs{Services: services(service("shop", "web", "10.0.0.1", 80))}
				ref := RouteRef{Namespace: "shop", Name: "r"}
				if grpc {
					in.GRPCRoutes = append(in.GRPCRoutes, annotated(grpcRoute("shop", "r", parent, gatewayv1.GRPCRouteRule{}), tc.annotation, tc.value))
					ref.Kind = KindGRPCRoute
				} else {
					in.HTTPRoutes = append(in.HTTPRoutes, annotated(httpRoute("shop", "r", 0, parent, gatewayv1.HTTPRouteRule{}), tc.annotation, tc.value))
					ref.Kind = KindHTTPRoute
				}
				snap := Build(in)
				st := snap.Status[ref]
				if len(st.Parents) != 1 {
					t.Fatalf("%s status = %+v, want one parent", ref.Kind, st)
				}
				acc := st.Parents[0].Accepted
				if acc.OK || acc.Reason != gatewayv1.RouteReasonUnsupportedValue {
					t.Errorf("%s Accepted = %+v, want False/UnsupportedValue", ref.Kind, acc)
				}
				for _, s := range []string{tc.annotation, quote(tc.value), tc.want} {
					if !strings.Contains(acc.Message, s) {
						t.Errorf("%s message %q does not say %q", ref.Kind, acc.Message, s)
					}
				}
				if tab := snap.Lookup(ServicePort{web, 80}, "shop"); tab != nil {
					t.Errorf("%s: the refused route is served: %+v", ref.Kind, tab)
				}
			}
		})
	}
}

// TestBadServiceAnnotation checks that a bad annotation on a Service is
// ignored, the others applying, and warned about; and that annotations on
// a Service without a cluster IP are warned about as doing nothing.
func TestBadServiceAnnotation(t *testing.T) {
	svc := annotated(service("shop", "web", "10.0.0.1", 80),
		names.AnnotationRetryHTTP, "5xx", names.AnnotationRetryLimit, "eleven", names.AnnotationMaxFailures, "lots", "retry.mesh.dev/budget", "50%")
	headless := annotated(service("shop", "db", "None", 5432), names.AnnotationTimeoutRequest, "1s")
	snap := Build(Inputs{Services: services(svc, headless)})
	tab := snap.Lookup(ServicePort{web, 80}, "x")
	if tab == nil || tab.Default == nil {
		t.Fatalf("table = %+v, want the good annotation's Default rule", tab)
	}
	if diff := cmp.Diff(retry(1, []StatusRange{{500, 599}}, nil, 0), tab.Default.Retry); diff != "" {
		t.Errorf("retry (-want +got):\n%s", diff)
	}
	if tab.FailureAccrual != nil {
		t.Errorf("failure accrual %+v from a bad annotation", tab.FailureAccrual)
	}
	want := map[types.NamespacedName][]string{
		web: {
			`annotation balancer.mesh.dev/max-failures "lots": want a whole number of consecutive failures from 1 to 1000; ignored`,
			`annotation retry.mesh.dev/budget "50%": unknown annotation: want one of retry.mesh.dev/http, retry.mesh.dev/grpc, retry.mesh.dev/limit, retry.mesh.dev/timeout, timeout.mesh.dev/request, timeout.mesh.dev/response, timeout.mesh.dev/idle; ignored`,
			`annotation retry.mesh.dev/limit "eleven": want a whole number of retries from 0 to 10; ignored`,
		},
		{Namespace: "shop", Name: "db"}: {
			"the traffic annotations of a Service without a cluster IP (headless or ExternalName) have no effect: clients reach its pods by their own addresses",
		},
	}
	if diff := cmp.Diff(want, snap.Warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	if tab := snap.Lookup(ServicePort{types.NamespacedName{Namespace: "shop", Name: "db"}, 5432}, "x"); tab != nil {
		t.Errorf("a headless Service got a table: %+v", tab)
	}
}

// TestServiceAnnotationsOnGRPCRoutes checks that a GRPCRoute's rules take
// the Service's policy and the route's like an HTTPRoute's.
func TestServiceAnnotationsOnGRPCRoutes(t *testing.T) {
	svc := annotated(service("shop", "web", "10.0.0.1", 80), names.AnnotationRetryGRPC, "cancelled", names.AnnotationTimeoutIdle, "30s")
	r := annotated(grpcRoute("shop", "g", []gatewayv1.ParentReference{svcParent("", "web", 0)}, gatewayv1.GRPCRouteRule{}),
		names.AnnotationRetryTimeout, "100ms")
	tab := Build(Inputs{Services: []*corev1.Service{svc}, GRPCRoutes: []*gatewayv1.GRPCRoute{r}}).Lookup(ServicePort{web, 80}, "x")
	if tab == nil || len(tab.GRPC) != 1 {
		t.Fatalf("table = %+v, want the GRPCRoute's rule", tab)
	}
	want := policyOf{Timeouts{Idle: 30 * time.Second}, retry(1, nil, []uint32{1}, 100*time.Millisecond)}
	if diff := cmp.Diff(want, rulePolicy(tab.GRPC[0])); diff != "" {
		t.Errorf("policy (-want +got):\n%s", diff)
	}
}
