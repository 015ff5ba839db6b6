package route

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic/dynamicinformer"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/events"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/internal/names"
)

// harness runs an Index against fake clientsets.
type harness struct {
	kube   *kubefake.Clientset
	gw     *gatewayfake.Clientset
	policy *dynamicfake.FakeDynamicClient
	ix     *Index
}

func newHarness(t *testing.T, route *gatewayv1.HTTPRoute) *harness {
	t.Helper()
	return newHarnessWith(t, nil, route)
}

// newHarnessWith is newHarness with an event recorder, and objects that
// may be none: routes, and policy.mesh.dev objects.
func newHarnessWith(t *testing.T, rec events.EventRecorder, objs ...runtime.Object) *harness {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := policyv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	var routes, policies []runtime.Object
	for _, o := range objs {
		if _, _, err := scheme.ObjectKinds(o); err == nil {
			policies = append(policies, o)
		} else {
			routes = append(routes, o)
		}
	}
	h := &harness{
		kube:   kubefake.NewClientset(service("shop", "web", "10.0.0.1", 80), service("shop", "web-v2", "10.0.0.2", 80)),
		gw:     gatewayfake.NewSimpleClientset(routes...),
		policy: dynamicfake.NewSimpleDynamicClient(scheme, policies...),
	}
	f := informers.NewSharedInformerFactory(h.kube, 0)
	g := gatewayinformers.NewSharedInformerFactory(h.gw, 0)
	d := dynamicinformer.NewDynamicSharedInformerFactory(h.policy, 0)
	ix, err := New(Config{Informers: f, Gateway: g, Policy: d, Client: h.gw, Events: rec, Coalesce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	h.ix = ix
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		f.Shutdown()
		g.Shutdown()
		d.Shutdown()
	})
	return h
}

// statusWrites counts the HTTPRoute status updates the fake received.
func (h *harness) statusWrites() int {
	n := 0
	for _, a := range h.gw.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "status" {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or 5s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestIndexWritesStatusOnce(t *testing.T) {
	r := httpRoute("shop", "split", 0, []gatewayv1.ParentReference{svcParent("", "web", 80)},
		gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 1)}})
	// Another controller's entry, which mesh must keep as it is.
	other := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "gw"}, ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.NewTime(epoch)}}}
	r.Status.Parents = []gatewayv1.RouteParentStatus{other}
	h := newHarness(t, r)
	ctx := t.Context()

	var got *gatewayv1.HTTPRoute
	waitFor(t, "mesh's status entry", func() bool {
		var err error
		got, err = h.gw.GatewayV1().HTTPRoutes("shop").Get(ctx, "split", metav1.GetOptions{})
		return err == nil && len(got.Status.Parents) == 2
	})
	if got.Status.Parents[0].ControllerName != "example.com/gateway" {
		t.Errorf("the other controller's entry moved or changed: %+v", got.Status.Parents)
	}
	ours := got.Status.Parents[1]
	if ours.ControllerName != ControllerName || len(ours.Conditions) != 2 {
		t.Fatalf("mesh's entry = %+v", ours)
	}
	for _, c := range ours.Conditions {
		if c.Status != metav1.ConditionTrue || c.ObservedGeneration != 3 {
			t.Errorf("condition %s = %s, generation %d; want True at generation 3", c.Type, c.Status, c.ObservedGeneration)
		}
	}

	// An unrelated change makes the index rebuild; the route's status
	// is what it should be, so nothing is written again.
	writes := h.statusWrites()
	_, changed := h.ix.Snapshot()
	if _, err := h.kube.CoreV1().Services("shop").Create(ctx, service("shop", "other", "10.0.0.9", 80), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("no rebuild after a Service change")
	}
	// The rebuild publishes before it writes; the next one proves the
	// write pass ended.
	_, changed = h.ix.Snapshot()
	h.ix.signal()
	<-changed
	if n := h.statusWrites(); n != writes {
		t.Errorf("status writes went from %d to %d with nothing changed", writes, n)
	}
}

func TestIndexChangeReachesSnapshot(t *testing.T) {
	r := httpRoute("shop", "split", 0, []gatewayv1.ParentReference{svcParent("", "web", 80)},
		gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 1)}})
	h := newHarness(t, r)
	select {
	case <-h.ix.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("index not ready")
	}
	ctx := t.Context()
	waitFor(t, "the route's table", func() bool {
		s, _ := h.ix.Snapshot()
		return s.Lookup(ServicePort{web, 80}, "x") != nil
	})

	r2 := r.DeepCopy()
	r2.Spec.Rules[0].BackendRefs = []gatewayv1.HTTPBackendRef{backendRef("web-v2", 80, 1)}
	start := time.Now()
	if _, err := h.gw.GatewayV1().HTTPRoutes("shop").Update(ctx, r2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new backend", func() bool {
		s, _ := h.ix.Snapshot()
		tb := s.Lookup(ServicePort{web, 80}, "x")
		return tb != nil && tb.HTTP[0].Backends[0].Service.Service.Name == "web-v2"
	})
	if d := time.Since(start); d > time.Second {
		t.Errorf("the change took %v to reach the snapshot, want well under 1s", d)
	}
}

// TestIndexServiceAnnotations checks that a Service's annotations reach
// the snapshot without any route, that changing them rebuilds it, and
// that a bad one is recorded as a Warning Event on the Service once,
// however many rebuilds follow.
func TestIndexServiceAnnotations(t *testing.T) {
	rec := events.NewFakeRecorder(10)
	h := newHarnessWith(t, rec)
	ctx := t.Context()
	update := func(kv ...string) {
		t.Helper()
		svc, err := h.kube.CoreV1().Services("shop").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		annotated(svc, kv...)
		if _, err := h.kube.CoreV1().Services("shop").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	timeout := func() time.Duration {
		s, _ := h.ix.Snapshot()
		if tb := s.Lookup(ServicePort{web, 80}, "x"); tb != nil && tb.Default != nil {
			return tb.Default.Timeouts.Request
		}
		return 0
	}

	update(names.AnnotationTimeoutRequest, "2s")
	waitFor(t, "the Service's policy", func() bool { return timeout() == 2*time.Second })
	update(names.AnnotationTimeoutRequest, "3s", names.AnnotationRetryLimit, "many")
	waitFor(t, "the changed policy", func() bool { return timeout() == 3*time.Second })
	select {
	case e := <-rec.Events:
		want := `Warning InvalidAnnotation annotation retry.mesh.dev/limit "many": want a whole number of retries from 0 to 10; ignored`
		if e != want {
			t.Errorf("event %q\nwant  %q", e, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Event for the bad annotation")
	}

	// Unrelated rebuilds, and one that changes another annotation, keep
	// the warning: no second Event.
	_, changed := h.ix.Snapshot()
	h.ix.signal()
	<-changed
	update(names.AnnotationTimeoutRequest, "4s", names.AnnotationRetryLimit, "many")
	waitFor(t, "the next policy", func() bool { return timeout() == 4*time.Second })
	_, changed = h.ix.Snapshot()
	h.ix.signal()
	<-changed
	select {
	case e := <-rec.Events:
		t.Errorf("a second Event for the same annotation: %q", e)
	default:
	}

	update()
	waitFor(t, "the policy gone", func() bool {
		s, _ := h.ix.Snapshot()
		return s.Lookup(ServicePort{web, 80}, "x") == nil
	})
}

// TestIndexFaultChanges checks that HTTPFaults are watched: a route's
// rule answers 500 while the HTTPFault it names is missing, with
// ResolvedRefs False; creating it resolves the route, changing it
// changes the table, and deleting it makes the rule fail again.
func TestIndexFaultChanges(t *testing.T) {
	r := httpRoute("shop", "chaos", 0, []gatewayv1.ParentReference{svcParent("", "web", 80)},
		gatewayv1.HTTPRouteRule{Filters: []gatewayv1.HTTPRouteFilter{faultRef("f")}, BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 1)}})
	h := newHarnessWith(t, nil, r)
	ctx := t.Context()
	filter := func() Filter {
		s, _ := h.ix.Snapshot()
		if tb := s.Lookup(ServicePort{web, 80}, "x"); tb != nil && len(tb.HTTP) == 1 && len(tb.HTTP[0].Filters) == 1 {
			return tb.HTTP[0].Filters[0]
		}
		return Filter{}
	}
	resolvedRefs := func() metav1.ConditionStatus {
		got, err := h.gw.GatewayV1().HTTPRoutes("shop").Get(ctx, "chaos", metav1.GetOptions{})
		if err != nil || len(got.Status.Parents) != 1 {
			return ""
		}
		for _, c := range got.Status.Parents[0].Conditions {
			if c.Type == string(gatewayv1.RouteConditionResolvedRefs) {
				return c.Status
			}
		}
		return ""
	}
	faults := h.policy.Resource(policyv1alpha1.HTTPFaultsResource).Namespace("shop")

	waitFor(t, "the rule failing", func() bool { return filter().Kind == FilterFail })
	waitFor(t, "ResolvedRefs False", func() bool { return resolvedRefs() == metav1.ConditionFalse })

	u := toUnstructured(t, abortFault("shop", "f", 50, 503))
	if _, err := faults.Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the fault", func() bool {
		f := filter()
		return f.Kind == FilterFault && f.Fault.Abort != nil && f.Fault.Abort.PerMillion == 500_000
	})
	waitFor(t, "ResolvedRefs True", func() bool { return resolvedRefs() == metav1.ConditionTrue })

	u = toUnstructured(t, abortFault("shop", "f", 10, 500))
	if _, err := faults.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the changed fault", func() bool {
		f := filter()
		return f.Kind == FilterFault && f.Fault.Abort != nil && *f.Fault.Abort == FaultAbort{PerMillion: 100_000, Status: 500}
	})

	if err := faults.Delete(ctx, "f", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rule failing again", func() bool { return filter().Kind == FilterFail })
	waitFor(t, "ResolvedRefs False again", func() bool { return resolvedRefs() == metav1.ConditionFalse })
}

// toUnstructured converts a policy.mesh.dev object for the dynamic
// client.
func toUnstructured(t *testing.T, f *policyv1alpha1.HTTPFault) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(f)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(policyv1alpha1.SchemeGroupVersion.String())
	u.SetKind(policyv1alpha1.KindHTTPFault)
	return u
}
