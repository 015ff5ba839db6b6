package destination

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/internal/names"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	h2     = destinationv1.ProtocolHint_PROTOCOL_HINT_H2
	opaque = destinationv1.ProtocolHint_PROTOCOL_HINT_OPAQUE
	plain  = destinationv1.ProtocolHint_PROTOCOL_HINT_UNKNOWN
)

// web is the usual Service of these tests: port 80, named http, to the
// pods' port named http (8080 in the slices).
func web() *corev1.Service {
	return service("web", "10.96.0.10", servicePortNamed("http", 80, intstr.FromString("http")))
}

func TestGetSendsTheFullSetFirst(t *testing.T) {
	a, b := pod("web-a", "10.0.0.1"), pod("web-b", "10.0.0.2", unmeshed)
	c, d := pod("web-c", "10.0.0.3"), pod("web-d", "10.0.0.4")
	h := newHarness(t, harnessOptions{objects: []runtime.Object{
		namespace(testNS, nil), web(), a, b, c, d,
		slice("web-1", "web", "http", 8080, endpoint(a, ready), endpoint(b, ready), endpoint(c, notReady), endpoint(d, gone)),
	}})
	w := h.get(t, "web.shop.svc.cluster.local:80", "")
	// Only the labels a proxy reads: not the pod's name, ServiceAccount
	// or owners.
	labels := map[string]string{"namespace": testNS, "service": "web", "workload": "deployment/web"}
	want := &destinationv1.Update{Kind: &destinationv1.Update_Add{Add: &destinationv1.AddSet{Endpoints: []*destinationv1.Endpoint{{
		Address:      "10.0.0.1:8080",
		Weight:       DefaultWeight,
		Zone:         "zone-a",
		Identity:     "spiffe://cluster.local/ns/shop/sa/web",
		ProtocolHint: h2,
		Labels:       labels,
	}, {
		Address: "10.0.0.2:8080",
		Weight:  DefaultWeight,
		Zone:    "zone-a",
		Labels:  labels,
	}}}}}
	if diff := cmp.Diff(want, w.recv(), protocmp.Transform()); diff != "" {
		t.Errorf("first update (-want +got):\n%s", diff)
	}
}

// TestGetReadiness pins which EndpointSlice endpoints are handed out: ready
// ones; terminating-but-serving ones only when nothing is ready (as
// kube-proxy does, so a Service being replaced whole keeps answering while
// its old pods drain); never the rest.
func TestGetReadiness(t *testing.T) {
	a, b := pod("web-a", "10.0.0.1"), pod("web-b", "10.0.0.2")
	unset := func(e discoveryv1.Endpoint) discoveryv1.Endpoint {
		e.Conditions = discoveryv1.EndpointConditions{}
		return e
	}
	tests := []struct {
		name      string
		endpoints []discoveryv1.Endpoint
		want      []string // "" entries aside, the addresses held
	}{
		{name: "all ready", endpoints: []discoveryv1.Endpoint{endpoint(a, ready), endpoint(b, ready)}, want: []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{name: "one not ready", endpoints: []discoveryv1.Endpoint{endpoint(a, ready), endpoint(b, notReady)}, want: []string{"10.0.0.1:8080"}},
		{name: "terminating is dropped while others are ready", endpoints: []discoveryv1.Endpoint{endpoint(a, ready), endpoint(b, terminating)}, want: []string{"10.0.0.1:8080"}},
		{name: "only terminating but serving: used", endpoints: []discoveryv1.Endpoint{endpoint(a, terminating), endpoint(b, notReady)}, want: []string{"10.0.0.1:8080"}},
		{name: "terminating and not serving: never", endpoints: []discoveryv1.Endpoint{endpoint(a, gone), endpoint(b, notReady)}},
		{name: "unset conditions mean ready", endpoints: []discoveryv1.Endpoint{unset(endpoint(a, notReady))}, want: []string{"10.0.0.1:8080"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{objects: []runtime.Object{
				web(), a, b, slice("web-1", "web", "http", 8080, tc.endpoints...),
			}})
			w := h.get(t, "web.shop.svc.cluster.local:80", "")
			w.recv()
			if diff := cmp.Diff(tc.want, w.addrs()); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
			if len(tc.want) == 0 && w.last.GetNoEndpoints() == nil {
				t.Errorf("first update = %v, want NoEndpoints", w.last)
			}
		})
	}
}

func TestGetFollowsScaling(t *testing.T) {
	a, b, c := pod("web-a", "10.0.0.1"), pod("web-b", "10.0.0.2"), pod("web-c", "10.0.0.3")
	h := newHarness(t, harnessOptions{objects: []runtime.Object{
		web(), a, b, c, slice("web-1", "web", "http", 8080, endpoint(a, ready)),
	}})
	w := h.get(t, "web.shop.svc.cluster.local:80", "")
	w.waitAddrs("10.0.0.1:8080")

	h.update(t, slice("web-1", "web", "http", 8080, endpoint(a, ready), endpoint(b, ready), endpoint(c, ready)))
	w.waitAddrs("10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080")
	if got := len(w.last.GetAdd().GetEndpoints()); got != 2 {
		t.Errorf("scaling up sent %v, want an Add of the 2 new endpoints only", w.last)
	}

	h.update(t, slice("web-1", "web", "http", 8080, endpoint(a, terminating), endpoint(b, ready), endpoint(c, notReady)))
	w.waitAddrs("10.0.0.2:8080")
	if diff := cmp.Diff([]string{"10.0.0.1:8080", "10.0.0.3:8080"}, w.last.GetRemove().GetAddresses()); diff != "" {
		t.Errorf("scaling down: Remove (-want +got):\n%s", diff)
	}

	h.deleteSlice(t, "web-1")
	w.recv()
	if w.last.GetNoEndpoints() == nil || !w.exists {
		t.Errorf("scaled to zero: got %v, want NoEndpoints{exists: true}", w.last)
	}
}

// TestGetNoEndpointsThenAdd: a Service without endpoints answers at once
// with NoEndpoints and keeps the stream open; endpoints that appear later
// are pushed, and so are the Service's deletion and re-creation.
func TestGetNoEndpointsThenAdd(t *testing.T) {
	a := pod("web-a", "10.0.0.1")
	h := newHarness(t, harnessOptions{objects: []runtime.Object{web(), a}})
	w := h.get(t, "web.shop.svc.cluster.local:80", "")
	w.recv()
	if w.last.GetNoEndpoints() == nil || !w.exists {
		t.Fatalf("first update = %v, want NoEndpoints{exists: true}", w.last)
	}

	h.create(t, slice("web-1", "web", "http", 8080, endpoint(a, ready)))
	w.waitAddrs("10.0.0.1:8080")

	h.deleteService(t, "web")
	w.recv()
	if w.last.GetNoEndpoints() == nil || w.exists {
		t.Errorf("service deleted: got %v, want NoEndpoints{exists: false}", w.last)
	}
	h.create(t, web())
	w.waitAddrs("10.0.0.1:8080")
}

// TestGetNamedTargetPort: a named target port resolves per pod, which the
// EndpointSlice controller records as one slice per resolved port; each
// Service port finds its own slice port by name.
func TestGetNamedTargetPort(t *testing.T) {
	a, b := pod("web-a", "10.0.0.1"), pod("web-b", "10.0.0.2")
	svc := web()
	svc.Spec.Ports = append(svc.Spec.Ports, servicePortNamed("admin", 9000, intstr.FromInt32(9990)))
	sliceA := slice("web-1", "web", "http", 8080, endpoint(a, ready))
	sliceA.Ports = append(sliceA.Ports, discoveryv1.EndpointPort{Name: new("admin"), Port: new(int32(9990))})
	sliceB := slice("web-2", "web", "http", 8081, endpoint(b, ready))
	sliceB.Ports = append(sliceB.Ports, discoveryv1.EndpointPort{Name: new("admin"), Port: new(int32(9990))})
	h := newHarness(t, harnessOptions{objects: []runtime.Object{svc, a, b, sliceA, sliceB}})

	tests := []struct {
		name      string
		authority string
		want      []string
	}{
		{name: "http resolves per pod", authority: "web.shop.svc.cluster.local:80", want: []string{"10.0.0.1:8080", "10.0.0.2:8081"}},
		{name: "admin by its own name", authority: "web.shop.svc.cluster.local:9000", want: []string{"10.0.0.1:9990", "10.0.0.2:9990"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := h.get(t, tc.authority, "")
			w.recv()
			if diff := cmp.Diff(tc.want, w.addrs()); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGetHeadless: every pod of a headless Service has a name of its own
// that resolves to it alone, and the port is the one asked for, as a client
// without the mesh connects to the pod directly.
func TestGetHeadless(t *testing.T) {
	db0 := pod("db-0", "10.0.1.0", ownedBy("StatefulSet", "db"))
	db1 := pod("db-1", "10.0.1.1", ownedBy("StatefulSet", "db"))
	h := newHarness(t, harnessOptions{objects: []runtime.Object{
		service("db", corev1.ClusterIPNone, servicePortNamed("pg", 5432, intstr.FromInt32(5432))),
		db0, db1,
		slice("db-1", "db", "pg", 5432, withHostname(endpoint(db0, ready), "db-0"), withHostname(endpoint(db1, ready), "db-1")),
	}})
	tests := []struct {
		name      string
		authority string
		contextNS string
		want      []string
	}{
		{name: "pod FQDN", authority: "db-0.db.shop.svc.cluster.local:5432", want: []string{"10.0.1.0:5432"}},
		{name: "pod name through the search path", authority: "db-1.db:5432", contextNS: testNS, want: []string{"10.0.1.1:5432"}},
		{name: "other port of a pod", authority: "db-0.db.shop.svc.cluster.local:7000", want: []string{"10.0.1.0:7000"}},
		{name: "the service: every pod", authority: "db.shop.svc.cluster.local:5432", want: []string{"10.0.1.0:5432", "10.0.1.1:5432"}},
		{name: "pod not there yet", authority: "db-2.db.shop.svc.cluster.local:5432"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := h.get(t, tc.authority, tc.contextNS)
			w.recv()
			if diff := cmp.Diff(tc.want, w.addrs()); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
			if got := w.held["10.0.1.0:5432"].GetLabels()["workload"]; len(tc.want) > 0 && tc.want[0] == "10.0.1.0:5432" && got != "statefulset/db" {
				t.Errorf("workload label = %q, want statefulset/db", got)
			}
		})
	}
}

func TestGetResolvesNames(t *testing.T) {
	a := pod("web-a", "10.0.0.1")
	other := service("web", "10.96.0.20", servicePortNamed("http", 80, intstr.FromString("http")))
	other.Namespace = "other" // same name, no endpoints: resolving there gives NoEndpoints
	dual := service("dual", "10.96.0.11", servicePortNamed("", 80, intstr.FromInt32(8080)))
	dual.Spec.ClusterIPs = []string{"10.96.0.11", "fd00::11"}
	dual.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	dualV6 := slice("dual-2", "dual", "", 8080, discoveryv1.Endpoint{Addresses: []string{"fd00::a:1"}})
	dualV6.AddressType = discoveryv1.AddressTypeIPv6 // the same pod: only the primary family counts
	h := newHarness(t, harnessOptions{objects: []runtime.Object{
		web(), other, dual, a,
		slice("web-1", "web", "http", 8080, endpoint(a, ready)),
		slice("dual-1", "dual", "", 8080, endpoint(a, ready)), dualV6,
	}})
	tests := []struct {
		name      string
		authority string
		contextNS string
		want      []string
	}{
		{name: "FQDN", authority: "web.shop.svc.cluster.local:80", want: []string{"10.0.0.1:8080"}},
		{name: "short name in the caller's namespace", authority: "web:80", contextNS: testNS, want: []string{"10.0.0.1:8080"}},
		{name: "short name in another namespace", authority: "web:80", contextNS: "other"},
		{name: "name.namespace", authority: "web.shop:80", contextNS: "other", want: []string{"10.0.0.1:8080"}},
		{name: "name.namespace.svc", authority: "web.shop.svc:80", want: []string{"10.0.0.1:8080"}},
		{name: "absolute FQDN", authority: "web.shop.svc.cluster.local.:80", contextNS: "other", want: []string{"10.0.0.1:8080"}},
		{name: "mixed case", authority: "WEB.Shop:80", want: []string{"10.0.0.1:8080"}},
		{name: "cluster IP", authority: "10.96.0.10:80", want: []string{"10.0.0.1:8080"}},
		{name: "second cluster IP, IPv6", authority: "[fd00::11]:80", want: []string{"10.0.0.1:8080"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := h.get(t, tc.authority, tc.contextNS)
			w.recv()
			if diff := cmp.Diff(tc.want, w.addrs()); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGetNotFound: what the mesh does not know is answered at once, so the
// proxy forwards to the original address without waiting.
func TestGetNotFound(t *testing.T) {
	ext := service("ext", "", servicePortNamed("https", 443, intstr.FromInt32(443)))
	ext.Spec.Type, ext.Spec.ExternalName = corev1.ServiceTypeExternalName, "api.example.com"
	hostNet := pod("agent", "192.168.1.5", func(p *corev1.Pod) { p.Spec.HostNetwork = true })
	done := pod("job-x", "10.0.0.9", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })
	h := newHarness(t, harnessOptions{objects: []runtime.Object{web(), ext, hostNet, done}})
	tests := []struct {
		name      string
		authority string
		contextNS string
		wantCode  codes.Code
		wantIn    string // in the status message
	}{
		{name: "unknown service", authority: "nope.shop.svc.cluster.local:80", wantCode: codes.NotFound},
		{name: "name outside the cluster", authority: "www.example.com:443", wantCode: codes.NotFound},
		{name: "ExternalName service", authority: "ext.shop.svc.cluster.local:443", wantCode: codes.NotFound, wantIn: "ExternalName"},
		{name: "port the service lacks", authority: "web.shop.svc.cluster.local:81", wantCode: codes.NotFound, wantIn: "no TCP port 81"},
		{name: "short name without a namespace", authority: "web:80", wantCode: codes.NotFound},
		{name: "pod name of a service with a cluster IP", authority: "web-a.web.shop.svc.cluster.local:80", wantCode: codes.NotFound},
		{name: "unknown IP", authority: "10.1.2.3:80", wantCode: codes.NotFound},
		{name: "host-network pod's IP", authority: "192.168.1.5:80", wantCode: codes.NotFound},
		{name: "finished pod's IP", authority: "10.0.0.9:80", wantCode: codes.NotFound},
		{name: "no port", authority: "web.shop.svc.cluster.local", wantCode: codes.InvalidArgument},
		{name: "empty", authority: "", wantCode: codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := h.firstErr(t, tc.authority, tc.contextNS)
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("answered in %v, want at once", took)
			}
			st := status.Convert(err)
			if st.Code() != tc.wantCode || !strings.Contains(st.Message(), tc.wantIn) {
				t.Errorf("error = %v, want %v containing %q", err, tc.wantCode, tc.wantIn)
			}
		})
	}
}

// TestGetIdentityAndHints: identity and the H2 hint for meshed pods only;
// OPAQUE wherever config.mesh.dev/opaque-ports lists the port, on the pod
// (target port), the Service (service port) or their namespace.
func TestGetIdentityAndHints(t *testing.T) {
	const id = "spiffe://example.org/ns/shop/sa/web"
	tests := []struct {
		name         string
		podOptions   []podOption
		svcAnnots    map[string]string
		nsAnnots     map[string]string
		wantIdentity string
		wantHint     destinationv1.ProtocolHint
	}{
		{name: "meshed", wantIdentity: id, wantHint: h2},
		{name: "not meshed", podOptions: []podOption{unmeshed}, wantHint: plain},
		{name: "default service account", podOptions: []podOption{func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" }},
			wantIdentity: "spiffe://example.org/ns/shop/sa/default", wantHint: h2},
		{name: "pod lists the target port", podOptions: []podOption{annotated(names.AnnotationOpaquePorts, "3306,8000-8100")}, wantIdentity: id, wantHint: opaque},
		{name: "pod lists another port", podOptions: []podOption{annotated(names.AnnotationOpaquePorts, "3306")}, wantIdentity: id, wantHint: h2},
		{name: "unmeshed pod lists the port", podOptions: []podOption{unmeshed, annotated(names.AnnotationOpaquePorts, "8080")}, wantHint: opaque},
		{name: "service lists the service port", svcAnnots: map[string]string{names.AnnotationOpaquePorts: "80"}, wantIdentity: id, wantHint: opaque},
		{name: "service lists the target port only", svcAnnots: map[string]string{names.AnnotationOpaquePorts: "8080"}, wantIdentity: id, wantHint: h2},
		{name: "namespace lists the port", nsAnnots: map[string]string{names.AnnotationOpaquePorts: "8080"}, wantIdentity: id, wantHint: opaque},
		{name: "pod's own empty list overrides the namespace's", podOptions: []podOption{annotated(names.AnnotationOpaquePorts, "")},
			nsAnnots: map[string]string{names.AnnotationOpaquePorts: "8080"}, wantIdentity: id, wantHint: h2},
		{name: "malformed annotation is ignored", podOptions: []podOption{annotated(names.AnnotationOpaquePorts, "80-x")}, wantIdentity: id, wantHint: h2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := pod("web-a", "10.0.0.1", tc.podOptions...)
			svc := web()
			svc.Annotations = tc.svcAnnots
			h := newHarness(t, harnessOptions{trustDomain: "example.org", objects: []runtime.Object{
				namespace(testNS, tc.nsAnnots), svc, p, slice("web-1", "web", "http", 8080, endpoint(p, ready)),
			}})
			w := h.get(t, "web.shop.svc.cluster.local:80", "")
			w.recv()
			got := w.held["10.0.0.1:8080"]
			if got.GetIdentity() != tc.wantIdentity || got.GetProtocolHint() != tc.wantHint {
				t.Errorf("identity, hint = %q, %v; want %q, %v", got.GetIdentity(), got.GetProtocolHint(), tc.wantIdentity, tc.wantHint)
			}
		})
	}
}

// TestGetPushesMetadataChanges: a change that moves no endpoint but changes
// what the proxy should know (the namespace's opaque ports, the pod being
// meshed) re-sends the endpoint.
func TestGetPushesMetadataChanges(t *testing.T) {
	a := pod("web-a", "10.0.0.1", unmeshed)
	h := newHarness(t, harnessOptions{objects: []runtime.Object{
		namespace(testNS, nil), web(), a, slice("web-1", "web", "http", 8080, endpoint(a, ready)),
	}})
	w := h.get(t, "web.shop.svc.cluster.local:80", "")
	w.recv()
	if got := w.held["10.0.0.1:8080"].GetProtocolHint(); got != plain {
		t.Fatalf("hint = %v, want %v", got, plain)
	}

	h.update(t, namespace(testNS, map[string]string{names.AnnotationOpaquePorts: "8080"}))
	w.recv()
	if got := w.last.GetAdd().GetEndpoints(); len(got) != 1 || got[0].GetProtocolHint() != opaque {
		t.Fatalf("after annotating the namespace: %v, want an Add with the endpoint OPAQUE", w.last)
	}

	h.update(t, namespace(testNS, nil))
	meshed := pod("web-a", "10.0.0.1")
	h.update(t, meshed)
	// The namespace and pod informers deliver in no set order: the pod may
	// show meshed while the namespace still reads opaque. Both must land;
	// recv fails the test if they do not within waitTimeout.
	for e := w.held["10.0.0.1:8080"]; e.GetIdentity() == "" || e.GetProtocolHint() != h2; e = w.held["10.0.0.1:8080"] {
		w.recv()
	}
}

// TestGetPodArrivesAfterSlice: informers of different kinds deliver in no
// set order, so a slice may name a pod the cache does not have yet; the
// endpoint goes out without identity and is re-sent once the pod is known.
func TestGetPodArrivesAfterSlice(t *testing.T) {
	a := pod("web-a", "10.0.0.1")
	h := newHarness(t, harnessOptions{objects: []runtime.Object{web(), slice("web-1", "web", "http", 8080, endpoint(a, ready))}})
	w := h.get(t, "web.shop.svc.cluster.local:80", "")
	w.recv()
	if got := w.held["10.0.0.1:8080"]; got.GetIdentity() != "" || got.GetLabels()["workload"] != "" {
		t.Fatalf("endpoint of an unknown pod = %v, want no identity and no workload label", got)
	}
	h.create(t, a)
	w.recv()
	if got := w.held["10.0.0.1:8080"]; got.GetIdentity() != "spiffe://cluster.local/ns/shop/sa/web" || got.GetLabels()["workload"] != "deployment/web" {
		t.Errorf("endpoint once the pod is known = %v, want its identity and workload label", got)
	}
}

func TestGetPodIP(t *testing.T) {
	a := pod("web-a", "10.0.0.1")
	h := newHarness(t, harnessOptions{objects: []runtime.Object{a}})
	w := h.get(t, "10.0.0.1:9999", "")
	want := &destinationv1.Update{Kind: &destinationv1.Update_Add{Add: &destinationv1.AddSet{Endpoints: []*destinationv1.Endpoint{{
		Address:      "10.0.0.1:9999",
		Weight:       DefaultWeight,
		Identity:     "spiffe://cluster.local/ns/shop/sa/web",
		ProtocolHint: h2,
		Labels:       map[string]string{"namespace": testNS, "workload": "deployment/web"},
	}}}}}
	if diff := cmp.Diff(want, w.recv(), protocmp.Transform()); diff != "" {
		t.Errorf("first update (-want +got):\n%s", diff)
	}

	if err := h.client.CoreV1().Pods(testNS).Delete(context.Background(), "web-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w.recv()
	if w.last.GetNoEndpoints() == nil || w.exists {
		t.Errorf("pod deleted: got %v, want NoEndpoints{exists: false}", w.last)
	}
}

func TestGetWorkloadLabels(t *testing.T) {
	tests := []struct {
		name string
		opts []podOption
		want map[string]string
	}{
		{name: "deployment", want: map[string]string{"workload": "deployment/web"}},
		{name: "statefulset", opts: []podOption{ownedBy("StatefulSet", "db")}, want: map[string]string{"workload": "statefulset/db"}},
		{name: "daemonset", opts: []podOption{ownedBy("DaemonSet", "agent")}, want: map[string]string{"workload": "daemonset/agent"}},
		{name: "bare replicaset", opts: []podOption{ownedBy("ReplicaSet", "rs")}, want: map[string]string{"workload": "replicaset/rs"}},
		{name: "no owner", opts: []podOption{func(p *corev1.Pod) { p.OwnerReferences = nil }}, want: map[string]string{"workload": "pod/web-a"}},
		// Not a label name, but a fine label value.
		{name: "owner kind that is no label name", opts: []podOption{ownedBy("Odd-Kind", "x")}, want: map[string]string{"workload": "odd-kind/x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := pod("web-a", "10.0.0.1", tc.opts...)
			h := newHarness(t, harnessOptions{objects: []runtime.Object{web(), p, slice("web-1", "web", "http", 8080, endpoint(p, ready))}})
			w := h.get(t, "web.shop.svc.cluster.local:80", "")
			w.recv()
			// Only what proxies read: no pod name, ServiceAccount or owner.
			want := map[string]string{"namespace": testNS, "service": "web"}
			for k, v := range tc.want {
				want[k] = v
			}
			if diff := cmp.Diff(want, w.held["10.0.0.1:8080"].GetLabels()); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
		})
	}
}

// bigSlice is a slice of n ready endpoints at 10.<octet>.x.y:8080, not
// backed by pods (as for a Service without a selector), so updates are
// large without creating pods.
func bigSlice(octet, n int) *discoveryv1.EndpointSlice {
	eps := make([]discoveryv1.Endpoint, n)
	for i := range eps {
		eps[i] = discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", octet, i/250, i%250+1)},
			Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
			Zone:       new("zone-a"),
		}
	}
	return slice("web-1", "web", "http", 8080, eps...)
}

// TestSlowSubscriberIsDisconnected: a client that stops reading fills its
// queue and is cut off with RESOURCE_EXHAUSTED and counted, while the
// informers keep delivering and another client on the same destination
// gets every change.
func TestSlowSubscriberIsDisconnected(t *testing.T) {
	const n = 1000 // endpoints a set: an Add is tens of KB
	h := newHarness(t, harnessOptions{queueSize: 1, objects: []runtime.Object{web(), bigSlice(1, n)}})
	// A static 64 KiB window (no BDP growth) so the slow client's unread
	// updates back up into the server within a few of them.
	slowClient := h.dial(t, grpc.WithInitialWindowSize(1<<16-1), grpc.WithInitialConnWindowSize(1<<16-1))
	slow := h.getWith(t, slowClient, "web.shop.svc.cluster.local:80", "")
	slow.recv() // subscribed; never reads again until the end
	fast := h.get(t, "web.shop.svc.cluster.local:80", "")
	fast.recv()
	eventually(t, "two active streams", func() bool { return h.metric(t, "mesh_destination_active_streams") == 2 })

	want := func(octet int) []string {
		addrs := make([]string, n)
		for i := range addrs {
			addrs[i] = fmt.Sprintf("10.%d.%d.%d:8080", octet, i/250, i%250+1)
		}
		return addrs
	}
	i := 0
	for ; h.metric(t, "mesh_destination_slow_subscribers_disconnected_total") == 0; i++ {
		if i == 50 {
			t.Fatal("the slow subscriber was not disconnected after 50 updates")
		}
		octet := 2 + i%2
		h.update(t, bigSlice(octet, n))
		fast.waitAddrs(want(octet)...) // the informers were not held up
	}
	t.Logf("disconnected after %d updates", i)

	err := slow.recvErr()
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("slow stream ended with %v, want ResourceExhausted", err)
	}
	eventually(t, "one active stream", func() bool { return h.metric(t, "mesh_destination_active_streams") == 1 })
	h.update(t, bigSlice(9, 3))
	fast.waitAddrs(want(9)[:3]...)
	if got := h.metric(t, "mesh_destination_slow_subscribers_disconnected_total"); got != 1 {
		t.Errorf("slow subscribers disconnected = %v, want 1", got)
	}
}

func TestGetUnavailableUntilSynced(t *testing.T) {
	h := newHarness(t, harnessOptions{noStart: true, objects: []runtime.Object{web()}})
	if err := h.srv.Ready(); err == nil {
		t.Error("Ready() = nil before Start")
	}
	if err := h.firstErr(t, "web.shop.svc.cluster.local:80", ""); status.Code(err) != codes.Unavailable {
		t.Errorf("error = %v, want Unavailable", err)
	}
}

// TestStopEndsStreams: when Start's context is done the streams end, so a
// GracefulStop after it does not wait forever.
func TestStopEndsStreams(t *testing.T) {
	h := newHarness(t, harnessOptions{objects: []runtime.Object{web()}})
	if err := h.srv.Ready(); err != nil {
		t.Errorf("Ready() = %v after Start", err)
	}
	w := h.get(t, "web.shop.svc.cluster.local:80", "")
	w.recv()
	h.stop()
	if err := w.recvErr(); status.Code(err) != codes.Unavailable {
		t.Errorf("error = %v, want Unavailable", err)
	}
	if err := h.firstErr(t, "web.shop.svc.cluster.local:80", ""); status.Code(err) != codes.Unavailable {
		t.Errorf("new stream after stop: error = %v, want Unavailable", err)
	}
}

func TestActiveStreamsMetric(t *testing.T) {
	h := newHarness(t, harnessOptions{objects: []runtime.Object{web()}})
	w1 := h.get(t, "web.shop.svc.cluster.local:80", "")
	w1.recv()
	w2 := h.get(t, "10.96.0.10:80", "")
	w2.recv()
	eventually(t, "two active streams", func() bool { return h.metric(t, "mesh_destination_active_streams") == 2 })
	w1.cancel()
	eventually(t, "one active stream", func() bool { return h.metric(t, "mesh_destination_active_streams") == 1 })
}

func TestNewRejectsBadConfig(t *testing.T) {
	factory := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	t.Cleanup(factory.Shutdown)
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "no informers", cfg: Config{}},
		{name: "bad trust domain", cfg: Config{Informers: factory, TrustDomain: "Not A Domain"}},
		{name: "negative queue", cfg: Config{Informers: factory, QueueSize: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Error("New succeeded, want an error")
			}
		})
	}
}
