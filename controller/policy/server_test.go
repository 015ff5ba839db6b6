package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic/dynamicinformer"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/internal/names"
)

// propagation is how soon a change must reach a stream: "in under a
// second" (issue 11), with room for a loaded machine under -race.
const propagation = time.Second

func TestWatchSendsThePolicy(t *testing.T) {
	p := pod("web-0", func(p *corev1.Pod) {
		p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
			HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")},
		}}
	})
	h := newHarness(t, harnessOptions{objects: []runtime.Object{
		namespace(testNS, nil), p,
		server("web-http", 0, intstr.FromString("http"), policyv1alpha1.ProtocolHTTP1, map[string]string{"app": "web"}),
		authzPolicy("web-clients", toServer("web-http"), meshTLSRef("web-clients")),
		meshTLSAuthn("web-clients", nil, saIdentity("", "api")),
	}})
	w := h.watch(t, testNS, "web-0")
	got := w.recv()
	want := unauthenticated(port(8080, "web-http", http1, authorization("web-clients",
		meshTLS("MeshTLSAuthentication/web-clients", "spiffe://cluster.local/ns/shop/sa/api"))))
	want.Probes = []*inboundv1.Probe{{Port: 8080, Path: "/healthz"}}
	if diff := cmp.Diff(want, got, protocmp.Transform(), ignoreRevision); diff != "" {
		t.Errorf("policy (-want +got):\n%s", diff)
	}
	if got.GetRevision() == "" {
		t.Error("no revision")
	}
	h.waitMetric(t, "mesh_policy_updates_total", 1)
	if n := h.metric(t, "mesh_policy_active_streams"); n != 1 {
		t.Errorf("mesh_policy_active_streams %v, want 1", n)
	}
	if n := h.metric(t, "mesh_policy_watches_total", "code", "OK"); n != 1 {
		t.Errorf(`mesh_policy_watches_total{code="OK"} %v, want 1`, n)
	}
	w.cancel()
	eventually(t, "the stream to close", func() bool { return h.metric(t, "mesh_policy_active_streams") == 0 })
}

func TestWatchErrors(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, tc := range []struct {
		name, ns, pod string
	}{
		{name: "no namespace", pod: "web-0"},
		{name: "no pod", ns: testNS},
		{name: "not a namespace name", ns: "Shop", pod: "web-0"},
		{name: "not a pod name", ns: testNS, pod: "web_0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := h.watch(t, tc.ns, tc.pod).firstErr(); status.Code(err) != codes.InvalidArgument {
				t.Errorf("got %v, want InvalidArgument", err)
			}
		})
	}
	if n := h.metric(t, "mesh_policy_watches_total", "code", "InvalidArgument"); n != 4 {
		t.Errorf(`mesh_policy_watches_total{code="InvalidArgument"} %v, want 4`, n)
	}
}

func TestWatchUnavailableUntilSynced(t *testing.T) {
	h := newHarness(t, harnessOptions{noRun: true})
	if err := h.watch(t, testNS, "web-0").firstErr(); status.Code(err) != codes.Unavailable {
		t.Errorf("got %v, want Unavailable", err)
	}
	if err := h.srv.Ready(); err == nil || !strings.Contains(err.Error(), "policy.mesh.dev") {
		t.Errorf("Ready: %v, want the caches named", err)
	}
}

func TestWatchEndsWhenTheServerStops(t *testing.T) {
	h := newHarness(t, harnessOptions{objects: []runtime.Object{namespace(testNS, nil), pod("web-0")}})
	if err := h.srv.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	w := h.watch(t, testNS, "web-0")
	w.recv()
	h.stop()
	if err := w.firstErr(); status.Code(err) != codes.Unavailable {
		t.Errorf("got %v, want Unavailable", err)
	}
	if err := h.watch(t, testNS, "web-0").firstErr(); status.Code(err) != codes.Unavailable {
		t.Errorf("a Watch after the stop: %v, want Unavailable", err)
	}
}

func TestWatchWaitsForThePod(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	w := h.watch(t, testNS, "web-0")
	// The stream is open with nothing to send: the pod is not there yet.
	eventually(t, "the stream to open", func() bool { return h.metric(t, "mesh_policy_active_streams") == 1 })
	start := time.Now()
	h.apply(t, pod("web-0"))
	if got := w.recvWithin(start, propagation); got.GetDefaultPolicy() != names.PolicyAllUnauthenticated {
		t.Errorf("policy %v, want the install default", got)
	}
	// The namespace appears later with a default of its own.
	start = time.Now()
	h.apply(t, namespace(testNS, map[string]string{names.AnnotationDefaultInboundPolicy: names.PolicyDeny}))
	if got := w.recvWithin(start, propagation); got.GetDefaultPolicy() != names.PolicyDeny {
		t.Errorf("policy %v, want deny", got)
	}
}

// TestWatchFollowsChanges walks one pod through the changes a user makes,
// each of which must reach the stream at once. A change of one object
// sends one update; one of two objects may pass through a state between
// (informers of different kinds deliver in no set order), and that state
// may only deny more, never allow more.
func TestWatchFollowsChanges(t *testing.T) {
	h := newHarness(t, harnessOptions{objects: []runtime.Object{namespace(testNS, nil), pod("web-0")}})
	w := h.watch(t, testNS, "web-0")
	if diff := cmp.Diff(unauthenticated(), w.recv(), protocmp.Transform(), ignoreRevision); diff != "" {
		t.Fatalf("first policy (-want +got):\n%s", diff)
	}
	web := map[string]string{"app": "web"}
	clients := func(ids ...string) *inboundv1.Authentication {
		return meshTLS("MeshTLSAuthentication/clients", ids...)
	}
	const (
		api   = "spiffe://cluster.local/ns/shop/sa/api"
		admin = "spiffe://cluster.local/ns/ops/sa/admin"
	)
	dangling := "NetworkAuthentication shop/office does not exist"
	var danglingLogged int
	steps := []struct {
		name   string
		change func(t *testing.T)
		// objects is how many objects change makes; with more than one,
		// a policy between may come first.
		objects int
		want    *inboundv1.PodPolicy
	}{
		{
			name: "a Server denies its port to all",
			change: func(t *testing.T) {
				h.apply(t, server("web-http", 0, intstr.FromInt32(8080), policyv1alpha1.ProtocolHTTP1, web))
			},
			objects: 1,
			want:    unauthenticated(port(8080, "web-http", http1)),
		},
		{
			name: "a policy and its MeshTLSAuthentication allow a ServiceAccount",
			change: func(t *testing.T) {
				h.apply(t, authzPolicy("clients", toServer("web-http"), meshTLSRef("clients")))
				h.apply(t, meshTLSAuthn("clients", nil, saIdentity("", "api")))
			},
			objects: 2,
			want:    unauthenticated(port(8080, "web-http", http1, authorization("clients", clients(api)))),
		},
		{
			name: "a second ServiceAccount joins the MeshTLSAuthentication",
			change: func(t *testing.T) {
				h.apply(t, meshTLSAuthn("clients", nil, saIdentity("", "api"), saIdentity("ops", "admin")))
			},
			objects: 1,
			want:    unauthenticated(port(8080, "web-http", http1, authorization("clients", clients(admin, api)))),
		},
		{
			name: "a NetworkAuthentication is required too",
			change: func(t *testing.T) {
				h.apply(t, networkAuthn("office", policyv1alpha1.Network{CIDR: "10.0.0.0/8"}))
				h.apply(t, authzPolicy("clients", toServer("web-http"), meshTLSRef("clients"), networkRef("office")))
			},
			objects: 2,
			want: unauthenticated(port(8080, "web-http", http1, authorization("clients",
				clients(admin, api), nets("NetworkAuthentication/office", cidr("10.0.0.0/8"))))),
		},
		{
			name: "the NetworkAuthentication is deleted: the policy fails closed",
			change: func(t *testing.T) {
				danglingLogged = h.logs.count(dangling)
				h.delete(t, networkAuthn("office"))
			},
			objects: 1,
			want:    unauthenticated(port(8080, "web-http", http1)),
		},
		{
			name: "the Server becomes opaque, the policy still dangling",
			change: func(t *testing.T) {
				if n := h.logs.count(dangling); n != danglingLogged+1 {
					t.Errorf("the dangling reference was logged %d times, want once", n-danglingLogged)
				}
				h.apply(t, server("web-http", 0, intstr.FromInt32(8080), policyv1alpha1.ProtocolOpaque, web))
			},
			objects: 1,
			want:    unauthenticated(port(8080, "web-http", opaque)),
		},
		{
			name: "the pod's labels stop matching the Server",
			change: func(t *testing.T) {
				// The namespace was rebuilt; the warning was not logged again.
				if n := h.logs.count(dangling); n != danglingLogged+1 {
					t.Errorf("the dangling reference was logged %d times, want once", n-danglingLogged)
				}
				h.apply(t, pod("web-0", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "web-v2"} }))
			},
			objects: 1,
			want:    unauthenticated(),
		},
		{
			name: "the pod's own default",
			change: func(t *testing.T) {
				h.apply(t, pod("web-0", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "web-v2"} },
					annotated(names.AnnotationDefaultInboundPolicy, names.PolicyAudit)))
			},
			objects: 1,
			want:    &inboundv1.PodPolicy{DefaultPolicy: names.PolicyAudit, Audit: true},
		},
	}
	// Each step's first message not as wanted fails it when it made one
	// change, so an update too many fails the next step.
	received := 1
	for _, step := range steps {
		start := time.Now()
		step.change(t)
		for {
			got := w.recvWithin(start, propagation)
			received++
			diff := cmp.Diff(step.want, got, protocmp.Transform(), ignoreRevision)
			if diff == "" {
				break
			}
			if step.objects == 1 || len(got.GetPorts()) != 1 || len(got.GetPorts()[0].GetAuthorizations()) != 0 {
				t.Fatalf("%s: policy (-want +got):\n%s", step.name, diff)
			}
			t.Logf("%s: a denying policy between: %v", step.name, got)
		}
	}
	h.waitMetric(t, "mesh_policy_updates_total", float64(received))
}

// TestWatchSendsOnlyChanges: changes that leave the pod's policy as it
// is send nothing: the next message is the next real change.
func TestWatchSendsOnlyChanges(t *testing.T) {
	other := namespace("billing", nil)
	h := newHarness(t, harnessOptions{objects: []runtime.Object{namespace(testNS, nil), other, pod("web-0")}})
	w := h.watch(t, testNS, "web-0")
	first := w.recv()

	// A pod status change, another pod, another namespace's Server and
	// annotation, and a Server of the namespace that selects other pods.
	h.apply(t, pod("web-0", func(p *corev1.Pod) { p.Status.Phase = corev1.PodRunning }))
	h.apply(t, pod("api-0", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "api"} }))
	billing := server("payments", 0, intstr.FromInt32(8080), "", nil)
	billing.Namespace = "billing"
	h.apply(t, billing)
	h.apply(t, namespace("billing", map[string]string{names.AnnotationDefaultInboundPolicy: names.PolicyDeny}))
	h.apply(t, server("api", 0, intstr.FromInt32(8080), "", map[string]string{"app": "api"}))
	// And one that changes the policy, last.
	h.apply(t, namespace(testNS, map[string]string{names.AnnotationDefaultInboundPolicy: names.PolicyDeny}))

	got := w.recv()
	if got.GetDefaultPolicy() != names.PolicyDeny || got.GetRevision() == first.GetRevision() {
		t.Errorf("second policy %v, want the deny default", got)
	}
	h.waitMetric(t, "mesh_policy_updates_total", 2)
}

// TestWatchStreamsOfOnePod: two proxies' streams of one pod (a restart
// overlaps the old stream) both follow it; one ending leaves the other.
func TestWatchStreamsOfOnePod(t *testing.T) {
	h := newHarness(t, harnessOptions{objects: []runtime.Object{namespace(testNS, nil), pod("web-0")}})
	a, b := h.watch(t, testNS, "web-0"), h.watch(t, testNS, "web-0")
	first := a.recv()
	if got := b.recv(); got.GetRevision() != first.GetRevision() {
		t.Errorf("second stream got revision %s, want %s", got.GetRevision(), first.GetRevision())
	}
	a.cancel()
	eventually(t, "the first stream to close", func() bool { return h.metric(t, "mesh_policy_active_streams") == 1 })
	h.apply(t, server("web-http", 0, intstr.FromInt32(8080), "", nil))
	if got := b.recv(); len(got.GetPorts()) != 1 {
		t.Errorf("policy %v, want port 8080", got)
	}
	// The last stream gone, the pod and namespace are forgotten.
	b.cancel()
	eventually(t, "the pod to be forgotten", func() bool {
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		return len(h.srv.pods) == 0 && len(h.srv.namespaces) == 0
	})
}

func TestMailboxKeepsTheNewest(t *testing.T) {
	superseded := prometheus.NewCounter(prometheus.CounterOpts{Name: "superseded"})
	box := &mailbox{ch: make(chan computed, 1)}
	for _, rev := range []string{"1", "2", "3"} {
		box.put(computed{policy: &inboundv1.PodPolicy{Revision: rev}}, superseded)
	}
	if got := (<-box.ch).policy.GetRevision(); got != "3" {
		t.Errorf("took revision %s, want 3", got)
	}
	select {
	case pp := <-box.ch:
		t.Errorf("a second policy %v in the mailbox", pp)
	default:
	}
	if n := testutil.ToFloat64(superseded); n != 2 {
		t.Errorf("superseded %v, want 2", n)
	}
}

func TestNewErrors(t *testing.T) {
	valid := func() Config {
		dyn := dynamicfake.NewSimpleDynamicClient(testScheme(t))
		return Config{
			Informers:        informers.NewSharedInformerFactory(fake.NewClientset(), 0),
			DynamicInformers: dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		}
	}
	for _, tc := range []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{name: "no informers", mod: func(c *Config) { c.Informers = nil }, wantErr: "Config.Informers"},
		{name: "no dynamic informers", mod: func(c *Config) { c.DynamicInformers = nil }, wantErr: "Config.DynamicInformers"},
		{name: "bad trust domain", mod: func(c *Config) { c.TrustDomain = "Cluster Local" }, wantErr: "trust domain"},
		{name: "bad default policy", mod: func(c *Config) { c.DefaultInboundPolicy = "allow" }, wantErr: "want one of all-unauthenticated"},
		{name: "bad cluster network", mod: func(c *Config) { c.ClusterNetworks = []netip.Prefix{{}} }, wantErr: "cluster network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid()
			tc.mod(&cfg)
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// TestTypedTransform: objects reach the cache typed; one that does not
// fit its type keeps its name only, so it matches and allows nothing.
func TestTypedTransform(t *testing.T) {
	transform := typed[policyv1alpha1.MeshTLSAuthentication](testLogger(t))
	good := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "policy.mesh.dev/v1alpha1", "kind": "MeshTLSAuthentication",
		"metadata": map[string]any{"namespace": testNS, "name": "good", "managedFields": []any{map[string]any{"manager": "kubectl"}}},
		"spec":     map[string]any{"identities": []any{"*"}},
	}}
	obj, err := transform(good)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := obj.(*policyv1alpha1.MeshTLSAuthentication)
	if !ok || m.Name != "good" || len(m.Spec.Identities) != 1 || m.ManagedFields != nil {
		t.Errorf("transform(good) = %#v", obj)
	}
	if again, _ := transform(m); again != m {
		t.Error("transform of a typed object is not the object itself")
	}
	bad := good.DeepCopy()
	bad.SetName("bad")
	bad.Object["spec"] = map[string]any{"identities": "*"}
	obj, err = transform(bad)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := obj.(*policyv1alpha1.MeshTLSAuthentication); !ok || m.Name != "bad" || m.Namespace != testNS || len(m.Spec.Identities) != 0 {
		t.Errorf("transform(bad) = %#v, want the name only", obj)
	}
}

// TestWatchPodRecreated: a deleted pod's stream keeps its policy and gets
// the new pod's when one of that name comes back (a StatefulSet's).
func TestWatchPodRecreated(t *testing.T) {
	h := newHarness(t, harnessOptions{objects: []runtime.Object{
		namespace(testNS, nil), pod("db-0"),
		server("db", 0, intstr.FromInt32(5432), policyv1alpha1.ProtocolOpaque, map[string]string{"app": "db"}),
	}})
	w := h.watch(t, testNS, "db-0")
	if got := w.recv(); len(got.GetPorts()) != 0 {
		t.Fatalf("policy %v, want no Server yet", got)
	}
	h.delete(t, pod("db-0"))
	start := time.Now()
	h.apply(t, pod("db-0", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "db"} }))
	want := unauthenticated(port(5432, "db", opaque))
	if diff := cmp.Diff(want, w.recvWithin(start, propagation), protocmp.Transform(), ignoreRevision); diff != "" {
		t.Errorf("policy of the new pod (-want +got):\n%s", diff)
	}
	h.waitMetric(t, "mesh_policy_updates_total", 2)
}

// TestWatchManyPods: one change to a namespace reaches every subscribed
// pod of it, each once.
func TestWatchManyPods(t *testing.T) {
	const n = 30
	objs := []runtime.Object{namespace(testNS, nil)}
	for i := range n {
		objs = append(objs, pod(fmt.Sprintf("web-%d", i)))
	}
	h := newHarness(t, harnessOptions{objects: objs})
	watches := make([]*watch, n)
	for i := range n {
		watches[i] = h.watch(t, testNS, fmt.Sprintf("web-%d", i))
		watches[i].recv()
	}
	start := time.Now()
	h.apply(t, authzPolicy("everyone", toNamespace(testNS)))
	h.apply(t, server("web-http", 0, intstr.FromString("http"), "", nil))
	for i, w := range watches {
		got := w.recvWithin(start, propagation)
		for len(got.GetPorts()) != 1 || len(got.GetPorts()[0].GetAuthorizations()) != 1 {
			// The Server may come before the policy: denied between.
			got = w.recvWithin(start, propagation)
		}
		if got.GetPorts()[0].GetPort() != 8080 {
			t.Errorf("web-%d: policy %v, want port 8080 allowed", i, got)
		}
	}
}
