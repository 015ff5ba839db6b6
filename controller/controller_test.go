package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/goleak"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/events"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/controller/injector/injectortest"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/internal/clusternet"
	"github.com/mesh-dev/mesh/internal/names"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig runs the controller against a fake clientset and a fake
// dynamic client holding objs (the policy.mesh.dev ones in the latter), on
// loopback ports of the kernel's choosing. The fakes stand in for the API
// server here; the end-to-end suite runs the controller against a real one.
func testConfig(t *testing.T, objs ...runtime.Object) (Config, chan [2]string) {
	cfg := DefaultConfig()
	cfg.ProxyImage = "ghcr.io/mesh-dev/mesh-proxy:v0.1.0"
	cfg.WebhookAddr, cfg.AdminAddr, cfg.GRPCAddr, cfg.GRPCLocalAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.WebhookTLSDir = t.TempDir()
	cfg.IdentityAddr = "127.0.0.1:0"
	issuer := identitytest.NewSecretDir(t)
	testCA = identitytest.NewCA(t)
	testCA.WriteSecret(t, issuer)
	cfg.IdentityIssuerDir = issuer.Path
	scheme := runtime.NewScheme()
	if err := policyv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	var core, policies []runtime.Object
	for _, o := range objs {
		if _, _, err := scheme.ObjectKinds(o); err == nil {
			policies = append(policies, o)
		} else {
			core = append(core, o)
		}
	}
	cfg.client = fake.NewClientset(core...)
	cfg.dynamic = dynamicfake.NewSimpleDynamicClient(scheme, policies...)
	cfg.logTo = t.Output()
	addrs := make(chan [2]string, 5)
	cfg.onListen = func(component string, a net.Addr) { addrs <- [2]string{component, a.String()} }
	return cfg, addrs
}

// testCA is the identity PKI of the last testConfig.
var testCA *identitytest.CA

func TestRun(t *testing.T) {
	ca := injectortest.NewCA(t)
	cfg, addrs := testConfig(t,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: "shop", Annotations: map[string]string{names.AnnotationInject: names.Enabled},
		}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0", Labels: map[string]string{"app": "web"}}},
		&policyv1alpha1.Server{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-http"},
			Spec:       policyv1alpha1.ServerSpec{Port: intstr.FromInt32(8080), ProxyProtocol: policyv1alpha1.ProtocolHTTP1},
		},
	)
	cfg.DefaultInboundPolicy = names.PolicyAllAuthenticated
	ca.WriteServing(t, cfg.WebhookTLSDir)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	listening := map[string]string{}
	for len(listening) < 5 {
		select {
		case a := <-addrs:
			listening[a[0]] = a[1]
		case err := <-done:
			t.Fatalf("Run: %v", err)
		}
	}
	adminURL := "http://" + listening["admin"]

	if code, body := get(t, adminURL+"/live"); code != http.StatusOK {
		t.Errorf("/live: %d %s", code, body)
	}
	// The injector and the gRPC server listen only once their caches have
	// synced; the policy service's may take a moment longer.
	waitReady(t, adminURL+"/ready")

	pod, _ := json.Marshal(corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
	})
	review, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "1", Namespace: "shop", Operation: admissionv1.Create,
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Object:   runtime.RawExtension{Raw: pod},
		},
	})
	resp, err := ca.Client().Post("https://"+listening["injector"]+"/inject", "application/json", bytes.NewReader(review))
	if err != nil {
		t.Fatal(err)
	}
	var answer admissionv1.AdmissionReview
	err = json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	if err != nil || answer.Response == nil || len(answer.Response.Patch) == 0 {
		t.Fatalf("webhook answer %+v, %v: want a patch", answer.Response, err)
	}
	// Injected proxies know the cluster networks.
	if patch := string(answer.Response.Patch); !strings.Contains(patch, "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fd00::/8") {
		t.Errorf("the injector's patch lacks the cluster networks: %s", patch)
	}

	// The destination service answers on the loopback gRPC address (the
	// proxies' one, mesh TLS only, is TestServeGRPC's): a Service that
	// does not exist is NOT_FOUND, which proxies take as "forward as is".
	conn, err := grpc.NewClient(listening["grpc-local"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := destinationv1.NewDestinationClient(conn).Get(ctx, &destinationv1.GetDestinationRequest{Authority: "web.shop.svc.cluster.local:80"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Errorf("destination Get of a missing Service: %v, want NotFound", err)
	}
	// The fake cluster serves no Gateway API: no routes, which proxies
	// take as "forward as without routes".
	routes, err := destinationv1.NewDestinationClient(conn).Routes(ctx, &destinationv1.GetDestinationRequest{Authority: "web.shop.svc.cluster.local:80"})
	if err == nil {
		_, err = routes.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("destination Routes without the Gateway API: %v, want Unimplemented", err)
	}

	// The inbound policy service answers on the same address, with the
	// install's default policy and the pod's Server.
	policies, err := inboundv1.NewInboundPolicyClient(conn).Watch(ctx, &inboundv1.WatchRequest{Namespace: "shop", Pod: "web-0"})
	if err == nil {
		var pp *inboundv1.PodPolicy
		pp, err = policies.Recv()
		if err == nil && (pp.GetDefaultPolicy() != names.PolicyAllAuthenticated || len(pp.GetPorts()) != 1 || pp.GetPorts()[0].GetServer() != "web-http") {
			err = fmt.Errorf("policy %v", pp)
		}
	}
	if err != nil {
		t.Errorf("inbound policy Watch of shop/web-0: %v", err)
	}

	// The identity service answers over TLS as the controller's own
	// SPIFFE ID, which a proxy checks against its trust anchors.
	controllerID := testCA.ID(cfg.Namespace, names.ControllerServiceAccount)
	idConn, err := grpc.NewClient(listening["identity"], grpc.WithTransportCredentials(
		credentials.NewTLS(tlsconfig.TLSClientConfig(testCA.Bundle(), tlsconfig.AuthorizeID(controllerID)))))
	if err != nil {
		t.Fatal(err)
	}
	defer idConn.Close()
	bundles, err := identityv1.NewIdentityClient(idConn).WatchTrustBundle(ctx, &identityv1.WatchTrustBundleRequest{})
	if err == nil {
		var b *identityv1.TrustBundle
		b, err = bundles.Recv()
		if err == nil && (b.GetTrustDomain() != "cluster.local" || len(b.GetX509Authorities()) != 1) {
			err = fmt.Errorf("bundle %q with %d authorities", b.GetTrustDomain(), len(b.GetX509Authorities()))
		}
	}
	if err != nil {
		t.Errorf("identity service over TLS as %s: %v", controllerID, err)
	}

	_, metrics := get(t, adminURL+"/metrics")
	for _, want := range []string{
		`mesh_controller_injections_total{reason="none",result="injected"} 1`, "go_goroutines", "process_",
		"mesh_policy_active_streams 1", `mesh_policy_watches_total{code="OK"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestRunRoutes checks that with the Gateway API served, the controller
// serves routes over the destination stream and writes their status.
func TestRunRoutes(t *testing.T) {
	cfg, addrs := testConfig(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}, Ports: []corev1.ServicePort{{Port: 80}}},
	})
	cfg.client.(*fake.Clientset).Resources = []*metav1.APIResourceList{{
		GroupVersion: gatewayv1.GroupVersion.String(),
		APIResources: []metav1.APIResource{{Name: "httproutes", Namespaced: true, Kind: "HTTPRoute"}, {Name: "grpcroutes", Namespaced: true, Kind: "GRPCRoute"}},
	}}
	port := int32(80)
	gw := gatewayfake.NewSimpleClientset(&gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Generation: 1},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: ptrTo(gatewayv1.Group("")), Kind: ptrTo(gatewayv1.Kind("Service")), Name: "web",
			}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: &port},
			}}}}},
		},
	})
	cfg.gateway = gw
	injectortest.NewCA(t).WriteServing(t, cfg.WebhookTLSDir)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	ended := false // Run returned, and its error is reported
	defer func() {
		cancel()
		if !ended {
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}()
	var local string
	for local == "" {
		select {
		case a := <-addrs:
			if a[0] == "grpc-local" {
				local = a[1]
			}
		case err := <-done:
			ended = true
			t.Fatalf("Run: %v", err)
		}
	}
	conn, err := grpc.NewClient(local, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	stream, err := destinationv1.NewDestinationClient(conn).Routes(rctx, &destinationv1.GetDestinationRequest{Authority: "web.shop.svc.cluster.local:80", ContextNamespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		rt, err := stream.Recv()
		if err != nil {
			t.Fatalf("Routes: %v", err)
		}
		if len(rt.GetHttpRules()) == 1 && rt.GetHttpRules()[0].GetRoute().GetName() == "web" {
			break
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := gw.GatewayV1().HTTPRoutes("shop").Get(ctx, "web", metav1.GetOptions{})
		if err == nil && len(r.Status.Parents) == 1 && r.Status.Parents[0].ControllerName == "mesh.dev/mesh-controller" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no status of mesh's on the route: %+v, %v", r.Status, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{name: "no proxy image", mod: func(c *Config) { c.ProxyImage = "" }, wantErr: "--proxy-image is required"},
		{name: "bad log format", mod: func(c *Config) { c.LogFormat = "xml" }, wantErr: "--log-format"},
		{name: "bad default policy", mod: func(c *Config) { c.DefaultInboundPolicy = "allow-all" }, wantErr: "--default-inbound-policy: unknown default inbound policy"},
		{name: "no cluster networks", mod: func(c *Config) { c.ClusterNetworks = nil }, wantErr: "--cluster-networks must name at least one CIDR"},
		{name: "cluster network with host bits", mod: func(c *Config) {
			c.ClusterNetworks = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}
		}, wantErr: "--cluster-networks: 10.1.2.3/8"},
		{name: "no certificate", mod: func(*Config) {}, wantErr: "tls.crt"},
		{name: "admin address taken", mod: func(c *Config) {
			// With a valid certificate, so the injector starts and only
			// the admin listener can fail.
			injectortest.NewCA(t).WriteServing(t, c.WebhookTLSDir)
			c.AdminAddr = takenAddr(t)
		}, wantErr: "address already in use"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := testConfig(t)
			tc.mod(&cfg)
			err := Run(t.Context(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// TestRunStopsEverythingOnSetupFailure: a failure after the admin server
// and the informers have started (here the events broadcaster, passed in
// already shut down) makes Run return its error promptly, with the admin
// server closed and no goroutine of Run's left, while the caller's ctx
// still runs. Before, Run hung for ever in the informer factory's Shutdown
// (the informers' context was never cancelled), and an early return left
// the admin server serving.
func TestRunStopsEverythingOnSetupFailure(t *testing.T) {
	cfg, addrs := testConfig(t)
	injectortest.NewCA(t).WriteServing(t, cfg.WebhookTLSDir)
	cfg.events = events.NewBroadcaster(&events.EventSinkImpl{Interface: cfg.client.EventsV1()})
	cfg.events.Shutdown()
	before := goleak.IgnoreCurrent()

	done := make(chan error, 1)
	go func() { done <- Run(t.Context(), cfg) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of failing to start its events broadcaster")
	}
	if err == nil || !strings.Contains(err.Error(), "events") {
		t.Errorf("Run = %v, want the events broadcaster's error", err)
	}
	// The admin server had started: it must be closed.
	for len(addrs) > 0 {
		if a := <-addrs; a[0] == "admin" {
			if c, err := net.Dial("tcp", a[1]); err == nil {
				c.Close()
				t.Errorf("the admin server on %s still accepts connections after Run returned", a[1])
			}
		}
	}
	if err := goleak.Find(before); err != nil {
		t.Errorf("Run left goroutines behind: %v", err)
	}
}

// TestNoViz: viz runs in mesh-viz (RunViz), never in the controller,
// whose flags no longer take its address.
func TestNoViz(t *testing.T) {
	fs := pflag.NewFlagSet("mesh-controller", pflag.ContinueOnError)
	cfg := DefaultConfig()
	cfg.AddFlags(fs)
	if f := fs.Lookup("viz-addr"); f != nil {
		t.Errorf("the controller still has --viz-addr (%q): viz belongs to mesh-controller viz", f.DefValue)
	}
}

func TestPolicyFlags(t *testing.T) {
	tests := []struct {
		name         string
		args         []string
		wantPolicy   string
		wantNetworks string
		wantErr      string
	}{
		{name: "defaults", wantPolicy: "all-unauthenticated", wantNetworks: "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fd00::/8"},
		{
			name: "set", args: []string{"--default-inbound-policy=deny", "--cluster-networks=10.42.0.0/16, 2001:db8::/64"},
			wantPolicy: "deny", wantNetworks: "10.42.0.0/16,2001:db8::/64",
		},
		{name: "not a CIDR", args: []string{"--cluster-networks=10.42.0.0"}, wantErr: "not a CIDR"},
		{name: "host bits", args: []string{"--cluster-networks=10.42.0.1/16"}, wantErr: "did you mean 10.42.0.0/16"},
		{name: "empty", args: []string{"--cluster-networks="}, wantErr: "at least one CIDR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			fs := pflag.NewFlagSet("mesh-controller", pflag.ContinueOnError)
			fs.SetOutput(io.Discard)
			cfg.AddFlags(fs)
			err := fs.Parse(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := clusternet.Format(cfg.ClusterNetworks); cfg.DefaultInboundPolicy != tc.wantPolicy || got != tc.wantNetworks {
				t.Errorf("policy %q, networks %q; want %q, %q", cfg.DefaultInboundPolicy, got, tc.wantPolicy, tc.wantNetworks)
			}
			if got := fs.Lookup("cluster-networks").Value.String(); got != tc.wantNetworks {
				t.Errorf("--cluster-networks reads back as %q, want %q", got, tc.wantNetworks)
			}
		})
	}
}

// waitReady polls url until it answers ready.
func waitReady(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, url)
		if code == http.StatusOK && body == "ready\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %q", url, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func takenAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// getJSON decodes the 200 answer of url into v, retrying while the
// component answers 503 (its caches are syncing).
func getJSON(t testing.TB, url string, v any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, url)
		if code == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", url, code, body)
		}
		if err := json.Unmarshal([]byte(body), v); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, body)
		}
		return
	}
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
