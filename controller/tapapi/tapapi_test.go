package tapapi

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// klog's process-wide flusher, started on first use.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*loggingT).flushDaemon"),
	)
}

const deployTap = "/apis/tap.mesh.dev/v1alpha1/watch/namespaces/shop/deployments/web/tap"

// Only the API server's front proxy, with a certificate of the CA in the
// ConfigMap, for client authentication, under an allowed name, and
// naming a user, gets an answer; everything else is 401 with a Status.
func TestAuthentication(t *testing.T) {
	h := start(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"type":"request"}` + "\n"))
	}))
	good := h.proxyCA.clientCert(t, frontProxyCN, x509.ExtKeyUsageClientAuth)
	otherCA := newTestCA(t, "front-proxy-ca") // the same name, another key
	forged := otherCA.clientCert(t, frontProxyCN, x509.ExtKeyUsageClientAuth)
	otherName := h.proxyCA.clientCert(t, "system:kube-controller-manager", x509.ExtKeyUsageClientAuth)
	serverOnly := h.proxyCA.clientCert(t, frontProxyCN, x509.ExtKeyUsageServerAuth)

	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		hdr  headers
		want int
		msg  string
	}{
		{"front proxy", &good, asUser("alice", "dev"), http.StatusOK, ""},
		{"no certificate", nil, asUser("alice"), http.StatusUnauthorized, "no client certificate"},
		{"wrong CA", &forged, asUser("alice"), http.StatusUnauthorized, "not the API server's front-proxy certificate"},
		{"disallowed name", &otherName, asUser("alice"), http.StatusUnauthorized, "not in the allowed list"},
		{"server certificate", &serverOnly, asUser("alice"), http.StatusUnauthorized, "not the API server's front-proxy certificate"},
		{"no user", &good, headers{"X-Remote-Group": {"system:masters"}}, http.StatusUnauthorized, "names no user"},
		{"user under another header", &good, headers{"X-Forwarded-User": {"alice"}}, http.StatusUnauthorized, "names no user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/apis", deployTap} {
				code, body := h.get(t, tc.cert, path, tc.hdr)
				if code != tc.want {
					t.Fatalf("GET %s = %d %s, want %d", path, code, body, tc.want)
				}
				if tc.want == http.StatusOK {
					continue
				}
				if st := status(t, body); st.Code != int32(tc.want) || st.Reason != metav1.StatusReasonUnauthorized || !strings.Contains(st.Message, tc.msg) {
					t.Errorf("GET %s: status %+v, want code %d, reason Unauthorized and a message with %q", path, st, tc.want, tc.msg)
				}
			}
		})
	}
	if n := len(h.sars.asked()); n != 1 {
		t.Errorf("%d SubjectAccessReviews, want 1: only the authenticated tap is reviewed", n)
	}
}

// The discovery documents satisfy client-go's discovery client, which
// kubectl and the API server's availability check read them with.
func TestDiscovery(t *testing.T) {
	h := start(t, &tapStandIn{})
	cert, key := h.proxyCA.issue(t, frontProxyCN, x509.ExtKeyUsageClientAuth)
	cfg := &rest.Config{
		Host: "https://" + h.addr,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   h.serverCA.pem(),
			CertData: pemCert(cert),
			KeyData:  pemKey(t, key),
		},
		// The front proxy's user headers, as the API server adds them.
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
				r = r.Clone(r.Context())
				r.Header.Set("X-Remote-User", "system:kube-aggregator")
				r.Header.Add("X-Remote-Group", "system:masters")
				return rt.RoundTrip(r)
			})
		},
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := dc.ServerGroups()
	if err != nil {
		t.Fatalf("ServerGroups: %v", err)
	}
	if len(groups.Groups) != 1 || groups.Groups[0].Name != Group || groups.Groups[0].PreferredVersion.GroupVersion != GroupVersion {
		t.Errorf("groups = %+v, want %s with preferred version %s", groups.Groups, Group, GroupVersion)
	}
	list, err := dc.ServerResourcesForGroupVersion(GroupVersion)
	if err != nil {
		t.Fatalf("ServerResourcesForGroupVersion: %v", err)
	}
	got := map[string][]string{}
	for _, r := range list.APIResources {
		got[r.Name] = r.Verbs
		if want := r.Name != "namespaces" && r.Name != "namespaces/tap"; r.Namespaced != want {
			t.Errorf("%s: namespaced %v, want %v", r.Name, r.Namespaced, want)
		}
	}
	for _, name := range []string{"namespaces/tap", "pods/tap", "deployments", "deployments/tap", "statefulsets/tap", "daemonsets/tap", "replicasets/tap", "jobs/tap"} {
		if diff := cmp.Diff([]string{"watch"}, got[name]); diff != "" {
			t.Errorf("verbs of %s (-want +got):\n%s", name, diff)
		}
	}
	code, body := h.get(t, &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key}, "/apis/"+Group, asUser("bob"))
	if code != http.StatusOK || !contains(body, `"kind":"APIGroup"`, `"name":"tap.mesh.dev"`) {
		t.Errorf("GET /apis/%s = %d %s, want the APIGroup", Group, code, body)
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// An allowed user's tap reaches viz with the namespace and resource of
// the path and the filters of the query, without the front proxy's
// headers, and streams: each event arrives before the next is sent.
func TestTap(t *testing.T) {
	tap := &tapStandIn{next: make(chan struct{})}
	h := start(t, tap)
	cert := h.proxyCA.clientCert(t, frontProxyCN, x509.ExtKeyUsageClientAuth)
	hdr := asUser("system:serviceaccount:shop:ci", "system:serviceaccounts", "system:authenticated")
	hdr["X-Remote-Extra-Authentication.kubernetes.io%2fpod-Name"] = []string{"ci-7"}

	resp, err := h.do(t, &cert, deployTap+"?method=GET&path=%2Fapi&max_rps=5", hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	lines := bufio.NewReader(resp.Body)
	if first, err := lines.ReadString('\n'); err != nil || first != tapRequestLine+"\n" {
		t.Fatalf("first line %q, %v; want the request event as viz sent it, before the next is sent", first, err)
	}
	close(tap.next)
	if second, err := lines.ReadString('\n'); err != nil || !strings.Contains(second, `"response"`) {
		t.Fatalf("second line %q, %v; want the response event", second, err)
	}

	got := tap.requests()
	if len(got) != 1 {
		t.Fatalf("viz got %d requests, want 1", len(got))
	}
	r := got[0]
	if r.URL.Path != vizv1.PathTap {
		t.Errorf("viz got path %s, want %s", r.URL.Path, vizv1.PathTap)
	}
	wantQuery := url.Values{"namespace": {"shop"}, "resource": {"deploy/web"}, "method": {"GET"}, "path": {"/api"}, "max_rps": {"5"}}
	if diff := cmp.Diff(wantQuery, r.URL.Query()); diff != "" {
		t.Errorf("viz's query (-want +got):\n%s", diff)
	}
	for name := range r.Header {
		if strings.HasPrefix(strings.ToLower(name), "x-remote-") {
			t.Errorf("viz got the front proxy's header %s", name)
		}
	}
	want := []authorizationv1.SubjectAccessReviewSpec{{
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: "shop", Verb: "watch", Group: "tap.mesh.dev", Version: "v1alpha1",
			Resource: "deployments", Subresource: "tap", Name: "web",
		},
		User:   "system:serviceaccount:shop:ci",
		Groups: []string{"system:serviceaccounts", "system:authenticated"},
		Extra:  map[string]authorizationv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"ci-7"}},
	}}
	if diff := cmp.Diff(want, h.sars.asked()); diff != "" {
		t.Errorf("SubjectAccessReviews (-want +got):\n%s", diff)
	}
}

// A whole namespace is reviewed as namespaces/tap named after itself, and
// tapped as viz's ns/NAME.
func TestTapNamespace(t *testing.T) {
	tap := &tapStandIn{}
	h := start(t, tap)
	cert := h.proxyCA.clientCert(t, frontProxyCN, x509.ExtKeyUsageClientAuth)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+h.addr+"/apis/tap.mesh.dev/v1alpha1/watch/namespaces/shop/tap", nil)
	req.Header.Set("X-Remote-User", "alice")
	resp, err := h.httpClient(&cert).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	bufio.NewReader(resp.Body).ReadString('\n')
	if got := tap.requests()[0].URL.Query(); got.Get("namespace") != "shop" || got.Get("resource") != "ns/shop" {
		t.Errorf("viz's query %v, want namespace=shop resource=ns/shop", got)
	}
	a := h.sars.asked()[0].ResourceAttributes
	if a.Resource != "namespaces" || a.Subresource != "tap" || a.Name != "shop" || a.Namespace != "shop" {
		t.Errorf("reviewed %+v, want namespaces/tap shop in namespace shop", a)
	}
}

// A user RBAC denies gets 403 and a Status that says who lacks which
// permission and how to grant it; viz is never called.
func TestTapForbidden(t *testing.T) {
	tap := &tapStandIn{}
	h := start(t, tap)
	h.sars.set(false, "", nil)
	cert := h.proxyCA.clientCert(t, frontProxyCN, x509.ExtKeyUsageClientAuth)
	for _, tc := range []struct {
		user string
		want []string
	}{
		{"system:serviceaccount:shop:viewer", []string{
			`user "system:serviceaccount:shop:viewer" may not tap deployments/web in namespace shop`,
			`needs the "watch" verb on "deployments/tap" in group tap.mesh.dev`,
			"kubectl create rolebinding mesh-tap-shop-viewer -n shop --clusterrole=mesh-tap --serviceaccount=shop:viewer",
		}},
		{"alice@example.com", []string{"--user=alice@example.com", "rolebinding mesh-tap-alice-example.com "}},
		{"O'Brien; rm -rf /", []string{`--user='O'\''Brien; rm -rf /'`, "rolebinding mesh-tap-o-brien--rm--rf "}},
	} {
		code, body := h.get(t, &cert, deployTap, asUser(tc.user, "dev"))
		st := status(t, body)
		if code != http.StatusForbidden || st.Code != http.StatusForbidden || st.Reason != metav1.StatusReasonForbidden {
			t.Errorf("%s: %d %+v, want 403 Forbidden", tc.user, code, st)
		}
		if !contains(st.Message, tc.want...) {
			t.Errorf("%s: message %q\nwant it to contain %q", tc.user, st.Message, tc.want)
		}
	}
	h.sars.set(false, "no RBAC policy matched", nil)
	if _, body := h.get(t, &cert, deployTap, asUser("bob")); !strings.Contains(body, "(the authorizer says: no RBAC policy matched)") {
		t.Errorf("body %s, want the authorizer's reason", body)
	}
	if n := len(tap.requests()); n != 0 {
		t.Errorf("viz got %d requests from denied users", n)
	}
}

// A review that cannot be made fails closed, with 500.
func TestTapReviewFails(t *testing.T) {
	tap := &tapStandIn{}
	h := start(t, tap)
	h.sars.set(true, "", errStandIn)
	cert := h.proxyCA.clientCert(t, frontProxyCN, x509.ExtKeyUsageClientAuth)
	code, body := h.get(t, &cert, deployTap, asUser("alice"))
	if st := status(t, body); code != http.StatusInternalServerError || !contains(st.Message, `cannot check whether user "alice" may tap`, errStandIn.Error()) {
		t.Errorf("%d %s, want 500 naming the failure", code, body)
	}
	if len(tap.requests()) != 0 {
		t.Errorf("viz was called without a review")
	}
}

// Bad paths and queries are refused before any review: the resource to
// tap comes from the path alone.
func TestTapBadRequests(t *testing.T) {
	h := start(t, &tapStandIn{})
	cert := h.proxyCA.clientCert(t, frontProxyCN, x509.ExtKeyUsageClientAuth)
	for _, tc := range []struct {
		path string
		code int
		msg  string
	}{
		{deployTap + "?namespace=kube-system", http.StatusBadRequest, `unknown parameter "namespace"`},
		{deployTap + "?resource=deploy/other", http.StatusBadRequest, `unknown parameter "resource"`},
		{deployTap + "?x=%zz", http.StatusBadRequest, "bad query"},
		{"/apis/tap.mesh.dev/v1alpha1/watch/namespaces/shop/services/web/tap", http.StatusBadRequest, `cannot tap "services"`},
		{"/apis/tap.mesh.dev/v1alpha1/watch/namespaces/Shop/tap", http.StatusBadRequest, `namespace "Shop"`},
		{"/apis/tap.mesh.dev/v1alpha1/watch/namespaces/shop/pods/web_1/tap", http.StatusBadRequest, `name "web_1"`},
		{"/apis/tap.mesh.dev/v1alpha1/namespaces/shop/tap", http.StatusNotFound, "no such path"},
		{"/metrics", http.StatusNotFound, "no such path"},
	} {
		code, body := h.get(t, &cert, tc.path, asUser("alice"))
		if st := status(t, body); code != tc.code || !strings.Contains(st.Message, tc.msg) {
			t.Errorf("GET %s = %d %q, want %d and a message with %q", tc.path, code, st.Message, tc.code, tc.msg)
		}
	}
	if n := len(h.sars.asked()); n != 0 {
		t.Errorf("%d reviews for bad requests, want 0", n)
	}
	req, _ := http.NewRequest(http.MethodPost, "https://"+h.addr+deployTap, nil)
	req.Header.Set("X-Remote-User", "alice")
	resp, err := h.httpClient(&cert).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST = %d, want 405", resp.StatusCode)
	}
}

// A new front-proxy CA in the ConfigMap is followed without a restart:
// the old proxy certificate is refused and the new one accepted. So are
// new allowed names.
func TestFrontProxyCAReload(t *testing.T) {
	h := start(t, &tapStandIn{})
	old := h.proxyCA.clientCert(t, frontProxyCN, x509.ExtKeyUsageClientAuth)
	rotated := newTestCA(t, "front-proxy-ca-2")
	renamed := rotated.clientCert(t, "front-proxy-client-2", x509.ExtKeyUsageClientAuth)
	if _, err := h.client.CoreV1().ConfigMaps(AuthConfigMapNamespace).Update(context.Background(),
		authConfigMap(rotated, "front-proxy-client-2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitAccepts(t, renamed)
	if code, body := h.get(t, &old, "/apis", asUser("alice")); code != http.StatusUnauthorized {
		t.Errorf("the old front-proxy certificate got %d %s, want 401", code, body)
	}
}

// A renewed serving certificate is served on the next handshake.
func TestServingCertReload(t *testing.T) {
	h := start(t, &tapStandIn{})
	served := func() *x509.Certificate {
		conn, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: h.serverCA.pool(), MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	renewed := h.serverCA.writeServing(t, h.tlsDir)
	if got := served(); !got.Equal(renewed) {
		t.Errorf("served serial %v, want the renewed certificate's %v", got.SerialNumber, renewed.SerialNumber)
	}
}

// Answers are counted by status.
func TestMetrics(t *testing.T) {
	h := start(t, &tapStandIn{})
	h.sars.set(false, "", nil)
	cert := h.proxyCA.clientCert(t, frontProxyCN, x509.ExtKeyUsageClientAuth)
	h.get(t, nil, "/apis", asUser("alice"))
	h.get(t, &cert, deployTap, asUser("alice"))
	got := counts(t, h)
	// 200: at least the harness's wait for the CA.
	for _, code := range []string{"200", "401", "403"} {
		if got[code] < 1 {
			t.Errorf("mesh_viz_tap_api_requests_total{code=%q} = %v, want at least 1 (all: %v)", code, got[code], got)
		}
	}
}

// counts returns mesh_viz_tap_api_requests_total by code.
func counts(t *testing.T, h *harness) map[string]float64 {
	t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "mesh_viz_tap_api_requests_total" {
			t.Errorf("unexpected metric %s", f.GetName())
			continue
		}
		for _, m := range f.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return out
}

func TestRunConfig(t *testing.T) {
	err := Run(context.Background(), Config{})
	if err == nil || !contains(err.Error(), "no TLSDir", "no Kubernetes client", "no Tap handler") {
		t.Errorf("Run with an empty Config: %v, want every missing field named", err)
	}
	err = Run(context.Background(), Config{TLSDir: t.TempDir(), Client: fake.NewClientset(), Tap: &tapStandIn{}})
	if err == nil || !contains(err.Error(), "serving certificate", "mesh-tap-tls") {
		t.Errorf("Run without a certificate: %v, want it to name the Secret", err)
	}
}

// Run stops when its context ends, open taps included.
func TestRunStops(t *testing.T) {
	h := start(t, &tapStandIn{next: make(chan struct{})})
	cert := h.proxyCA.clientCert(t, frontProxyCN, x509.ExtKeyUsageClientAuth)
	resp, err := h.do(t, &cert, deployTap, asUser("alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatalf("first line %q, %v", line, err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- h.stop() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop with a tap open")
	}
}
