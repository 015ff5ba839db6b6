package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
)

// The tests of `mesh authz` format hand-built PodPolicy values against
// golden files, find pods in a fake clientset, and ask a real gRPC server
// in the test for the policy. The port-forward to the real controller is
// exercised by the end-to-end suite.

// Builders of the policy's messages.

func meshTLS(name string, patterns ...string) *inboundv1.Authentication {
	return &inboundv1.Authentication{Name: name, Kind: &inboundv1.Authentication_MeshTls{
		MeshTls: &inboundv1.Identities{Patterns: patterns},
	}}
}

func networks(name string, nets ...*inboundv1.Network) *inboundv1.Authentication {
	return &inboundv1.Authentication{Name: name, Kind: &inboundv1.Authentication_Networks{
		Networks: &inboundv1.Networks{Networks: nets},
	}}
}

func authorization(name string, required ...*inboundv1.Authentication) *inboundv1.Authorization {
	return &inboundv1.Authorization{Name: name, Required: required}
}

// authzPod returns a running meshed pod of shop whose app container
// declares ports.
func authzPod(name string, ports ...corev1.ContainerPort) *corev1.Pod {
	p := testPod("shop", name, true)
	p.Spec.Containers[0].Ports = ports
	return p
}

// authzCase is a policy and the pod it is for, with the golden file of
// its table.
type authzCase struct {
	name   string
	pod    *corev1.Pod
	picked *pickedPod
	policy *inboundv1.PodPolicy
}

func authzCases() []authzCase {
	always := corev1.ContainerRestartPolicyAlways
	web := authzPod("web-5d8f7c-a",
		corev1.ContainerPort{Name: "http", ContainerPort: 8080},
		corev1.ContainerPort{Name: "admin", ContainerPort: 9090},
		corev1.ContainerPort{ContainerPort: 4000},
		corev1.ContainerPort{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}, // not proxied
	)
	// A native sidecar's port is the pod's; the proxy's own ports are not.
	web.Spec.InitContainers[0].Ports = []corev1.ContainerPort{{Name: "admin", ContainerPort: 4191}}
	web.Spec.InitContainers = append(web.Spec.InitContainers, corev1.Container{
		Name: "log-shipper", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "logs", ContainerPort: 5000}},
	})

	unmeshed := testPod("shop", "legacy-0", false)
	unmeshed.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}

	return []authzCase{{
		name:   "servers",
		pod:    web,
		picked: &pickedPod{Workload: authzTarget{Kind: "deployment", Name: "web"}, Running: 2},
		policy: &inboundv1.PodPolicy{
			Ports: []*inboundv1.PortPolicy{{
				Port: 9090, Server: "web-admin", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_GRPC,
			}, {
				Port: 8080, Server: "web-http", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP1,
				Authorizations: []*inboundv1.Authorization{
					authorization("allow-frontend", meshTLS("MeshTLSAuthentication/frontend",
						"spiffe://cluster.local/ns/shop/sa/frontend", "spiffe://cluster.local/ns/shop/sa/checkout")),
					authorization("allow-office",
						networks("NetworkAuthentication/office",
							&inboundv1.Network{Cidr: "10.0.0.0/8", Except: []string{"10.1.0.0/16", "10.2.0.0/16"}},
							&inboundv1.Network{Cidr: "192.168.0.0/16"}),
						meshTLS("MeshTLSAuthentication/any-mesh", "*")),
					authorization("allow-prometheus", meshTLS("ServiceAccount/monitoring/prometheus",
						"spiffe://cluster.local/ns/monitoring/sa/prometheus")),
				},
			}, {
				// A port no container declares.
				Port: 7000, Server: "web-cache", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_OPAQUE,
				Authorizations: []*inboundv1.Authorization{
					authorization("cache-clients", meshTLS("MeshTLSAuthentication/shop", "spiffe://cluster.local/ns/shop/sa/*")),
				},
			}},
			DefaultPolicy:         "all-unauthenticated",
			DefaultAuthorizations: []*inboundv1.Authorization{authorization("default:all-unauthenticated")},
			Probes: []*inboundv1.Probe{
				{Port: 8080, Path: "/healthz"}, {Port: 8080, Path: "/ready"}, {Port: 9090, Path: "/grpc.health.v1.Health/Check"},
			},
			Revision: "7f3a9c",
		},
	}, {
		name: "routes",
		pod:  authzPod("api-0", corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
		policy: &inboundv1.PodPolicy{
			Ports: []*inboundv1.PortPolicy{{
				Port: 8080, Server: "api", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP1,
				Authorizations: []*inboundv1.Authorization{
					authorization("ops", meshTLS("ServiceAccount/ops/admin", "spiffe://cluster.local/ns/ops/sa/admin")),
				},
				Routes: []*inboundv1.InboundRoute{{
					Kind: "HTTPRoute", Name: "api-read",
					Authorizations: []*inboundv1.Authorization{
						authorization("readers", meshTLS("MeshTLSAuthentication/readers", "spiffe://cluster.local/ns/shop/sa/*")),
					},
				}, {
					Kind: "HTTPRoute", Name: "api-write",
				}},
				RouteRules: []*inboundv1.InboundRouteRule{
					{Route: 1, RuleName: "orders"}, {Route: 0, RuleName: "items"}, {Route: 0, RuleName: "1"},
					{Route: 1, RuleName: "orders"}, {Route: 7, RuleName: "stray"},
				},
				RateLimit: &inboundv1.RateLimit{Name: "api-limit", TotalRps: 100, Overrides: []*inboundv1.RateLimitOverride{
					{Rps: 50, Identities: []string{"spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/shop/sa/batch"}},
					{Rps: 0, Identities: []string{"spiffe://cluster.local/ns/shop/sa/ignored"}},
				}},
			}},
			DefaultPolicy: "deny",
			Revision:      "21",
		},
	}, {
		name: "deny",
		pod: authzPod("payments-0",
			corev1.ContainerPort{Name: "http", ContainerPort: 8080},
			corev1.ContainerPort{Name: "metrics", ContainerPort: 9100}),
		policy: &inboundv1.PodPolicy{
			Ports: []*inboundv1.PortPolicy{{
				Port: 8080, Server: "payments", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP2,
				Authorizations: []*inboundv1.Authorization{
					authorization("checkout-only", meshTLS("ServiceAccount/shop/checkout", "spiffe://cluster.local/ns/shop/sa/checkout")),
				},
			}},
			DefaultPolicy: "deny",
			Probes:        []*inboundv1.Probe{{Port: 8080, Path: "/live"}},
			Revision:      "12",
		},
	}, {
		name: "audit",
		pod:  authzPod("orders-1", corev1.ContainerPort{Name: "http", ContainerPort: 8080}, corev1.ContainerPort{Name: "redis", ContainerPort: 6379}),
		policy: &inboundv1.PodPolicy{
			Ports: []*inboundv1.PortPolicy{{
				Port: 6379, Server: "orders-redis", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_OPAQUE,
			}},
			DefaultPolicy: "audit",
			Audit:         true,
			Revision:      "3",
		},
	}, {
		name: "unmeshed",
		pod:  unmeshed,
		policy: &inboundv1.PodPolicy{
			DefaultPolicy: "cluster-authenticated",
			DefaultAuthorizations: []*inboundv1.Authorization{authorization("default:cluster-authenticated",
				networks("default:cluster-authenticated", &inboundv1.Network{Cidr: "10.0.0.0/8"}, &inboundv1.Network{Cidr: "fd00::/8"}),
				meshTLS("default:cluster-authenticated", "*"),
			)},
		},
	}}
}

// checkGolden compares got with testdata/name, which -update rewrites.
func checkGolden(t testing.TB, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("output differs from %s (-want +got); rerun with -update if intended:\n%s", path, diff)
	}
}

func TestAuthzOutput(t *testing.T) {
	for _, tc := range authzCases() {
		formats := []string{"table"}
		if tc.name == "servers" {
			formats = append(formats, "json", "yaml")
		}
		for _, format := range formats {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				var b bytes.Buffer
				if err := writeAuthz(&b, newAuthzReport(tc.pod, tc.picked, tc.policy), format); err != nil {
					t.Fatal(err)
				}
				name := "authz_" + tc.name + ".golden"
				if format != "table" {
					name = "authz_" + tc.name + "." + format + ".golden"
				}
				checkGolden(t, name, b.String())
			})
		}
	}
}

// TestAuthzReportJSON pins the structure's field names, which scripts
// read, and that empty lists are [] rather than null.
func TestAuthzReportJSON(t *testing.T) {
	c := authzCases()[3] // audit: a Server without policy, no probes
	b, err := json.Marshal(newAuthzReport(c.pod, nil, c.policy))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"namespace": "shop", "pod": "orders-1", "meshed": true, "revision": "3",
		"defaultPolicy": "audit", "defaultAuthorizations": []any{}, "audit": true, "probes": []any{},
		"ports": []any{
			map[string]any{"port": 6379.0, "name": "redis", "server": "orders-redis", "protocol": "opaque", "authorizations": []any{}},
			map[string]any{"port": 8080.0, "name": "http", "protocol": "unknown", "authorizations": []any{}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JSON (-want +got):\n%s", diff)
	}
}

func TestParseAuthzTarget(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    authzTarget
		wantErr string
	}{
		{args: []string{"deploy/web"}, want: authzTarget{"deployment", "web"}},
		{args: []string{"deployment", "web"}, want: authzTarget{"deployment", "web"}},
		{args: []string{"po/web-1"}, want: authzTarget{"pod", "web-1"}},
		{args: []string{"web-1"}, want: authzTarget{"pod", "web-1"}},
		{args: []string{"sts/db"}, want: authzTarget{"statefulset", "db"}},
		{args: []string{"DaemonSet/agent"}, want: authzTarget{"daemonset", "agent"}},
		{args: []string{"svc/web"}, wantErr: `unknown kind "svc": want pod (po), deploy (deployment), sts (statefulset) or ds (daemonset)`},
		{args: []string{"deploy/"}, wantErr: `"deploy/": want KIND/NAME, e.g. deploy/web`},
		{args: []string{"deploy/web/x"}, wantErr: `want KIND/NAME`},
		{args: []string{"deploy/web", "x"}, wantErr: `name the resource as KIND NAME or KIND/NAME, not both`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got, err := parseAuthzTarget(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestResolvePod(t *testing.T) {
	selector := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	pod := func(name, app string, phase corev1.PodPhase, ready bool) *corev1.Pod {
		p := testPod("shop", name, true)
		p.Labels = map[string]string{"app": app}
		p.Status.Phase = phase
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
		return p
	}
	terminating := pod("web-0", "web", corev1.PodRunning, true)
	terminating.DeletionTimestamp = &metav1.Time{Time: testNow}
	terminating.Finalizers = []string{"test/keep"}
	client := fake.NewClientset(
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: appsv1.DeploymentSpec{Selector: selector("web")}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"}, Spec: appsv1.StatefulSetSpec{Selector: selector("db")}},
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "agent"}, Spec: appsv1.DaemonSetSpec{Selector: selector("agent")}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "all"}, Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{}}},
		terminating,
		pod("web-a", "web", corev1.PodRunning, false),
		pod("web-b", "web", corev1.PodPending, false),
		pod("web-c", "web", corev1.PodRunning, true),
		pod("db-1", "db", corev1.PodRunning, false),
		pod("db-0", "db", corev1.PodRunning, false),
		pod("agent-x", "agent", corev1.PodPending, false),
		pod("other", "other", corev1.PodRunning, true),
	)
	for _, tc := range []struct {
		target      authzTarget
		wantPod     string
		wantRunning int
		wantErr     string
	}{
		{target: authzTarget{"deployment", "web"}, wantPod: "web-c", wantRunning: 2}, // ready first; not the terminating one
		{target: authzTarget{"statefulset", "db"}, wantPod: "db-0", wantRunning: 2},  // none ready: by name
		{target: authzTarget{"pod", "web-b"}, wantPod: "web-b"},                      // asked for, even pending
		{target: authzTarget{"daemonset", "agent"}, wantErr: "daemonset/agent in namespace shop has no running pod (of 1)"},
		{target: authzTarget{"deployment", "nope"}, wantErr: "deployment/nope not found in namespace shop"},
		{target: authzTarget{"pod", "nope"}, wantErr: "pod/nope not found in namespace shop"},
		{target: authzTarget{"deployment", "all"}, wantErr: "has an empty selector"},
	} {
		t.Run(tc.target.String(), func(t *testing.T) {
			p, picked, err := resolvePod(context.Background(), client, "shop", tc.target)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Name != tc.wantPod {
				t.Errorf("picked pod %s, want %s", p.Name, tc.wantPod)
			}
			switch {
			case tc.target.Kind == "pod" && picked != nil:
				t.Errorf("picked = %+v for a pod asked by name, want nil", picked)
			case tc.target.Kind != "pod" && (picked == nil || picked.Running != tc.wantRunning || picked.Workload != tc.target):
				t.Errorf("picked = %+v, want %d running pods of %s", picked, tc.wantRunning, tc.target)
			}
		})
	}
}

// policyServer is a real InboundPolicy server whose Watch a test sets; it
// records the requests; mu guards got.
type policyServer struct {
	inboundv1.UnimplementedInboundPolicyServer
	watch func(*inboundv1.WatchRequest, grpc.ServerStreamingServer[inboundv1.PodPolicy]) error

	mu  sync.Mutex
	got []*inboundv1.WatchRequest
}

func (s *policyServer) Watch(req *inboundv1.WatchRequest, stream grpc.ServerStreamingServer[inboundv1.PodPolicy]) error {
	s.mu.Lock()
	s.got = append(s.got, req)
	s.mu.Unlock()
	if s.watch == nil {
		return s.UnimplementedInboundPolicyServer.Watch(req, stream)
	}
	return s.watch(req, stream)
}

func (s *policyServer) requests() []*inboundv1.WatchRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*inboundv1.WatchRequest(nil), s.got...)
}

// sendPolicy is a Watch that sends p and then holds the stream open, as
// the controller does.
func sendPolicy(p *inboundv1.PodPolicy) func(*inboundv1.WatchRequest, grpc.ServerStreamingServer[inboundv1.PodPolicy]) error {
	return func(_ *inboundv1.WatchRequest, stream grpc.ServerStreamingServer[inboundv1.PodPolicy]) error {
		if err := stream.Send(p); err != nil {
			return err
		}
		<-stream.Context().Done()
		return nil
	}
}

// dialPolicy returns a client of addr, closed when the test ends.
func dialPolicy(t testing.TB, addr string) inboundv1.InboundPolicyClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return inboundv1.NewInboundPolicyClient(cc)
}

// startPolicyServer serves s on a loopback port and returns a client of it.
func startPolicyServer(t testing.TB, s *policyServer) inboundv1.InboundPolicyClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	inboundv1.RegisterInboundPolicyServer(srv, s)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return dialPolicy(t, l.Addr().String())
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestFirstPolicy(t *testing.T) {
	policy := &inboundv1.PodPolicy{DefaultPolicy: "deny", Revision: "r1"}
	silent := func(_ *inboundv1.WatchRequest, stream grpc.ServerStreamingServer[inboundv1.PodPolicy]) error {
		<-stream.Context().Done() // a pod the controller does not know yet
		return nil
	}
	refuse := func(*inboundv1.WatchRequest, grpc.ServerStreamingServer[inboundv1.PodPolicy]) error {
		return status.Error(codes.InvalidArgument, "pod is required")
	}
	for _, tc := range []struct {
		name         string
		watch        func(*inboundv1.WatchRequest, grpc.ServerStreamingServer[inboundv1.PodPolicy]) error
		down         bool
		wantErr      string
		wantNoAnswer bool // errors.Is(err, errNoPolicy)
	}{
		{name: "answers", watch: sendPolicy(policy)},
		{name: "silent", watch: silent, wantErr: "no inbound policy from the controller for pod shop/web-1 within 300ms", wantNoAnswer: true},
		{name: "older controller", wantErr: "mesh-controller does not serve the InboundPolicy API (method Watch not implemented): is it older than this mesh binary? run mesh check"},
		{name: "refused", watch: refuse, wantErr: "mesh-controller refused the policy of pod shop/web-1: InvalidArgument: pod is required"},
		{name: "down", down: true, wantErr: "did not answer", wantNoAnswer: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				client inboundv1.InboundPolicyClient
				srv    = &policyServer{watch: tc.watch}
			)
			if tc.down {
				client = dialPolicy(t, closedAddr(t))
			} else {
				client = startPolicyServer(t, srv)
			}
			got, err := firstPolicy(context.Background(), client, "shop", "web-1", 300*time.Millisecond)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if errors.Is(err, errNoPolicy) != tc.wantNoAnswer {
					t.Errorf("errors.Is(err, errNoPolicy) = %v, want %v", !tc.wantNoAnswer, tc.wantNoAnswer)
				}
				if tc.wantNoAnswer && !strings.Contains(err.Error(), "run mesh check") {
					t.Errorf("err = %v: want it to say to run mesh check", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.GetRevision() != "r1" || got.GetDefaultPolicy() != "deny" {
				t.Errorf("policy %v, want the one sent", got)
			}
			reqs := srv.requests()
			if len(reqs) != 1 || reqs[0].GetNamespace() != "shop" || reqs[0].GetPod() != "web-1" {
				t.Errorf("requests %v, want one for shop/web-1", reqs)
			}
		})
	}
}

// runAuthzCmd runs `mesh authz args` against the Kubernetes stand-in,
// with the policy API reached through client instead of a port-forward.
func runAuthzCmd(t testing.TB, k8s *apiStandIn, client inboundv1.InboundPolicyClient, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	isolateKubeconfig(t)
	var out, errOut bytes.Buffer
	o := NewOptions(nil, &out, &errOut)
	o.Kubeconfig = k8s.kubeconfig(t, "shop")
	dial := func(context.Context, *kube) (*policyConn, error) {
		return &policyConn{client: client, close: func() {}}, nil
	}
	cmd := newAuthzCommand(&authzEnv{Options: o, dial: dial})
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

func TestAuthzCommand(t *testing.T) {
	k8s := newAPIStandIn(t)
	k8s.addPod(authzPod("web-1", corev1.ContainerPort{Name: "http", ContainerPort: 8080}), proxyAnswer{})
	k8s.addPod(testPod("shop", "legacy-1", false), proxyAnswer{})
	srv := &policyServer{watch: sendPolicy(&inboundv1.PodPolicy{
		DefaultPolicy: "all-authenticated", Revision: "r9",
		DefaultAuthorizations: []*inboundv1.Authorization{
			authorization("default:all-authenticated", meshTLS("default:all-authenticated", "*")),
		},
	})}
	client := startPolicyServer(t, srv)

	out, stderr, err := runAuthzCmd(t, k8s, client, "web-1") // the kubeconfig context's namespace
	if err != nil {
		t.Fatalf("%v\nstderr: %s", err, stderr)
	}
	want := `Pod shop/web-1, policy revision r9

PORT  SERVER   PROTOCOL  AUTHORIZATION              AUTHENTICATIONS
8080  default  unknown   default:all-authenticated  default:all-authenticated (mTLS: any mesh identity)
*     default  unknown   default:all-authenticated  default:all-authenticated (mTLS: any mesh identity)

Default policy: all-authenticated, for every port no Server selects (PORT *)
Audit: off
Probes always allowed: none declared
`
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
	if stderr != "" {
		t.Errorf("stderr %q, want nothing for a meshed pod", stderr)
	}

	out, stderr, err = runAuthzCmd(t, k8s, client, "-n", "shop", "pod/legacy-1", "-o", "json")
	if err != nil {
		t.Fatalf("%v\nstderr: %s", err, stderr)
	}
	var report authzReport
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if report.Pod != "legacy-1" || report.Meshed || report.DefaultPolicy != "all-authenticated" {
		t.Errorf("report %+v, want legacy-1, unmeshed, all-authenticated", report)
	}
	if !strings.Contains(stderr, "has no mesh-proxy container: nothing enforces this policy") {
		t.Errorf("stderr %q, want a warning that the pod is not meshed", stderr)
	}
	reqs := srv.requests()
	if len(reqs) != 2 || reqs[1].GetNamespace() != "shop" || reqs[1].GetPod() != "legacy-1" {
		t.Errorf("requests %v", reqs)
	}

	if _, _, err := runAuthzCmd(t, k8s, client, "-n", "shop", "pod/nope"); err == nil || !strings.Contains(err.Error(), "pod/nope not found in namespace shop") {
		t.Errorf("missing pod: err = %v", err)
	}
}

func TestAuthzErrors(t *testing.T) {
	k8s := newAPIStandIn(t)
	k8s.addPod(authzPod("web-1"), proxyAnswer{})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "no controller", args: []string{"authz", "-n", "shop", "pod/web-1", "--kubeconfig", k8s.kubeconfig(t, "")},
			want: "no mesh-controller pods in namespace mesh-system: install the mesh with mesh install"},
		{name: "no argument", args: []string{"authz"}, want: "accepts between 1 and 2 arg(s)"},
		{name: "bad kind", args: []string{"authz", "svc/web"}, want: `unknown kind "svc"`},
		{name: "bad output", args: []string{"authz", "deploy/web", "-o", "wide"}, want: `--output "wide": want one of [table json yaml]`},
		{name: "bad timeout", args: []string{"authz", "deploy/web", "--timeout", "0s"}, want: "--timeout 0s: want a positive duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, "", tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, _, err := run(t, "", "authz", "-n", "shop", "deploy/web"); !errors.Is(err, ErrNoKubeconfig) {
		t.Errorf("without a kubeconfig: err = %v, want ErrNoKubeconfig", err)
	}
}
