package route

import (
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
)

// faultRef is an ExtensionRef filter naming HTTPFault name.
func faultRef(name string) gatewayv1.HTTPRouteFilter {
	return gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterExtensionRef, ExtensionRef: &gatewayv1.LocalObjectReference{
		Group: policyv1alpha1.GroupName, Kind: policyv1alpha1.KindHTTPFault, Name: gatewayv1.ObjectName(name)}}
}

func abortFault(ns, name string, percent, status int32) *policyv1alpha1.HTTPFault {
	return &policyv1alpha1.HTTPFault{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: policyv1alpha1.HTTPFaultSpec{Abort: &policyv1alpha1.HTTPFaultAbort{Percent: percent, HTTPStatus: status}}}
}

func delayFault(ns, name string, percent int32, d string) *policyv1alpha1.HTTPFault {
	return &policyv1alpha1.HTTPFault{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: policyv1alpha1.HTTPFaultSpec{Delay: &policyv1alpha1.HTTPFaultDelay{Percent: percent, Duration: gatewayv1.Duration(d)}}}
}

// TestFaultFilters checks that an HTTPFault named by an HTTPRoute or a
// GRPCRoute rule reaches its table as a Fault filter, in per million, in
// the filters' order; and that one the route's namespace lacks becomes a
// Fail filter answering 500, even when another namespace has one of that
// name (an ExtensionRef is a local reference).
func TestFaultFilters(t *testing.T) {
	both := abortFault("shop", "both", 50, 503)
	both.Spec.Delay = delayFault("", "", 100, "200ms").Spec.Delay
	faults := []*policyv1alpha1.HTTPFault{both, abortFault("other", "elsewhere", 100, 500)}
	bothFilter := Filter{Kind: FilterFault, Fault: Fault{
		Abort: &FaultAbort{PerMillion: 500_000, Status: 503},
		Delay: &FaultDelay{PerMillion: 1_000_000, Duration: 200 * time.Millisecond},
	}}
	headers := gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier,
		RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "x-a", Value: "1"}}}}
	headersFilter := Filter{Kind: FilterRequestHeaders, Headers: HeaderModifier{Set: []Header{{"x-a", "1"}}}}
	parents := []gatewayv1.ParentReference{svcParent("", "web", 80)}

	tests := []struct {
		name string
		in   Inputs
		want []Filter
	}{{
		name: "HTTPRoute",
		in: Inputs{HTTPRoutes: []*gatewayv1.HTTPRoute{httpRoute("shop", "r", 0, parents, gatewayv1.HTTPRouteRule{
			Filters: []gatewayv1.HTTPRouteFilter{headers, faultRef("both")}})}},
		want: []Filter{headersFilter, bothFilter},
	}, {
		name: "GRPCRoute",
		in: Inputs{GRPCRoutes: []*gatewayv1.GRPCRoute{grpcRoute("shop", "g", parents, gatewayv1.GRPCRouteRule{
			Filters: []gatewayv1.GRPCRouteFilter{{Type: gatewayv1.GRPCRouteFilterExtensionRef, ExtensionRef: faultRef("both").ExtensionRef}}})}},
		want: []Filter{bothFilter},
	}, {
		name: "an HTTPFault of another namespace",
		in: Inputs{HTTPRoutes: []*gatewayv1.HTTPRoute{httpRoute("shop", "r", 0, parents, gatewayv1.HTTPRouteRule{
			Filters: []gatewayv1.HTTPRouteFilter{faultRef("elsewhere")}})}},
		want: []Filter{{Kind: FilterFail, Fail: Fail{Status: 500, Message: "unresolved filter policy.mesh.dev/HTTPFault elsewhere"}}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Services = services(service("shop", "web", "10.0.0.1", 80))
			tc.in.Faults = faults
			tb := Build(tc.in).Lookup(ServicePort{web, 80}, "x")
			if tb == nil || len(tb.HTTP)+len(tb.GRPC) != 1 {
				t.Fatalf("table = %+v, want one rule", tb)
			}
			got := append(tb.HTTP, tb.GRPC...)[0].Filters
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("filters (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFaultOf(t *testing.T) {
	tests := []struct {
		name    string
		fault   *policyv1alpha1.HTTPFault
		want    Fault
		wantErr string
	}{
		{name: "abort", fault: abortFault("", "", 50, 503), want: Fault{Abort: &FaultAbort{PerMillion: 500_000, Status: 503}}},
		{name: "abort of none", fault: abortFault("", "", 0, 200), want: Fault{Abort: &FaultAbort{Status: 200}}},
		{name: "delay in the Gateway API's format", fault: delayFault("", "", 1, "1m30s500ms"),
			want: Fault{Delay: &FaultDelay{PerMillion: 10_000, Duration: 90*time.Second + 500*time.Millisecond}}},
		{name: "neither", fault: &policyv1alpha1.HTTPFault{}, wantErr: "neither abort nor delay is given"},
		{name: "abort percent", fault: abortFault("", "", 101, 503), wantErr: "abort.percent 101: want 0 to 100"},
		{name: "abort status", fault: abortFault("", "", 10, 100), wantErr: "abort.httpStatus 100: want 200 to 599"},
		{name: "delay percent", fault: delayFault("", "", -1, "1s"), wantErr: "delay.percent -1: want 0 to 100"},
		{name: "delay duration", fault: delayFault("", "", 10, "soon"), wantErr: `delay.duration "soon": want a duration like 200ms or 1s`},
		{name: "negative delay", fault: delayFault("", "", 10, "-1s"), wantErr: `delay.duration "-1s": want a duration like 200ms or 1s`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := faultOf(tc.fault.Spec)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("faultOf = %+v, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("fault (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTypedFault checks the informer's transform: an HTTPFault is cached
// typed, and one that does not match the schema keeps its name only, so
// that routes naming it are refused rather than unresolved.
func TestTypedFault(t *testing.T) {
	transform := typedFault(slog.New(slog.DiscardHandler))
	good := toUnstructured(t, delayFault("shop", "slow", 100, "200ms"))
	got, err := transform(good)
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := got.(*policyv1alpha1.HTTPFault); !ok || f.Name != "slow" || f.Spec.Delay == nil || f.Spec.Delay.Duration != "200ms" {
		t.Errorf("transform(%v) = %#v", good.Object, got)
	}

	bad := toUnstructured(t, abortFault("shop", "typo", 50, 503))
	if err := unstructured.SetNestedField(bad.Object, "fifty", "spec", "abort", "percent"); err != nil {
		t.Fatal(err)
	}
	got, err = transform(bad)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := got.(*policyv1alpha1.HTTPFault)
	if !ok || f.Namespace != "shop" || f.Name != "typo" || f.Spec.Abort != nil || f.Spec.Delay != nil {
		t.Fatalf("transform of a bad HTTPFault = %#v, want its name and no spec", got)
	}
	_, err = faultOf(f.Spec)
	if err == nil {
		t.Error("faultOf accepts the spec of a bad HTTPFault")
	}
}
