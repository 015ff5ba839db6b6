package policy

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestWatchOnlyOwnPod: over mesh TLS a proxy learns the policy of its own
// pod and no other; the refusal says which identity asked for which pod.
// The loopback listener answers whoever reaches it.
func TestWatchOnlyOwnPod(t *testing.T) {
	h := newHarness(t, harnessOptions{objects: []runtime.Object{
		namespace(testNS, nil), namespace("other", nil), pod("web-0"),
	}})
	td := h.pki.TrustDomain
	for _, tc := range []struct {
		name     string
		caller   spiffeid.ID
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "the pod's own identity", caller: h.pki.ID(testNS, "web"), wantCode: codes.OK},
		{name: "another namespace", caller: h.pki.ID("other", "web"), wantCode: codes.PermissionDenied,
			wantMsg: "spiffe://cluster.local/ns/other/sa/web asked for the policy of pod shop/web-0, which runs as spiffe://cluster.local/ns/shop/sa/web"},
		{name: "another ServiceAccount of the namespace", caller: h.pki.ID(testNS, "api"), wantCode: codes.PermissionDenied,
			wantMsg: "spiffe://cluster.local/ns/shop/sa/api asked for the policy of pod shop/web-0, which runs as spiffe://cluster.local/ns/shop/sa/web"},
		{name: "an ID that names no ServiceAccount", caller: spiffeid.RequireFromSegments(td, "ns", testNS),
			wantCode: codes.PermissionDenied, wantMsg: "names no ServiceAccount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := h.watchAs(t, tc.caller, testNS, "web-0")
			if tc.wantCode == codes.OK {
				if got := w.recv(); got.GetRevision() == "" {
					t.Errorf("policy %v without a revision", got)
				}
				return
			}
			err := w.firstErr()
			if status.Code(err) != tc.wantCode || !strings.Contains(status.Convert(err).Message(), tc.wantMsg) {
				t.Errorf("got %v, want %s with %q", err, tc.wantCode, tc.wantMsg)
			}
		})
	}
	if got := h.watch(t, testNS, "web-0").recv(); got.GetRevision() == "" {
		t.Errorf("the loopback listener sent %v", got)
	}
	if n := h.metric(t, "mesh_policy_watches_total", "code", "PermissionDenied"); n != 3 {
		t.Errorf(`mesh_policy_watches_total{code="PermissionDenied"} %v, want 3`, n)
	}
}

// TestWatchOfAPodNotKnownYet: a stream for a pod not in the cache waits
// with only the namespace checked; when the pod appears, the caller gets
// its policy only if it is the pod's ServiceAccount.
func TestWatchOfAPodNotKnownYet(t *testing.T) {
	h := newHarness(t, harnessOptions{objects: []runtime.Object{namespace(testNS, nil)}})
	own := h.watchAs(t, h.pki.ID(testNS, "web"), testNS, "web-1")
	other := h.watchAs(t, h.pki.ID(testNS, "api"), testNS, "web-1")
	eventually(t, "both streams to open", func() bool { return h.metric(t, "mesh_policy_active_streams") == 2 })
	h.apply(t, pod("web-1"))
	if got := own.recv(); got.GetRevision() == "" {
		t.Errorf("policy %v without a revision", got)
	}
	if err := other.firstErr(); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "spiffe://cluster.local/ns/shop/sa/api asked for the policy of pod shop/web-1") {
		t.Errorf("got %v, want PermissionDenied naming the caller and the pod", err)
	}
}

// TestWatchEndsWhenThePodChangesIdentity: a pod deleted and created again
// under its name with another ServiceAccount (a StatefulSet whose template
// changed) ends the streams of the old identity, even though its policy
// is the same.
func TestWatchEndsWhenThePodChangesIdentity(t *testing.T) {
	web0 := pod("web-0")
	h := newHarness(t, harnessOptions{objects: []runtime.Object{namespace(testNS, nil), web0}})
	w := h.watchAs(t, h.pki.ID(testNS, "web"), testNS, "web-0")
	w.recv()
	h.delete(t, web0)
	h.apply(t, pod("web-0", func(p *corev1.Pod) { p.Spec.ServiceAccountName = "api" }))
	if err := w.firstErr(); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "which runs as spiffe://cluster.local/ns/shop/sa/api") {
		t.Errorf("got %v, want PermissionDenied naming the new identity", err)
	}
}

// TestRegisterRefusesWithoutMeshTLS: Register on a server without mesh
// TLS fails closed: nobody is taken for the pod's proxy.
func TestRegisterRefusesWithoutMeshTLS(t *testing.T) {
	h := newHarness(t, harnessOptions{objects: []runtime.Object{namespace(testNS, nil), pod("web-0")}})
	h.addr = h.serve(t, func(r grpc.ServiceRegistrar) { h.srv.Register(r) })
	if err := h.watch(t, testNS, "web-0").firstErr(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("got %v, want Unauthenticated", err)
	}
}
