package policy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

// This file holds the test harness: the real Server behind a real gRPC
// server on 127.0.0.1:0, a real client, and informers over client-go's
// fake clientset, fake dynamic client and the Gateway API's fake
// clientset, changed through their APIs so the informers see real watch
// events. The real API server (RBAC, CRD
// schemas and CEL rules) is the end-to-end suite's.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitTimeout = 20 * time.Second

type harness struct {
	client  *fake.Clientset
	dynamic *dynamicfake.FakeDynamicClient
	gateway *gatewayfake.Clientset
	srv     *Server
	reg     *prometheus.Registry
	logs    *logBuffer
	addr    string // the loopback listener's, plain text (RegisterLocal)
	// meshAddr is the proxies' listener, mesh TLS with a certificate of
	// pki (Register).
	meshAddr string
	pki      *identitytest.CA
	stop     context.CancelFunc // cancels Run's context
	done     chan error         // Run's result
}

type harnessOptions struct {
	// objects are Namespaces, Pods, policy.mesh.dev objects and Gateway
	// API routes.
	objects       []runtime.Object
	defaultPolicy string
	noRun         bool // leave the Server not running: its caches never sync
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	var core, policies, routes []runtime.Object
	for _, obj := range o.objects {
		if _, ok := obj.(metav1.Object); !ok {
			t.Fatalf("newHarness: %T is not an object", obj)
		}
		switch obj.(type) {
		case *corev1.Namespace, *corev1.Pod:
			core = append(core, obj)
		case *gatewayv1.HTTPRoute, *gatewayv1.GRPCRoute:
			routes = append(routes, obj)
		default:
			policies = append(policies, obj)
		}
	}
	client := fake.NewClientset(core...)
	dyn := dynamicfake.NewSimpleDynamicClient(testScheme(t), policies...)
	gw := gatewayfake.NewSimpleClientset(routes...)
	factory := informers.NewSharedInformerFactory(client, 0)
	dynFactory := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	gwFactory := gatewayinformers.NewSharedInformerFactory(gw, 0)
	// Cleanups run last first: the factories go after Run has returned.
	t.Cleanup(factory.Shutdown)
	t.Cleanup(dynFactory.Shutdown)
	t.Cleanup(gwFactory.Shutdown)
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	srv, err := New(Config{
		Informers: factory, DynamicInformers: dynFactory, StatusClient: dyn, DefaultInboundPolicy: o.defaultPolicy,
		Gateway: gwFactory, GatewayClient: gw,
		statusRetry: 50 * time.Millisecond,
		Registerer:  reg, Log: slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h := &harness{client: client, dynamic: dyn, gateway: gw, srv: srv, reg: reg, logs: logs, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	if o.noRun {
		h.done <- nil
	} else {
		go func() { h.done <- srv.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		if err := <-h.done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if !o.noRun {
		select {
		case <-srv.Synced():
		case <-time.After(waitTimeout):
			t.Fatal("caches did not sync")
		}
	}

	// The controller's two listeners: the loopback one in plain text
	// that checks nobody, and the proxies' one in mesh TLS with the
	// controller's SVID, which requires a client certificate of the CA.
	h.pki = identitytest.NewCA(t)
	controller := h.pki.IssueSVID(t, h.pki.ID("mesh-system", "mesh-controller"))
	h.addr = h.serve(t, srv.RegisterLocal)
	h.meshAddr = h.serve(t, srv.Register, grpc.Creds(credentials.NewTLS(
		tlsconfig.MTLSServerConfig(controller, h.pki.Bundle(), tlsconfig.AuthorizeMemberOf(h.pki.TrustDomain)))))
	return h
}

// serve runs a gRPC server with opts and the service register adds on
// 127.0.0.1:0 until the test ends, and returns its address.
func (h *harness) serve(t *testing.T, register func(grpc.ServiceRegistrar), opts ...grpc.ServerOption) string {
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

func testScheme(t testing.TB) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := policyv1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// dial returns a client on a connection of its own.
func (h *harness) dial(t *testing.T) inboundv1.InboundPolicyClient {
	t.Helper()
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return inboundv1.NewInboundPolicyClient(conn)
}

// watch is one stream. Every Recv fails after waitTimeout, so a missing
// update fails the test instead of hanging it.
type watch struct {
	t      *testing.T
	stream grpc.ServerStreamingClient[inboundv1.PodPolicy]
	cancel context.CancelFunc
}

// dialAs returns a client of the mesh TLS listener presenting a
// certificate of the harness's CA for id.
func (h *harness) dialAs(t *testing.T, id spiffeid.ID) inboundv1.InboundPolicyClient {
	t.Helper()
	svid := h.pki.IssueSVID(t, id)
	controller := h.pki.ID("mesh-system", "mesh-controller")
	conn, err := grpc.NewClient(h.meshAddr, grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.MTLSClientConfig(svid, h.pki.Bundle(), tlsconfig.AuthorizeID(controller)))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return inboundv1.NewInboundPolicyClient(conn)
}

func (h *harness) watch(t *testing.T, ns, pod string) *watch {
	t.Helper()
	return watchWith(t, h.dial(t), ns, pod)
}

// watchAs watches over the mesh TLS listener as id, as a proxy does.
func (h *harness) watchAs(t *testing.T, id spiffeid.ID, ns, pod string) *watch {
	t.Helper()
	return watchWith(t, h.dialAs(t, id), ns, pod)
}

func watchWith(t *testing.T, c inboundv1.InboundPolicyClient, ns, pod string) *watch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	stream, err := c.Watch(ctx, &inboundv1.WatchRequest{Namespace: ns, Pod: pod})
	if err != nil {
		t.Fatalf("Watch(%s/%s): %v", ns, pod, err)
	}
	return &watch{t: t, stream: stream, cancel: cancel}
}

func (w *watch) recv() *inboundv1.PodPolicy {
	w.t.Helper()
	pp, err := w.stream.Recv()
	if err != nil {
		w.t.Fatalf("Recv: %v", err)
	}
	return pp
}

// recvWithin reads the next policy and fails the test unless it came
// within d of since: the contract is that a change reaches proxies in well
// under a second.
func (w *watch) recvWithin(since time.Time, d time.Duration) *inboundv1.PodPolicy {
	w.t.Helper()
	pp := w.recv()
	if took := time.Since(since); took > d {
		w.t.Errorf("the update took %v, want under %v", took, d)
	}
	return pp
}

// firstErr returns the error the stream ends with, failing the test if a
// policy comes first.
func (w *watch) firstErr() error {
	w.t.Helper()
	pp, err := w.stream.Recv()
	if err == nil {
		w.t.Fatalf("got %v, want an error", pp)
	}
	return err
}

// Changes through the fake clients.

// apply creates obj, or updates it when it exists.
func (h *harness) apply(t *testing.T, obj runtime.Object) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		if _, err = h.client.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			_, err = h.client.CoreV1().Namespaces().Update(ctx, o, metav1.UpdateOptions{})
		}
	case *corev1.Pod:
		if _, err = h.client.CoreV1().Pods(o.Namespace).Create(ctx, o, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			_, err = h.client.CoreV1().Pods(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
		}
	case *gatewayv1.HTTPRoute:
		c := h.gateway.GatewayV1().HTTPRoutes(o.Namespace)
		if _, err = c.Create(ctx, o, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			_, err = c.Update(ctx, o, metav1.UpdateOptions{})
		}
	case *gatewayv1.GRPCRoute:
		c := h.gateway.GatewayV1().GRPCRoutes(o.Namespace)
		if _, err = c.Create(ctx, o, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			_, err = c.Update(ctx, o, metav1.UpdateOptions{})
		}
	default:
		u, gvr := h.unstructured(t, obj)
		r := h.dynamic.Resource(gvr).Namespace(u.GetNamespace())
		if _, err = r.Create(ctx, u, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			_, err = r.Update(ctx, u, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		t.Fatalf("apply %T: %v", obj, err)
	}
}

func (h *harness) delete(t *testing.T, obj runtime.Object) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch o := obj.(type) {
	case *corev1.Pod:
		err = h.client.CoreV1().Pods(o.Namespace).Delete(ctx, o.Name, metav1.DeleteOptions{})
	case *gatewayv1.HTTPRoute:
		err = h.gateway.GatewayV1().HTTPRoutes(o.Namespace).Delete(ctx, o.Name, metav1.DeleteOptions{})
	case *gatewayv1.GRPCRoute:
		err = h.gateway.GatewayV1().GRPCRoutes(o.Namespace).Delete(ctx, o.Name, metav1.DeleteOptions{})
	default:
		u, gvr := h.unstructured(t, obj)
		err = h.dynamic.Resource(gvr).Namespace(u.GetNamespace()).Delete(ctx, u.GetName(), metav1.DeleteOptions{})
	}
	if err != nil {
		t.Fatalf("delete %T: %v", obj, err)
	}
}

// unstructured converts a policy.mesh.dev object for the dynamic client.
func (h *harness) unstructured(t *testing.T, obj runtime.Object) (*unstructured.Unstructured, schema.GroupVersionResource) {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	var gvr schema.GroupVersionResource
	switch obj.(type) {
	case *policyv1alpha1.Server:
		u.SetKind(policyv1alpha1.KindServer)
		gvr = policyv1alpha1.ServersResource
	case *policyv1alpha1.MeshTLSAuthentication:
		u.SetKind(policyv1alpha1.KindMeshTLSAuthentication)
		gvr = policyv1alpha1.MeshTLSAuthenticationsResource
	case *policyv1alpha1.NetworkAuthentication:
		u.SetKind(policyv1alpha1.KindNetworkAuthentication)
		gvr = policyv1alpha1.NetworkAuthenticationsResource
	case *policyv1alpha1.AuthorizationPolicy:
		u.SetKind(policyv1alpha1.KindAuthorizationPolicy)
		gvr = policyv1alpha1.AuthorizationPoliciesResource
	case *policyv1alpha1.HTTPLocalRateLimitPolicy:
		u.SetKind(policyv1alpha1.KindHTTPLocalRateLimitPolicy)
		gvr = policyv1alpha1.HTTPLocalRateLimitPoliciesResource
	default:
		t.Fatalf("unexpected %T", obj)
	}
	u.SetAPIVersion(policyv1alpha1.SchemeGroupVersion.String())
	return u, gvr
}

// metric returns the value of the counter or gauge name with the given
// label values (name=value pairs), 0 when it has none.
func (h *harness) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// waitMetric waits until the unlabelled counter or gauge name is want: a
// stream's sender counts an update once Send returns, which can be after
// the client has it.
func (h *harness) waitMetric(t *testing.T, name string, want float64) {
	t.Helper()
	var got float64
	deadline := time.Now().Add(waitTimeout)
	for got = h.metric(t, name); got != want; got = h.metric(t, name) {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v, want %v", name, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A value that went past want would show here on a second look.
	time.Sleep(50 * time.Millisecond)
	if got = h.metric(t, name); got != want {
		t.Fatalf("%s is %v, want %v", name, got, want)
	}
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

// testLogger logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// logBuffer keeps what the server logged, for tests of what it warns
// about; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// count returns how many lines contain s.
func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}
