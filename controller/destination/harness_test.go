package destination

import (
	"context"
	"maps"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/controller/route"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/internal/names"
)

// This file holds the test harness: the real Server behind a real gRPC
// server on 127.0.0.1:0, a real client, and shared informers over a fake
// clientset. The fake covers the controller's side of the API (list, watch,
// the caches); the real kube-apiserver path (RBAC, real EndpointSlice
// controller output, real pods) is covered by the lead's end-to-end suite
// on the local cluster.

const (
	testNS      = "shop"
	waitTimeout = 20 * time.Second
)

type harness struct {
	client *fake.Clientset
	srv    *Server
	reg    *prometheus.Registry
	addr   string // the loopback listener's, plain text (RegisterLocal)
	// meshAddr is the proxies' listener, mesh TLS with a certificate of
	// pki (Register).
	meshAddr string
	pki      *identitytest.CA
	stop     context.CancelFunc // cancels Start's context
}

type harnessOptions struct {
	objects     []runtime.Object
	trustDomain string
	queueSize   int
	noStart     bool // leave the Server unstarted: its caches never sync
	// gateway, when set, holds the Gateway API objects of a route.Index
	// the Server's Routes serves, over the same Service informers.
	gateway *gatewayfake.Clientset
	// routes, when set (and gateway is not), is the Server's RouteSource.
	routes RouteSource
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	client := fake.NewClientset(o.objects...)
	factory := informers.NewSharedInformerFactory(client, 0)
	t.Cleanup(factory.Shutdown) // last: cleanups run in reverse
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg := Config{Informers: factory, TrustDomain: o.trustDomain, QueueSize: o.queueSize, Registerer: reg}
	switch {
	case o.gateway != nil:
		cfg.Routes = runRouteIndex(t, ctx, factory, o.gateway)
	case o.routes != nil:
		cfg.Routes = o.routes
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if !o.noStart {
		if err := srv.Start(ctx); err != nil {
			t.Fatalf("Start: %v", err)
		}
	}
	h := &harness{client: client, srv: srv, reg: reg, stop: cancel, pki: identitytest.NewCA(t)}
	// The controller's two listeners: the loopback one in plain text
	// that trusts the request, and the proxies' one in mesh TLS with the
	// controller's SVID, which requires a client certificate of the CA.
	controller := h.pki.IssueSVID(t, h.pki.ID("mesh-system", "mesh-controller"))
	h.addr = serve(t, srv.RegisterLocal)
	h.meshAddr = serve(t, srv.Register, grpc.Creds(credentials.NewTLS(
		tlsconfig.MTLSServerConfig(controller, h.pki.Bundle(), tlsconfig.AuthorizeMemberOf(h.pki.TrustDomain)))))
	return h
}

// runRouteIndex runs a route.Index over f and the Gateway API objects of
// gw until ctx ends or the test does.
func runRouteIndex(t *testing.T, ctx context.Context, f informers.SharedInformerFactory, gw *gatewayfake.Clientset) *route.Index {
	t.Helper()
	g := gatewayinformers.NewSharedInformerFactory(gw, 0)
	t.Cleanup(g.Shutdown)
	ix, err := route.New(route.Config{Informers: f, Gateway: g, Coalesce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("route index: %v", err)
		}
	})
	return ix
}

// serve runs a gRPC server with opts and the service register adds on
// 127.0.0.1:0 until the test ends, and returns its address.
func serve(t *testing.T, register func(grpc.ServiceRegistrar), opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(opts...)
	register(gs)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// dialAs returns a client of the mesh TLS listener presenting a
// certificate of the harness's CA for id, as a proxy does.
func (h *harness) dialAs(t *testing.T, id spiffeid.ID) destinationv1.DestinationClient {
	t.Helper()
	svid := h.pki.IssueSVID(t, id)
	controller := h.pki.ID("mesh-system", "mesh-controller")
	conn, err := grpc.NewClient(h.meshAddr, grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.MTLSClientConfig(svid, h.pki.Bundle(), tlsconfig.AuthorizeID(controller)))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return destinationv1.NewDestinationClient(conn)
}

// dial returns a client on a connection of its own.
func (h *harness) dial(t *testing.T, opts ...grpc.DialOption) destinationv1.DestinationClient {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient(h.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return destinationv1.NewDestinationClient(conn)
}

// watch is a client's view of one stream: the set its Updates build.
type watch struct {
	t      *testing.T
	stream grpc.ServerStreamingClient[destinationv1.Update]
	cancel context.CancelFunc
	held   map[string]*destinationv1.Endpoint
	exists bool // of the last NoEndpoints
	last   *destinationv1.Update
}

// get opens a stream with a fresh client. Every Recv fails after
// waitTimeout, so a missing update fails the test instead of hanging it.
func (h *harness) get(t *testing.T, authority, contextNS string) *watch {
	t.Helper()
	return h.getWith(t, h.dial(t), authority, contextNS)
}

func (h *harness) getWith(t *testing.T, c destinationv1.DestinationClient, authority, contextNS string) *watch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	stream, err := c.Get(ctx, &destinationv1.GetDestinationRequest{Authority: authority, ContextNamespace: contextNS})
	if err != nil {
		t.Fatalf("Get(%q): %v", authority, err)
	}
	return &watch{t: t, stream: stream, cancel: cancel, held: map[string]*destinationv1.Endpoint{}}
}

// recv reads one Update and applies it to the held set.
func (w *watch) recv() *destinationv1.Update {
	w.t.Helper()
	u, err := w.stream.Recv()
	if err != nil {
		w.t.Fatalf("Recv: %v", err)
	}
	w.apply(u)
	return u
}

func (w *watch) apply(u *destinationv1.Update) {
	w.last = u
	switch k := u.Kind.(type) {
	case *destinationv1.Update_Add:
		for _, e := range k.Add.Endpoints {
			w.held[e.Address] = e
		}
	case *destinationv1.Update_Remove:
		for _, a := range k.Remove.Addresses {
			if _, ok := w.held[a]; !ok {
				w.t.Errorf("Remove of %s, which the client does not hold", a)
			}
			delete(w.held, a)
		}
	case *destinationv1.Update_NoEndpoints:
		clear(w.held)
		w.exists = k.NoEndpoints.Exists
	default:
		w.t.Fatalf("Update with no kind: %v", u)
	}
}

func (w *watch) addrs() []string { return slices.Sorted(maps.Keys(w.held)) }

// waitAddrs reads until the held set is exactly want.
func (w *watch) waitAddrs(want ...string) {
	w.t.Helper()
	slices.Sort(want)
	for !slices.Equal(w.addrs(), want) {
		w.recv()
	}
}

// recvErr reads until the stream ends and returns its error.
func (w *watch) recvErr() error {
	w.t.Helper()
	for {
		u, err := w.stream.Recv()
		if err != nil {
			return err
		}
		w.apply(u)
	}
}

// firstErr returns the error a stream ends with before any Update, failing
// the test if an Update comes first.
func (h *harness) firstErr(t *testing.T, authority, contextNS string) error {
	t.Helper()
	w := h.get(t, authority, contextNS)
	u, err := w.stream.Recv()
	if err == nil {
		t.Fatalf("Get(%q) sent %v, want an error", authority, u)
	}
	return err
}

// Kubernetes objects, created and changed through the fake clientset so the
// informers see real watch events.

func (h *harness) create(t *testing.T, objs ...runtime.Object) {
	t.Helper()
	ctx := context.Background()
	for _, obj := range objs {
		var err error
		switch o := obj.(type) {
		case *corev1.Service:
			_, err = h.client.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Pod:
			_, err = h.client.CoreV1().Pods(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Namespace:
			_, err = h.client.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *discoveryv1.EndpointSlice:
			_, err = h.client.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("create: unexpected %T", obj)
		}
		if err != nil {
			t.Fatalf("create: %v", err)
		}
	}
}

func (h *harness) update(t *testing.T, obj runtime.Object) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch o := obj.(type) {
	case *corev1.Service:
		_, err = h.client.CoreV1().Services(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
	case *corev1.Pod:
		_, err = h.client.CoreV1().Pods(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
	case *corev1.Namespace:
		_, err = h.client.CoreV1().Namespaces().Update(ctx, o, metav1.UpdateOptions{})
	case *discoveryv1.EndpointSlice:
		_, err = h.client.DiscoveryV1().EndpointSlices(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
	default:
		t.Fatalf("update: unexpected %T", obj)
	}
	if err != nil {
		t.Fatalf("update: %v", err)
	}
}

func (h *harness) deleteSlice(t *testing.T, name string) {
	t.Helper()
	if err := h.client.DiscoveryV1().EndpointSlices(testNS).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete slice: %v", err)
	}
}

func (h *harness) deleteService(t *testing.T, name string) {
	t.Helper()
	if err := h.client.CoreV1().Services(testNS).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete service: %v", err)
	}
}

// metric returns the value of the unlabelled counter or gauge name.
func (h *harness) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return 0
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Builders of the objects a cluster would hold. Pods belong to a
// Deployment's ReplicaSet unless an option says otherwise.

func service(name, clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP, Ports: ports},
	}
	if clusterIP != corev1.ClusterIPNone {
		s.Spec.ClusterIPs = []string{clusterIP}
	}
	return s
}

func servicePortNamed(name string, port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}
}

type podOption func(*corev1.Pod)

func unmeshed(p *corev1.Pod) { delete(p.Annotations, names.AnnotationProxyVersion) }

func annotated(k, v string) podOption {
	return func(p *corev1.Pod) { p.Annotations[k] = v }
}

func ownedBy(kind, name string) podOption {
	return func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, Controller: new(true)}}
		delete(p.Labels, "pod-template-hash")
	}
}

func pod(name, ip string, opts ...podOption) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   testNS,
			Name:        name,
			Labels:      map[string]string{"app": "web", "pod-template-hash": "5d9f8c7b6"},
			Annotations: map[string]string{names.AnnotationProxyVersion: "v0.1.0"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d9f8c7b6", Controller: new(true),
			}},
		},
		Spec: corev1.PodSpec{ServiceAccountName: "web"},
		Status: corev1.PodStatus{
			Phase:  corev1.PodRunning,
			PodIP:  ip,
			PodIPs: []corev1.PodIP{{IP: ip}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// cond is an EndpointSlice endpoint's conditions.
type cond struct{ ready, serving, terminating bool }

var (
	ready       = cond{ready: true, serving: true}
	notReady    = cond{}
	terminating = cond{serving: true, terminating: true} // draining, still serving
	gone        = cond{terminating: true}                // draining, not serving
)

// endpoint is p's entry in an EndpointSlice, as the EndpointSlice
// controller writes it.
func endpoint(p *corev1.Pod, c cond) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{p.Status.PodIP},
		Conditions: discoveryv1.EndpointConditions{Ready: new(c.ready), Serving: new(c.serving), Terminating: new(c.terminating)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name},
		Zone:       new("zone-a"),
	}
}

func withHostname(e discoveryv1.Endpoint, hostname string) discoveryv1.Endpoint {
	e.Hostname = new(hostname)
	return e
}

// slice is an EndpointSlice of svc whose endpoints serve the Service port
// named portName on port.
func slice(name, svc, portName string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: testNS,
			Name:      name,
			Labels:    map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new(portName), Port: new(port), Protocol: new(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}
}

func namespace(name string, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
}
