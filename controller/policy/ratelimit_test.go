package policy

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8stesting "k8s.io/client-go/testing"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
)

// TestRateLimits: what port a policy's limits reach, and the outcome each
// rate limit policy's status says.
func TestRateLimits(t *testing.T) {
	web := map[string]string{"app": "web"}
	ns := namespace(testNS, nil)
	httpSrv := server("web-http", 0, intstr.FromInt32(8080), policyv1alpha1.ProtocolHTTP1, web)
	// on is the expected policy of port 8080 with rl.
	on := func(rl *inboundv1.RateLimit) *inboundv1.PodPolicy {
		p := port(8080, "web-http", http1)
		p.RateLimit = rl
		return unauthenticated(p)
	}
	override := func(rps int32, ids []string, refs ...policyv1alpha1.IdentityRef) policyv1alpha1.RateLimitOverride {
		return policyv1alpha1.RateLimitOverride{RequestsPerSecond: rps, Identities: ids, ClientRefs: refs}
	}
	accepted := rateLimitOutcome{accepted: true, reason: policyv1alpha1.RateLimitReasonAccepted, message: "limits the HTTP requests of Server web-http"}
	tests := []struct {
		name         string
		objs         []runtime.Object
		want         *inboundv1.PodPolicy
		wantOutcomes map[string]rateLimitOutcome
		wantWarnings []string
	}{
		{
			name:         "total and identity",
			objs:         []runtime.Object{ns, httpSrv, rateLimitPolicy("rl", 0, "web-http", 100, 20)},
			want:         on(&inboundv1.RateLimit{Name: "rl", TotalRps: 100, IdentityRps: 20}),
			wantOutcomes: map[string]rateLimitOutcome{"rl": accepted},
		},
		{
			name: "overrides keep their order; their clients are resolved, sorted and deduplicated",
			objs: []runtime.Object{ns, httpSrv, rateLimitPolicy("rl", 0, "web-http", 0, 10,
				override(50, []string{"spiffe://cluster.local/ns/a/sa/z", "*"}, saIdentity("", "special"), saIdentity("ops", "*")),
				override(5, []string{"spiffe://cluster.local/ns/b/*", "spiffe://cluster.local/ns/b/*"}),
			)},
			want: on(&inboundv1.RateLimit{Name: "rl", IdentityRps: 10, Overrides: []*inboundv1.RateLimitOverride{
				{Rps: 50, Identities: []string{"*", "spiffe://cluster.local/ns/a/sa/z", "spiffe://cluster.local/ns/ops/sa/*", "spiffe://cluster.local/ns/shop/sa/special"}},
				{Rps: 5, Identities: []string{"spiffe://cluster.local/ns/b/*"}},
			}}),
			wantOutcomes: map[string]rateLimitOutcome{"rl": accepted},
		},
		{
			name: "invalid clients are dropped, and an override left with none",
			objs: []runtime.Object{ns, httpSrv, rateLimitPolicy("rl", 0, "web-http", 100, 0,
				override(50, []string{"web", "spiffe://cluster.local/ns/a/sa/b"}, policyv1alpha1.IdentityRef{Kind: "User", Name: "bob"}),
				override(5, []string{"http://x"}),
			)},
			want: on(&inboundv1.RateLimit{Name: "rl", TotalRps: 100, Overrides: []*inboundv1.RateLimitOverride{
				{Rps: 50, Identities: []string{"spiffe://cluster.local/ns/a/sa/b"}},
			}}),
			wantOutcomes: map[string]rateLimitOutcome{"rl": accepted},
			wantWarnings: []string{`overrides[0]: identity "web" is ignored`, "overrides[0]: clientRef User bob is ignored",
				`overrides[1]: identity "http://x" is ignored`, "overrides[1] is ignored: it names no valid client"},
		},
		{
			name: "a Server that does not exist",
			objs: []runtime.Object{ns, httpSrv, rateLimitPolicy("rl", 0, "api", 100, 0)},
			want: on(nil),
			wantOutcomes: map[string]rateLimitOutcome{"rl": {reason: policyv1alpha1.RateLimitReasonTargetNotFound,
				message: "Server api does not exist in namespace shop"}},
			wantWarnings: []string{"HTTPLocalRateLimitPolicy shop/rl is not applied (TargetNotFound)"},
		},
		{
			name: "a Server the controller ignores",
			objs: []runtime.Object{ns, httpSrv, rateLimitPolicy("rl", 0, "bad", 100, 0),
				&policyv1alpha1.Server{ObjectMeta: meta("bad", 0), Spec: policyv1alpha1.ServerSpec{
					PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}},
					Port:        intstr.FromInt32(9090),
				}}},
			want: on(nil),
			wantOutcomes: map[string]rateLimitOutcome{"rl": {reason: policyv1alpha1.RateLimitReasonTargetNotFound,
				message: "Server bad is ignored, its spec being invalid (the controller's log says why)"}},
			wantWarnings: []string{"Server shop/bad is ignored", "HTTPLocalRateLimitPolicy shop/rl is not applied (TargetNotFound)"},
		},
		{
			name: "two policies on one Server: the older applies, whatever the names",
			objs: []runtime.Object{ns, httpSrv, rateLimitPolicy("a-newer", 20, "web-http", 5, 0), rateLimitPolicy("z-older", 10, "web-http", 100, 0)},
			want: on(&inboundv1.RateLimit{Name: "z-older", TotalRps: 100}),
			wantOutcomes: map[string]rateLimitOutcome{
				"z-older": accepted,
				"a-newer": {reason: policyv1alpha1.RateLimitReasonConflicted,
					message: "Server web-http is limited by HTTPLocalRateLimitPolicy z-older, which is older; a Server takes one"},
			},
			wantWarnings: []string{"HTTPLocalRateLimitPolicy shop/a-newer is not applied (Conflicted)"},
		},
		{
			name: "an invalid older policy does not keep a valid one out",
			objs: []runtime.Object{ns, httpSrv, rateLimitPolicy("old", 10, "web-http", 0, 0), rateLimitPolicy("new", 20, "web-http", 7, 0)},
			want: on(&inboundv1.RateLimit{Name: "new", TotalRps: 7}),
			wantOutcomes: map[string]rateLimitOutcome{
				"new": accepted,
				"old": {reason: policyv1alpha1.RateLimitReasonInvalid, message: "it sets no limit: give total, identity or an override with a valid client"},
			},
			wantWarnings: []string{"HTTPLocalRateLimitPolicy shop/old is not applied (Invalid)"},
		},
		{
			name: "a limit below 1",
			objs: []runtime.Object{ns, httpSrv, rateLimitPolicy("rl", 0, "web-http", -3, 0)},
			want: on(nil),
			wantOutcomes: map[string]rateLimitOutcome{"rl": {reason: policyv1alpha1.RateLimitReasonInvalid,
				message: "total.requestsPerSecond is -3; it must be at least 1"}},
			wantWarnings: []string{"HTTPLocalRateLimitPolicy shop/rl is not applied (Invalid)"},
		},
		{
			name: "a target of another group",
			objs: []runtime.Object{ns, httpSrv, func() runtime.Object {
				p := rateLimitPolicy("rl", 0, "web-http", 100, 0)
				p.Spec.TargetRef.Group = "policy.linkerd.io"
				return p
			}()},
			want: on(nil),
			wantOutcomes: map[string]rateLimitOutcome{"rl": {reason: policyv1alpha1.RateLimitReasonInvalid,
				message: "targetRef Server.policy.linkerd.io web-http is not a Server (group policy.mesh.dev)"}},
			wantWarnings: []string{"HTTPLocalRateLimitPolicy shop/rl is not applied (Invalid)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, warnings := resolve(t, testDefaults(""), pod("web-0"), tc.objs)
			if diff := cmp.Diff(tc.want, got, protocmp.Transform(), ignoreRevision); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
			checkWarnings(t, warnings, tc.wantWarnings)

			b := nsBuilder{in: inputs(t, tc.objs), td: testTD}
			_, outcomes := b.rateLimits(b.servers())
			if diff := cmp.Diff(tc.wantOutcomes, outcomes, cmp.AllowUnexported(rateLimitOutcome{})); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRateLimitSharedAcrossPorts: a Server whose named port resolves to
// two ports gives both the same limit; the proxy shares one limiter
// between them.
func TestRateLimitSharedAcrossPorts(t *testing.T) {
	p := pod("web-0", withContainer(corev1.Container{Name: "side", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9090}}}))
	got, _ := resolve(t, testDefaults(""), p, []runtime.Object{
		server("web-http", 0, intstr.FromString("http"), "", nil), rateLimitPolicy("rl", 0, "web-http", 10, 0),
	})
	if len(got.GetPorts()) != 2 {
		t.Fatalf("ports %v, want 8080 and 9090", got.GetPorts())
	}
	for _, pp := range got.GetPorts() {
		if pp.GetRateLimit().GetName() != "rl" || pp.GetRateLimit().GetTotalRps() != 10 {
			t.Errorf("port %d: rate limit %v, want rl's", pp.GetPort(), pp.GetRateLimit())
		}
	}
}

func TestAcceptedConditions(t *testing.T) {
	t0 := metav1.NewTime(epoch)
	t1 := metav1.NewTime(epoch.Add(time.Hour))
	ok := rateLimitOutcome{accepted: true, reason: "Accepted", message: "limits"}
	other := metav1.Condition{Type: "Other", Status: metav1.ConditionTrue, Reason: "X", LastTransitionTime: t0}
	accepted := metav1.Condition{Type: "Accepted", Status: metav1.ConditionTrue, ObservedGeneration: 2, Reason: "Accepted", Message: "limits", LastTransitionTime: t0}
	tests := []struct {
		name        string
		current     []metav1.Condition
		out         rateLimitOutcome
		generation  int64
		want        []metav1.Condition
		wantChanged bool
	}{
		{name: "first", out: ok, generation: 2, wantChanged: true,
			want: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, ObservedGeneration: 2, Reason: "Accepted", Message: "limits", LastTransitionTime: t1}}},
		{name: "unchanged: not written, time kept", current: []metav1.Condition{other, accepted}, out: ok, generation: 2,
			want: []metav1.Condition{other, accepted}},
		{name: "a new generation: written, time kept", current: []metav1.Condition{accepted}, out: ok, generation: 3, wantChanged: true,
			want: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, ObservedGeneration: 3, Reason: "Accepted", Message: "limits", LastTransitionTime: t0}}},
		{name: "a transition: new time, other types kept", current: []metav1.Condition{accepted, other}, generation: 2, wantChanged: true,
			out:  rateLimitOutcome{reason: "TargetNotFound", message: "gone"},
			want: []metav1.Condition{other, {Type: "Accepted", Status: metav1.ConditionFalse, ObservedGeneration: 2, Reason: "TargetNotFound", Message: "gone", LastTransitionTime: t1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := acceptedConditions(tc.current, tc.out, tc.generation, t1)
			if changed != tc.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tc.wantChanged)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("conditions (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRateLimitStatus: the controller writes each policy's Accepted
// condition, follows changes of its Server, and does not write a status
// that is already right; the proxy's policy follows too.
func TestRateLimitStatus(t *testing.T) {
	srv := server("web-http", 0, intstr.FromInt32(8080), policyv1alpha1.ProtocolHTTP1, nil)
	older := rateLimitPolicy("older", 10, "web-http", 100, 0)
	newer := rateLimitPolicy("newer", 20, "web-http", 5, 0)
	h := newHarness(t, harnessOptions{objects: []runtime.Object{namespace(testNS, nil), pod("web-0"), srv, older, newer}})
	w := h.watch(t, testNS, "web-0")
	if rl := w.recv().GetPorts()[0].GetRateLimit(); rl.GetName() != "older" {
		t.Errorf("rate limit %v, want older's", rl)
	}
	h.waitAccepted(t, "older", metav1.ConditionTrue, policyv1alpha1.RateLimitReasonAccepted)
	h.waitAccepted(t, "newer", metav1.ConditionFalse, policyv1alpha1.RateLimitReasonConflicted)

	// Nothing changes: nothing is written again.
	patches := h.statusPatches()
	h.apply(t, namespace(testNS, map[string]string{"unrelated": "x"}))
	h.apply(t, srv) // an update of the Server that changes nothing
	time.Sleep(200 * time.Millisecond)
	if n := h.statusPatches(); n != patches {
		t.Errorf("%d status writes after changes that change no status, want none", n-patches)
	}

	since := time.Now()
	h.delete(t, srv)
	if ports := w.recvWithin(since, time.Second).GetPorts(); len(ports) != 0 {
		t.Errorf("ports %v after the Server went, want none", ports)
	}
	h.waitAccepted(t, "older", metav1.ConditionFalse, policyv1alpha1.RateLimitReasonTargetNotFound)
	h.waitAccepted(t, "newer", metav1.ConditionFalse, policyv1alpha1.RateLimitReasonTargetNotFound)

	// The Server may come back to the informers before older's deletion
	// does: a policy with older's limit may come first, then newer's.
	h.delete(t, older)
	h.apply(t, srv)
	for rl := w.recv().GetPorts()[0].GetRateLimit(); rl.GetName() != "newer" || rl.GetTotalRps() != 5; rl = w.recv().GetPorts()[0].GetRateLimit() {
		if rl.GetName() != "older" {
			t.Fatalf("rate limit %v, want newer's", rl)
		}
	}
	h.waitAccepted(t, "newer", metav1.ConditionTrue, policyv1alpha1.RateLimitReasonAccepted)
}

// TestRateLimitStatusRetried: a status write the API server fails (not
// a conflict) is tried again without any event.
func TestRateLimitStatusRetried(t *testing.T) {
	h := newHarness(t, harnessOptions{objects: []runtime.Object{namespace(testNS, nil),
		server("web-http", 0, intstr.FromInt32(8080), policyv1alpha1.ProtocolHTTP1, nil)}})
	var failed atomic.Int32
	h.dynamic.PrependReactor("patch", "httplocalratelimitpolicies", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failed.Add(1) == 1 {
			return true, nil, apierrors.NewInternalError(errors.New("etcd is having a bad day"))
		}
		return false, nil, nil
	})
	h.apply(t, rateLimitPolicy("rl", 0, "web-http", 10, 0))
	h.waitAccepted(t, "rl", metav1.ConditionTrue, policyv1alpha1.RateLimitReasonAccepted)
	if n := failed.Load(); n != 2 {
		t.Errorf("%d status writes, want the failed one and its retry", n)
	}
	if h.logs.count("writing HTTPLocalRateLimitPolicy status; retrying") != 1 {
		t.Error("the failed write is not logged")
	}
}

// waitAccepted waits until the rate limit policy name of testNS has an
// Accepted condition of status and reason.
func (h *harness) waitAccepted(t *testing.T, name string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	var last []metav1.Condition
	deadline := time.Now().Add(waitTimeout)
	for {
		u, err := h.dynamic.Resource(policyv1alpha1.HTTPLocalRateLimitPoliciesResource).Namespace(testNS).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var p policyv1alpha1.HTTPLocalRateLimitPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			t.Fatal(err)
		}
		last = p.Status.Conditions
		for _, c := range last {
			if c.Type == policyv1alpha1.RateLimitConditionAccepted && c.Status == status && c.Reason == reason {
				if c.Message == "" || c.LastTransitionTime.IsZero() {
					t.Errorf("%s: condition %+v lacks a message or a time", name, c)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: conditions %+v, want Accepted=%s %s", name, last, status, reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// statusPatches counts the status writes the controller made.
func (h *harness) statusPatches() int {
	n := 0
	for _, a := range h.dynamic.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok && p.GetSubresource() == "status" && strings.Contains(string(p.GetPatch()), "conditions") {
			n++
		}
	}
	return n
}
