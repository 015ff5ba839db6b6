package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/proxy/admin"
	"github.com/mesh-dev/mesh/proxy/authz"
)

// The tests of `mesh diagnostics` run the command against apiStandIn
// (identity_test.go), whose port-forward reaches a real admin server
// (proxy/admin.Handler) on loopback, as the kubelet reaches the proxy on
// the pod's loopback; proxy-metrics, which goes through pods/proxy
// instead, runs against the fake clientset's proxy reactor.

// diagMetrics is a proxy's exposition: a counter, a gauge and a histogram.
const diagMetrics = `# HELP mesh_proxy_http_requests_total HTTP requests.
# TYPE mesh_proxy_http_requests_total counter
mesh_proxy_http_requests_total{direction="inbound",authority="web.shop:8080"} 7
# HELP mesh_proxy_inbound_policy_ready 1 once the proxy holds an inbound policy.
# TYPE mesh_proxy_inbound_policy_ready gauge
mesh_proxy_inbound_policy_ready 1
# HELP mesh_proxy_http_response_latency_seconds Latency.
# TYPE mesh_proxy_http_response_latency_seconds histogram
mesh_proxy_http_response_latency_seconds_bucket{direction="inbound",le="0.01"} 5
mesh_proxy_http_response_latency_seconds_bucket{direction="inbound",le="+Inf"} 7
mesh_proxy_http_response_latency_seconds_sum{direction="inbound"} 0.25
mesh_proxy_http_response_latency_seconds_count{direction="inbound"} 7
`

// diagDestinations is a /destinations answer, in proxy/route.go's shape.
const diagDestinations = `[
  {"authority": "orders.shop.svc.cluster.local:8080", "not_found": false,
   "endpoints": [
     {"addr": "10.0.1.5:8080", "identity": "spiffe://cluster.local/ns/shop/sa/orders", "protocol_hint": "h2", "zone": "a",
      "rtt_estimate_ms": 1.25, "pending": 2, "consecutive_failures": 0, "ejected": false, "draining": false},
     {"addr": "10.0.1.6:8080", "rtt_estimate_ms": 0, "pending": 0, "consecutive_failures": 7, "ejected": true, "draining": false}],
   "balancer_failure_accrual": {"max_failures": 7, "min_backoff": "1s", "max_backoff": "1m0s"}},
  {"authority": "example.com:443", "not_found": true, "endpoints": [], "balancer_failure_accrual": {}}
]
`

// diagPolicy is the policy of the tests, compiled by proxy/authz as the
// proxy compiles what the controller sends.
func diagPolicy() *inboundv1.PodPolicy {
	meshTLSAuth := func(patterns ...string) *inboundv1.Authentication {
		return &inboundv1.Authentication{Name: "MeshTLSAuthentication/web", Kind: &inboundv1.Authentication_MeshTls{MeshTls: &inboundv1.Identities{Patterns: patterns}}}
	}
	return &inboundv1.PodPolicy{
		Revision: "42", DefaultPolicy: "all-authenticated",
		DefaultAuthorizations: []*inboundv1.Authorization{{Name: "default:all-authenticated", Required: []*inboundv1.Authentication{meshTLSAuth("*")}}},
		Ports: []*inboundv1.PortPolicy{{
			Port: 8080, Server: "web-http", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP1,
			Authorizations: []*inboundv1.Authorization{
				{Name: "AuthorizationPolicy/web-from-shop", Required: []*inboundv1.Authentication{meshTLSAuth("spiffe://cluster.local/ns/shop/*")}},
				{Name: "AuthorizationPolicy/web-from-lb", Required: []*inboundv1.Authentication{{Name: "NetworkAuthentication/lb",
					Kind: &inboundv1.Authentication_Networks{Networks: &inboundv1.Networks{Networks: []*inboundv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.9.0.0/16"}}}}}}}},
			},
			RateLimit: &inboundv1.RateLimit{Name: "web-limit", TotalRps: 100, IdentityRps: 10,
				Overrides: []*inboundv1.RateLimitOverride{{Rps: 50, Identities: []string{"spiffe://cluster.local/ns/shop/sa/batch"}}}},
		}},
		Probes: []*inboundv1.Probe{{Port: 8080, Path: "/ready"}},
	}
}

// diagProxy is a pod's proxy admin server: real admin.Handler routing,
// with answers set by the test.
type diagProxy struct {
	identity []byte // nil: no identity (no /identity)
	policy   []byte // nil: no policy (no /policy)
	notReady error  // why /ready answers 503; nil: ready
}

func (p diagProxy) start(t testing.TB) string {
	t.Helper()
	body := func(b []byte) http.Handler {
		if b == nil {
			return nil
		}
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(b)
		})
	}
	srv := httptest.NewServer(admin.Handler(admin.Config{
		Metrics:      http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, diagMetrics) }),
		Ready:        func() error { return p.notReady },
		Shutdown:     func() {},
		Destinations: body([]byte(diagDestinations)),
		Identity:     body(p.identity),
		Policy:       body(p.policy),
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// policyBody is GET /policy of a proxy holding msg (nil: none yet).
func policyBody(t testing.TB, msg *inboundv1.PodPolicy) []byte {
	t.Helper()
	// proxy/policy.PolicyView's shape; that package is not imported for
	// it, since it brings in the proxy's HTTP forwarding.
	v := struct {
		Namespace string      `json:"namespace"`
		Pod       string      `json:"pod"`
		Received  bool        `json:"received"`
		Policy    *authz.View `json:"policy"`
	}{Namespace: "shop", Pod: "web-1"}
	if msg != nil {
		p, dropped := authz.Compile(msg, authz.Options{TrustDomain: "cluster.local"})
		if len(dropped) > 0 {
			t.Fatalf("the test's policy drops %v", dropped)
		}
		view := p.View()
		v.Received, v.Policy = true, &view
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// diagFixture is namespace shop with pods: web-1 meshed with a proxy that
// has an identity and a policy, web-bare meshed with a proxy that has
// neither, plain without a proxy, and pending not running.
type diagFixture struct {
	api        *apiStandIn
	kubeconfig string
	svid       *x509svid.SVID
	ca         *identitytest.CA
}

func newDiagFixture(t testing.TB) *diagFixture {
	t.Helper()
	f := &diagFixture{api: newAPIStandIn(t), ca: identitytest.NewCA(t)}
	f.kubeconfig = f.api.kubeconfig(t, "shop")
	f.svid = f.ca.IssueSVID(t, f.ca.ID("shop", "web"))
	f.addProxy(testPod("shop", "web-1", true), diagProxy{
		identity: []byte(identityAnswer(t, f.svid, f.ca.Root).body),
		policy:   policyBody(t, diagPolicy()),
	}.start(t))
	f.addProxy(testPod("shop", "web-bare", true), diagProxy{}.start(t))
	f.api.addPod(testPod("shop", "plain", false), proxyAnswer{})
	pending := testPod("shop", "pending", true)
	pending.Status.Phase, pending.Status.PodIP = corev1.PodPending, ""
	f.api.addPod(pending, proxyAnswer{})
	return f
}

// addProxy adds pod, whose port-forward reaches the admin server at addr.
func (f *diagFixture) addProxy(pod *corev1.Pod, addr string) {
	f.api.addPod(pod, proxyAnswer{})
	key := pod.Namespace + "/" + pod.Name
	f.api.mu.Lock()
	f.api.answers[key] = proxyAnswer{code: http.StatusOK}
	f.api.admins[key] = addr
	f.api.mu.Unlock()
}

// mask replaces what differs from run to run (serials, validity, hashes
// of the certificates) with names, for goldens.
func (f *diagFixture) mask(out string) string {
	var pairs []string
	certs := append(append([]*x509.Certificate{}, f.svid.Certificates...), f.ca.Root)
	for i, c := range certs {
		n := strconv.Itoa(i)
		pairs = append(pairs, c.SerialNumber.Text(16), "SERIAL-"+n, certSHA256(c), "SHA256-"+n,
			c.NotBefore.UTC().Format(time.RFC3339), "NOT-BEFORE-"+n, c.NotAfter.UTC().Format(time.RFC3339), "NOT-AFTER-"+n)
	}
	out = strings.NewReplacer(pairs...).Replace(out)
	if json.Valid([]byte(out)) || !strings.Contains(out, "  ") {
		return out
	}
	// A table: align its columns again, as tabwriter does.
	out = regexp.MustCompile(` {2,}`).ReplaceAllString(out, "\t")
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	tw.Write([]byte(out))
	tw.Flush()
	return b.String()
}

func TestDiagnosticsGolden(t *testing.T) {
	f := newDiagFixture(t)
	now := f.svid.Certificates[0].NotAfter.Add(-leftBeforeExpiry)
	for _, tc := range []struct {
		sub, format string
	}{
		{"endpoints", "table"}, {"endpoints", "json"},
		{"policy", "table"}, {"policy", "json"}, {"policy", "yaml"},
		{"identity", "table"}, {"identity", "json"},
	} {
		t.Run(tc.sub+" "+tc.format, func(t *testing.T) {
			out, stderr, err := runAt(t, now, "diagnostics", tc.sub, "-n", "shop", "web-1", "-o", tc.format, "--kubeconfig", f.kubeconfig)
			if err != nil {
				t.Fatalf("%v\nstderr: %s", err, stderr)
			}
			if tc.format == "json" && !json.Valid([]byte(out)) {
				t.Errorf("-o json is not JSON:\n%s", out)
			}
			if strings.Contains(out, "PRIVATE KEY") {
				t.Errorf("the output holds a private key:\n%s", out)
			}
			checkGolden(t, fmt.Sprintf("diagnostics_%s.%s.golden", tc.sub, tc.format), f.mask(out))
		})
	}
}

// TestDiagnosticsIdentityChain: the JSON's chain is the proxy's, parsed
// here: the leaf's URI SAN is its SPIFFE ID, the issuer is a CA.
func TestDiagnosticsIdentityChain(t *testing.T) {
	f := newDiagFixture(t)
	out, stderr, err := runAt(t, testNow, "diagnostics", "identity", "-n", "shop", "pod/web-1", "-o", "json", "--kubeconfig", f.kubeconfig)
	if err != nil {
		t.Fatalf("%v\nstderr: %s", err, stderr)
	}
	var got diagIdentity
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Chain) != len(f.svid.Certificates) || len(got.Chain) < 2 {
		t.Fatalf("chain of %d certificates, want the SVID's %d", len(got.Chain), len(f.svid.Certificates))
	}
	if leaf := got.Chain[0]; leaf.IsCA || len(leaf.URIs) != 1 || leaf.URIs[0] != got.SPIFFEID || got.SPIFFEID != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Errorf("leaf %+v of %s", leaf, got.SPIFFEID)
	}
	if !got.Chain[1].IsCA || got.Chain[1].Subject != got.Chain[0].Issuer {
		t.Errorf("second certificate %+v does not issue the leaf (issuer %q)", got.Chain[1], got.Chain[0].Issuer)
	}
	if len(got.TrustAnchors) != 1 || got.TrustAnchors[0].SHA256 != certSHA256(f.ca.Root) {
		t.Errorf("trust anchors %+v, want the root's fingerprint %s", got.TrustAnchors, certSHA256(f.ca.Root))
	}
}

func TestDiagnosticsErrors(t *testing.T) {
	f := newDiagFixture(t)
	withKey := diagProxy{identity: []byte(`{"chain_pem": "-----BEGIN EC PRIVATE KEY-----\nMHc=\n-----END EC PRIVATE KEY-----\n"}`)}
	f.addProxy(testPod("shop", "leaky", true), withKey.start(t))
	f.addProxy(testPod("shop", "waiting", true), diagProxy{policy: policyBody(t, nil)}.start(t))
	for _, tc := range []struct {
		name string
		args []string
		want string
		// wantOut is in the output of a command that succeeds.
		wantOut string
	}{
		{name: "not meshed", args: []string{"policy", "plain"}, want: "pod shop/plain has no mesh-proxy container; is it injected?"},
		{name: "not running", args: []string{"identity", "pending"}, want: "pod shop/pending is Pending, not running"},
		{name: "no such pod", args: []string{"endpoints", "gone"}, want: "pod gone not found in namespace shop"},
		{name: "no policy endpoint", args: []string{"policy", "web-bare"}, want: "the proxy serves no inbound policy: it enforces none"},
		{name: "no identity", args: []string{"identity", "web-bare"}, want: "the proxy runs without an identity"},
		{name: "a key in the answer", args: []string{"identity", "leaky"}, want: "holds a private key; refusing to print it"},
		{name: "no policy yet", args: []string{"policy", "waiting"}, wantOut: "has received no inbound policy from the controller yet"},
		{name: "bad output", args: []string{"policy", "web-1", "-o", "wide"}, want: `--output "wide": want one of [table json yaml]`},
		{name: "two pods", args: []string{"policy", "web-1", "web-2"}, want: "accepts 1 arg(s), received 2"},
		{name: "a deployment", args: []string{"policy", "deploy/web"}, want: `"deploy/web": want a pod name or pod/NAME`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runAt(t, testNow, append(append([]string{"diagnostics"}, tc.args...), "--kubeconfig", f.kubeconfig)...)
			if tc.want == "" {
				if err != nil || !strings.Contains(out, tc.wantOut) {
					t.Errorf("err %v, output:\n%s\nwant it to contain %q", err, out, tc.wantOut)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(out, "PRIVATE KEY") {
				t.Errorf("printed a private key:\n%s", out)
			}
		})
	}
}

// TestDiagnosticsForbidden: without the right to port-forward, the error
// names the permission.
func TestDiagnosticsForbidden(t *testing.T) {
	f := newDiagFixture(t)
	f.api.addPod(testPod("shop", "locked", true), proxyAnswer{forbidden: true})
	_, _, err := runAt(t, testNow, "diagnostics", "endpoints", "-n", "shop", "locked", "--kubeconfig", f.kubeconfig)
	if err == nil || !strings.Contains(err.Error(), "you need permission to create pods/portforward in namespace shop") {
		t.Errorf("err = %v, want it to name pods/portforward", err)
	}
}

// runDiagMetrics runs `mesh diagnostics proxy-metrics` with pods/proxy
// answered by answer.
func runDiagMetrics(t *testing.T, answer metricsAnswer, args ...string) (string, []string, error) {
	t.Helper()
	client := fake.NewClientset(testPod("shop", "web-1", true))
	var asked []string
	client.AddProxyReactor("pods", func(action k8stesting.Action) (bool, rest.ResponseWrapper, error) {
		get := action.(k8stesting.ProxyGetAction)
		asked = append(asked, fmt.Sprintf("%s/%s %s:%s/%s", get.GetNamespace(), get.GetName(), get.GetScheme(), get.GetPort(), get.GetPath()))
		return true, answer, nil
	})
	var out bytes.Buffer
	o := NewOptions(strings.NewReader(""), &out, io.Discard)
	k := &kube{client: client}
	env := &diagEnv{
		o: o,
		pod: func(ctx context.Context, ns, name string) (*corev1.Pod, adminReader, error) {
			pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			return pod, kubeAdmin{k}, err
		},
		namespace: func() (string, error) { return "shop", nil },
	}
	cmd := newDiagnosticsCommand(env)
	cmd.SetArgs(append([]string{"proxy-metrics", "web-1"}, args...))
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), asked, err
}

func TestDiagnosticsProxyMetrics(t *testing.T) {
	for _, format := range []string{"text", "json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			out, asked, err := runDiagMetrics(t, metricsAnswer{body: []byte(diagMetrics)}, "-o", format)
			if err != nil {
				t.Fatal(err)
			}
			if len(asked) != 1 || asked[0] != "shop/web-1 http:4191/metrics" {
				t.Errorf("asked %v, want one GET of shop/web-1 http:4191/metrics through pods/proxy", asked)
			}
			if format == "text" {
				if out != diagMetrics {
					t.Errorf("text output:\n%s\nwant the proxy's exposition as it is", out)
				}
				return
			}
			checkGolden(t, "diagnostics_proxy-metrics."+format+".golden", out)
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		_, _, err := runDiagMetrics(t, metricsAnswer{err: errors.New("dial tcp 10.0.0.7:4191: connect: connection refused")})
		if err == nil || !strings.Contains(err.Error(), "pod shop/web-1: GET :4191/metrics through the API server: dial tcp 10.0.0.7:4191: connect: connection refused") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("not metrics", func(t *testing.T) {
		_, _, err := runDiagMetrics(t, metricsAnswer{body: []byte("<html>hello")}, "-o", "json")
		if err == nil || !strings.Contains(err.Error(), "the proxy's metrics do not parse") {
			t.Errorf("err = %v", err)
		}
	})
}

// TestPromFloat: values JSON numbers cannot carry are strings.
func TestPromFloat(t *testing.T) {
	b, err := json.Marshal([]promFloat{1.5, promFloat(math.Inf(1)), promFloat(math.Inf(-1))})
	if err != nil || string(b) != `[1.5,"+Inf","-Inf"]` {
		t.Errorf("got %s, %v", b, err)
	}
}

// TestDiagnosticsHelpNamesTheRoute: the help says which subresource each
// subcommand goes through, and why.
func TestDiagnosticsHelpNamesTheRoute(t *testing.T) {
	out, _, err := run(t, "", "diagnostics", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pods/proxy", "pods/portforward", "loopback", "proxy-metrics", "endpoints", "policy", "identity"} {
		if !strings.Contains(out, want) {
			t.Errorf("help does not mention %q:\n%s", want, out)
		}
	}
}
