package destination

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestGetInTheCallersNamespace: over mesh TLS, short names expand in the
// namespace of the caller's proven identity, not in the one its request
// claims, so a proxy cannot pass for a pod of another namespace; the
// loopback listener takes the request's word.
func TestGetInTheCallersNamespace(t *testing.T) {
	a := pod("web-a", "10.0.0.1")
	other := service("web", "10.96.0.20", servicePortNamed("http", 80, intstr.FromString("http")))
	other.Namespace = "other" // same name, no endpoints
	h := newHarness(t, harnessOptions{objects: []runtime.Object{
		web(), other, a, slice("web-1", "web", "http", 8080, endpoint(a, ready)),
	}})
	for _, tc := range []struct {
		name      string
		caller    spiffeid.ID
		contextNS string
		want      []string
	}{
		{name: "a proxy of the namespace", caller: h.pki.ID(testNS, "api"), contextNS: testNS, want: []string{"10.0.0.1:8080"}},
		{name: "a proxy of the namespace, claiming another", caller: h.pki.ID(testNS, "api"), contextNS: "other", want: []string{"10.0.0.1:8080"}},
		{name: "a proxy of another namespace, claiming this one", caller: h.pki.ID("other", "api"), contextNS: testNS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := h.getWith(t, h.dialAs(t, tc.caller), "web:80", tc.contextNS)
			w.recv()
			if diff := cmp.Diff(tc.want, w.addrs()); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
		})
	}
	w := h.get(t, "web:80", "other")
	w.recv()
	if got := w.addrs(); len(got) != 0 {
		t.Errorf("the loopback listener resolved web:80 in %q to %v, want the request's namespace (no endpoints)", "other", got)
	}
}

// TestGetRefusesCallersThatAreNoProxy: an ID of the trust domain that
// names no ServiceAccount is refused; Register on a server without mesh
// TLS refuses everyone.
func TestGetRefusesCallersThatAreNoProxy(t *testing.T) {
	h := newHarness(t, harnessOptions{objects: []runtime.Object{web()}})
	node := spiffeid.RequireFromSegments(h.pki.TrustDomain, "node", "n1")
	err := h.getWith(t, h.dialAs(t, node), "web.shop.svc.cluster.local:80", "").recvErr()
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "names no ServiceAccount") {
		t.Errorf("caller %s: got %v, want PermissionDenied", node, err)
	}

	h.addr = serve(t, func(r grpc.ServiceRegistrar) { h.srv.Register(r) })
	if err := h.firstErr(t, "web.shop.svc.cluster.local:80", testNS); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Register without mesh TLS: got %v, want Unauthenticated", err)
	}
}
