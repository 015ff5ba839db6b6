package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	pfconstants "k8s.io/apimachinery/pkg/util/portforward"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"
	"sigs.k8s.io/yaml"

	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/internal/names"
)

// The tests of `mesh identity` talk to apiStandIn, a stand-in for the
// Kubernetes API server, because client-go's fake clientset cannot serve a
// port-forward; the lead's end-to-end suite runs the command against the
// real cluster and real proxies. The stand-in answers only what the
// command asks: GET of a pod, a pod list by label selector, and the pod's
// portforward subresource, over SPDY as the API server and kubelet serve
// it, to a real HTTP server that plays the pod's proxy admin port.

// proxyAnswer is what a pod's proxy answers on its admin port. The zero
// value is a pod without one: the stand-in then serves no port-forward
// to it.
type proxyAnswer struct {
	code        int
	contentType string
	body        string
	// refused: the port-forward starts, and nothing listens on the admin
	// port.
	refused bool
	// forbidden: the API server refuses the port-forward (RBAC).
	forbidden bool
}

// apiStandIn holds the pods and their proxies; mu guards both, as the
// server reads them from its own goroutines.
type apiStandIn struct {
	tb      testing.TB
	mu      sync.Mutex
	pods    map[string]*corev1.Pod // by namespace/name
	answers map[string]proxyAnswer // by namespace/name
	admins  map[string]string      // the admin port's host:port, by namespace/name
	url     string
	// forwarded is set once a port-forward started.
	forwarded atomic.Bool
}

func newAPIStandIn(t testing.TB) *apiStandIn {
	t.Helper()
	a := &apiStandIn{tb: t, pods: map[string]*corev1.Pod{}, answers: map[string]proxyAnswer{}, admins: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods", a.listPods)
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{name}", a.getPod)
	mux.HandleFunc("/api/v1/namespaces/{ns}/pods/{name}/portforward", a.portForward)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		if a.forwarded.Load() {
			waitSPDYClosed(t)
		}
	})
	a.url = srv.URL
	return a
}

// waitSPDYClosed waits until no SPDY connection is still shutting down. A
// connection whose peer closed first lingers for up to a second
// (moby/spdystream's Connection.shutdown waits that long for someone to
// take its close error), on the client's side and on the stand-in's; the
// package's goroutine check would take that for a leak.
func waitSPDYClosed(t testing.TB) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		n := runtime.Stack(buf, true)
		if !bytes.Contains(buf[:n], []byte("spdystream.(*Connection).shutdown")) {
			return
		}
	}
	t.Errorf("SPDY connections still shutting down 5s after the test")
}

// addPod adds pod, whose proxy gives answer to GET /identity on a server
// of its own, and 404 to any other path.
func (a *apiStandIn) addPod(pod *corev1.Pod, answer proxyAnswer) {
	key := pod.Namespace + "/" + pod.Name
	var admin string
	switch {
	case answer.refused:
		admin = closedAddr(a.tb)
	case answer.code != 0:
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || r.URL.Path != "/"+identityPath {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", answer.contentType)
			w.WriteHeader(answer.code)
			io.WriteString(w, answer.body)
		}))
		a.tb.Cleanup(srv.Close)
		admin = srv.Listener.Addr().String()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pods[key], a.answers[key], a.admins[key] = pod, answer, admin
}

func (a *apiStandIn) getPod(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	pod := a.pods[r.PathValue("ns")+"/"+r.PathValue("name")]
	a.mu.Unlock()
	if pod == nil {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, `pods "`+r.PathValue("name")+`" not found`)
		return
	}
	writeObject(w, pod)
}

func (a *apiStandIn) listPods(w http.ResponseWriter, r *http.Request) {
	sel, err := labels.Parse(r.URL.Query().Get("labelSelector"))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	list := &corev1.PodList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "PodList"}}
	a.mu.Lock()
	for _, p := range a.pods {
		if p.Namespace == r.PathValue("ns") && sel.Matches(labels.Set(p.Labels)) {
			list.Items = append(list.Items, *p)
		}
	}
	a.mu.Unlock()
	writeObject(w, list)
}

// portForward serves a pod's portforward subresource as the API server
// does: SPDY tunnelled over a WebSocket, whose subprotocol names both.
// Each connection the client forwards arrives as a pair of streams with
// one requestID: the error stream, then the data stream, which the
// stand-in connects to the pod's admin server when the client asked for
// its port; when that fails, it says why on the error stream, as the
// kubelet does.
func (a *apiStandIn) portForward(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("ns") + "/" + r.PathValue("name")
	a.mu.Lock()
	answer, admin := a.answers[key], a.admins[key]
	a.mu.Unlock()
	switch {
	case answer.forbidden:
		writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, `pods "`+r.PathValue("name")+
			`" is forbidden: User "viewer" cannot create resource "pods/portforward" in API group "" in the namespace "`+r.PathValue("ns")+`"`)
		return
	case admin == "":
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "stand-in: no port-forward to pod "+key)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{pfconstants.WebsocketsSPDYTunnelingPrefix + portforward.PortForwardProtocolV1Name},
	})
	if err != nil {
		return // Accept answered
	}
	a.forwarded.Store(true)
	// SPDY frames travel in binary messages, as client-go's
	// TunnelingConnection reads and writes them.
	tunnel := websocket.NetConn(context.WithoutCancel(r.Context()), ws, websocket.MessageBinary)
	var mu sync.Mutex
	errorStreams := map[string]httpstream.Stream{} // by requestID, guarded by mu
	conn, err := spdy.NewServerConnection(tunnel, func(s httpstream.Stream, replySent <-chan struct{}) error {
		id := s.Headers().Get(corev1.PortForwardRequestIDHeader)
		mu.Lock()
		defer mu.Unlock()
		if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeError {
			errorStreams[id] = s
			return nil
		}
		errStream := errorStreams[id]
		delete(errorStreams, id)
		go forwardStream(s, errStream, replySent, admin, s.Headers().Get(corev1.PortHeader))
		return nil
	})
	if err != nil {
		tunnel.Close()
		return
	}
	<-conn.CloseChan()
}

// forwardStream copies between a port-forward's data stream and the pod's
// admin server, or writes to errStream why it cannot. Whatever the client
// sends is read to its end either way: spdystream blocks the whole
// connection on a data frame nobody reads.
func forwardStream(data, errStream httpstream.Stream, replySent <-chan struct{}, admin, port string) {
	<-replySent
	c, err := net.Dial("tcp", admin)
	if err == nil && port != strconv.Itoa(names.AdminPort) {
		c.Close()
		err = fmt.Errorf("stand-in: only port %d is forwarded", names.AdminPort)
	}
	if err != nil {
		fmt.Fprintf(errStream, "error forwarding port %s to pod stand-in: failed to connect to localhost:%s inside the pod: %v", port, port, err)
		errStream.Close()
		data.Close()
		io.Copy(io.Discard, data)
		return
	}
	defer c.Close()
	go func() {
		io.Copy(c, data)
		c.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(data, c)
	data.Close()
	errStream.Close()
}

func writeObject(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// writeStatus answers with a Status object, as the API server does.
func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(&metav1.Status{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
		Status:   metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg,
	})
}

// kubeconfig writes a kubeconfig for the stand-in, whose context has
// namespace ns (none if empty), and returns its path.
func (a *apiStandIn) kubeconfig(t testing.TB, ns string) string {
	t.Helper()
	cfg := `apiVersion: v1
kind: Config
clusters:
- name: stand-in
  cluster:
    server: ` + a.url + `
users:
- name: admin
  user:
    token: secret
contexts:
- name: stand-in
  context:
    cluster: stand-in
    user: admin
    namespace: "` + ns + `"
current-context: stand-in
`
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// testPod returns a running pod; meshed pods have the proxy as a native
// sidecar, the way the injector adds it.
func testPod(ns, name string, meshed bool) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "web"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.7"},
	}
	if meshed {
		always := corev1.ContainerRestartPolicyAlways
		p.Spec.InitContainers = []corev1.Container{{Name: names.ProxyContainerName, RestartPolicy: &always}}
	}
	return p
}

// identityAnswer is the proxy's answer for svid, made as proxy/identity.go
// makes it, with trust_anchors when anchors are given.
func identityAnswer(t testing.TB, svid *x509svid.SVID, anchors ...*x509.Certificate) proxyAnswer {
	t.Helper()
	leaf := svid.Certificates[0]
	var chain []byte
	for _, c := range svid.Certificates {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	answer := map[string]any{
		"spiffe_id": svid.ID.String(), "issuer": leaf.Issuer.String(), "serial": leaf.SerialNumber.Text(16),
		"not_before": leaf.NotBefore, "not_after": leaf.NotAfter, "chain_pem": string(chain),
	}
	if len(anchors) > 0 {
		var as []map[string]any
		for _, a := range anchors {
			as = append(as, map[string]any{"subject": a.Subject.String(), "not_after": a.NotAfter, "sha256": certSHA256(a)})
		}
		answer["trust_anchors"] = as
	}
	b, err := json.Marshal(answer)
	if err != nil {
		t.Fatal(err)
	}
	return proxyAnswer{code: http.StatusOK, contentType: "application/json", body: string(b)}
}

func certSHA256(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// runAt executes the mesh command with args at the clock now.
func runAt(t testing.TB, now time.Time, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	isolateKubeconfig(t)
	var out, errOut bytes.Buffer
	o := NewOptions(strings.NewReader(""), &out, &errOut)
	o.Now = func() time.Time { return now }
	cmd := NewRootCmd(o)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// leftBeforeExpiry is how long the SVIDs have left at the tests' clock.
const leftBeforeExpiry = 17*time.Hour + 3*time.Minute

// identityFixture is a namespace "shop" with meshed pods web-1 and web-2
// holding real SVIDs, the second also reporting its trust anchors.
type identityFixture struct {
	api        *apiStandIn
	kubeconfig string
	ca         *identitytest.CA
	svids      map[string]*x509svid.SVID
	now        time.Time
}

func newIdentityFixture(t testing.TB) *identityFixture {
	t.Helper()
	f := &identityFixture{api: newAPIStandIn(t), ca: identitytest.NewCA(t), svids: map[string]*x509svid.SVID{}}
	f.kubeconfig = f.api.kubeconfig(t, "")
	for _, name := range []string{"web-1", "web-2"} {
		svid := f.ca.IssueSVID(t, f.ca.ID("shop", "web"))
		f.svids[name] = svid
		var anchors []*x509.Certificate
		if name == "web-2" {
			anchors = []*x509.Certificate{f.ca.Root}
		}
		f.api.addPod(testPod("shop", name, true), identityAnswer(t, svid, anchors...))
	}
	f.now = f.svids["web-1"].Certificates[0].NotAfter.Add(-leftBeforeExpiry)
	return f
}

// mask replaces what differs from run to run in a table (serials,
// certificate times, the trust anchor's hash) with fixed names, and aligns
// the columns again as tabwriter does.
func (f *identityFixture) mask(out string) string {
	var pairs []string
	for name, svid := range f.svids {
		leaf := svid.Certificates[0]
		pairs = append(pairs, leaf.SerialNumber.Text(16), "SERIAL-OF-"+name,
			leaf.NotBefore.UTC().Format(time.RFC3339), "NOT-BEFORE",
			leaf.NotAfter.UTC().Format(time.RFC3339), "NOT-AFTER")
	}
	pairs = append(pairs, certSHA256(f.ca.Root), "ROOT-SHA256", f.ca.Root.NotAfter.UTC().Format(time.RFC3339), "ROOT-NOT-AFTER")
	out = strings.NewReplacer(pairs...).Replace(out)
	out = regexp.MustCompile(` {2,}`).ReplaceAllString(out, "\t")
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	tw.Write([]byte(out))
	tw.Flush()
	return b.String()
}

func TestIdentityTable(t *testing.T) {
	f := newIdentityFixture(t)
	tests := []struct {
		name   string
		args   []string
		golden string
	}{
		{name: "one pod", args: []string{"identity", "-n", "shop", "web-1"}, golden: "identity_table.golden"},
		{name: "pod/NAME", args: []string{"identity", "-n", "shop", "pod/web-1"}, golden: "identity_table.golden"},
		{name: "selector", args: []string{"identity", "-n", "shop", "-l", "app=web"}, golden: "identity_selector.golden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := runAt(t, f.now, append(tc.args, "--kubeconfig", f.kubeconfig)...)
			if err != nil {
				t.Fatalf("%v\nstderr: %s", err, stderr)
			}
			got := f.mask(out)
			path := filepath.Join("testdata", tc.golden)
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
				t.Errorf("mesh %s differs from %s (-want +got); rerun with -update if intended:\n%s", strings.Join(tc.args, " "), path, diff)
			}
		})
	}
}

func TestIdentityStructured(t *testing.T) {
	f := newIdentityFixture(t)
	want := identityReport{}
	for _, name := range []string{"web-1", "web-2"} {
		svid := f.svids[name]
		leaf := svid.Certificates[0]
		var anchors []trustAnchor
		if name == "web-2" {
			anchors = []trustAnchor{{Subject: f.ca.Root.Subject.String(), NotAfter: f.ca.Root.NotAfter, SHA256: certSHA256(f.ca.Root)}}
		}
		var chain []byte
		for _, c := range svid.Certificates {
			chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		want.Pods = append(want.Pods, podIdentity{
			Namespace: "shop", Pod: name, SPIFFEID: "spiffe://cluster.local/ns/shop/sa/web",
			Issuer: f.ca.Issuer.Subject.String(), Serial: leaf.SerialNumber.Text(16),
			NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, TrustAnchors: anchors, ChainPEM: string(chain),
		})
	}
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			out, stderr, err := runAt(t, f.now, "identity", "-n", "shop", "-l", "app=web", "-o", format, "--kubeconfig", f.kubeconfig)
			if err != nil {
				t.Fatalf("%v\nstderr: %s", err, stderr)
			}
			var got identityReport
			if err := yaml.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("not %s: %v\n%s", format, err, out)
			}
			if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(podIdentity{}), cmpopts.EquateApproxTime(0)); diff != "" {
				t.Errorf("-o %s (-want +got):\n%s", format, diff)
			}
		})
	}
}

func TestIdentityErrors(t *testing.T) {
	f := newIdentityFixture(t)
	text := func(code int, body string) proxyAnswer {
		return proxyAnswer{code: code, contentType: "text/plain; charset=utf-8", body: body + "\n"}
	}
	pending := testPod("shop", "pending", true)
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending}
	f.api.addPod(testPod("shop", "plain", false), proxyAnswer{})
	f.api.addPod(pending, proxyAnswer{})
	f.api.addPod(testPod("shop", "starting", true), text(http.StatusServiceUnavailable, "no certificate yet: context deadline exceeded"))
	f.api.addPod(testPod("shop", "old", true), text(http.StatusNotFound, "404 page not found"))
	f.api.addPod(testPod("shop", "garbled", true), proxyAnswer{code: http.StatusOK, contentType: "application/json",
		body: `{"spiffe_id": "spiffe://cluster.local/ns/shop/sa/web", "chain_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}`})
	f.api.addPod(testPod("shop", "chatty", true), text(http.StatusOK, "hello"))
	f.api.addPod(testPod("shop", "refusing", true), proxyAnswer{refused: true})
	f.api.addPod(testPod("shop", "secret", true), proxyAnswer{forbidden: true})

	tests := []struct {
		name   string
		pod    string
		wantIs error
		want   []string
	}{
		{name: "unknown pod", pod: "missing", wantIs: errPodNotFound, want: []string{"pod missing not found in namespace shop"}},
		{name: "not meshed", pod: "plain", wantIs: errNotMeshed, want: []string{
			"pod shop/plain is not meshed: it has no mesh-proxy container; annotate its namespace mesh.dev/inject=enabled and restart it"}},
		{name: "not running", pod: "pending", want: []string{"pod shop/pending is Pending, not running", "kubectl -n shop describe pod pending"}},
		{name: "no certificate yet", pod: "starting", wantIs: errNoCertificate, want: []string{
			"pod shop/starting: the proxy has no certificate yet (no certificate yet: context deadline exceeded)", "not ready until", "logs starting -c mesh-proxy"}},
		{name: "proxy without identity", pod: "old", wantIs: errNoIdentity, want: []string{
			"pod shop/old: the proxy runs without an identity (installed before identity, or --identity-addr unset)"}},
		{name: "chain does not parse", pod: "garbled", wantIs: errBadChain, want: []string{"pod shop/garbled: the proxy's certificate chain does not parse: PEM block 1"}},
		{name: "answer not JSON", pod: "chatty", want: []string{"pod shop/chatty: the proxy's answer to GET /identity is not its JSON"}},
		{name: "proxy unreachable", pod: "refusing", want: []string{
			"pod shop/refusing: cannot reach its proxy on port 4191: error forwarding port 4191", "connection refused",
			"see kubectl -n shop logs refusing -c mesh-proxy"}},
		{name: "port-forward forbidden", pod: "secret", want: []string{
			"port-forward to pod shop/secret: ", "is forbidden", "you need permission to create pods/portforward in namespace shop"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runAt(t, f.now, "identity", "-n", "shop", tc.pod, "--kubeconfig", f.kubeconfig)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("err = %v, want one wrapping %q", err, tc.wantIs)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v\nwant it to contain %q", err, w)
				}
			}
			if out != "" {
				t.Errorf("output for a failed pod: %q", out)
			}
		})
	}
}

// TestIdentityPartialFailure: the pods that can be read are shown, the
// others reported, and the exit is non-zero.
func TestIdentityPartialFailure(t *testing.T) {
	f := newIdentityFixture(t)
	f.api.addPod(testPod("shop", "plain", false), proxyAnswer{})

	out, stderr, err := runAt(t, f.now, "identity", "-n", "shop", "web-1", "plain", "--kubeconfig", f.kubeconfig)
	if !errors.Is(err, errNotMeshed) {
		t.Errorf("err = %v, want the one failure itself", err)
	}
	if !strings.Contains(out, "web-1") || strings.Contains(out, "plain") || stderr != "" {
		t.Errorf("want only web-1 in the table and nothing on stderr; stdout:\n%s\nstderr:\n%s", out, stderr)
	}

	out, stderr, err = runAt(t, f.now, "identity", "-n", "shop", "plain", "web-1", "missing", "-o", "json", "--kubeconfig", f.kubeconfig)
	var failed *podsFailedError
	if !errors.As(err, &failed) || err.Error() != "2 of 3 pods failed" {
		t.Errorf("err = %v, want 2 of 3 pods failed", err)
	}
	for _, w := range []string{"error: pod shop/plain is not meshed", "error: pod missing not found"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr)
		}
	}
	var got identityReport
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	var summary []string
	for _, p := range got.Pods {
		summary = append(summary, p.Pod+" "+p.SPIFFEID+" "+strings.SplitN(p.Error, ":", 2)[0])
	}
	want := []string{"plain  pod shop/plain is not meshed", "web-1 spiffe://cluster.local/ns/shop/sa/web ", "missing  pod missing not found in namespace shop"}
	if diff := cmp.Diff(want, summary); diff != "" {
		t.Errorf("pods in the JSON (-want +got):\n%s", diff)
	}
}

func TestIdentityNamespaceFromContext(t *testing.T) {
	f := newIdentityFixture(t)
	out, _, err := runAt(t, f.now, "identity", "web-2", "--kubeconfig", f.api.kubeconfig(t, "shop"))
	if err != nil || !strings.Contains(out, "web-2") {
		t.Errorf("err = %v, output:\n%s", err, out)
	}
	_, _, err = runAt(t, f.now, "identity", "web-2", "--kubeconfig", f.kubeconfig)
	if !errors.Is(err, errPodNotFound) || !strings.Contains(err.Error(), "namespace default") {
		t.Errorf("err = %v, want not found in namespace default", err)
	}
}

func TestIdentityUsage(t *testing.T) {
	f := newIdentityFixture(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "nothing named", args: []string{"identity", "-n", "shop"}, want: "name a pod"},
		{name: "names and selector", args: []string{"identity", "-n", "shop", "web-1", "-l", "app=web"}, want: "not both"},
		{name: "not a pod", args: []string{"identity", "-n", "shop", "deploy/web"}, want: `"deploy/web": want a pod name or pod/NAME`},
		{name: "bad output", args: []string{"identity", "-n", "shop", "web-1", "-o", "wide"}, want: "want one of [table json yaml]"},
		{name: "selector matches nothing", args: []string{"identity", "-n", "shop", "-l", "app=db"}, want: `no pods in namespace shop match "app=db"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runAt(t, f.now, append(tc.args, "--kubeconfig", f.kubeconfig)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, _, err := run(t, "", "identity", "-n", "shop", "web-1"); !errors.Is(err, ErrNoKubeconfig) {
		t.Errorf("without a kubeconfig: err = %v, want ErrNoKubeconfig", err)
	}
}

func TestTimeLeft(t *testing.T) {
	from := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	to := from.Add(24 * time.Hour)
	tests := []struct {
		now  time.Time
		want string
	}{
		{now: to.Add(-leftBeforeExpiry - 59*time.Second), want: "in 17h3m"},
		{now: to.Add(-17 * time.Hour), want: "in 17h"},
		{now: to.Add(-5 * time.Minute), want: "in 5m"},
		{now: to.Add(-42 * time.Second), want: "in 42s"},
		{now: to, want: "expired 0s ago"},
		{now: to.Add(2 * time.Hour), want: "expired 2h ago"},
		{now: to.Add(50 * time.Hour), want: "expired 2d2h ago"},
		{now: to.Add(72 * time.Hour), want: "expired 3d ago"},
		{now: from.Add(-5 * time.Minute), want: "not valid for another 5m"},
	}
	for _, tc := range tests {
		if got := timeLeft(from, to, tc.now); got != tc.want {
			t.Errorf("timeLeft at %s = %q, want %q", tc.now.Format(time.RFC3339), got, tc.want)
		}
	}
}

// FuzzParseIdentity feeds parseIdentity what a proxy (or anything on its
// port) might answer: it must return an error or a certificate with a
// SPIFFE ID, never panic.
func FuzzParseIdentity(f *testing.F) {
	ca := identitytest.NewCA(f)
	svid := ca.IssueSVID(f, ca.ID("shop", "web"))
	f.Add([]byte(identityAnswer(f, svid, ca.Root).body)) // a real answer, with trust anchors
	f.Add([]byte(`{"chain_pem": ""}`))                   // no certificate
	f.Add([]byte(`{"chain_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}`))
	f.Add([]byte(`{"chain_pem": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}`))
	f.Add([]byte(`{"trust_anchors": [{"not_after": "yesterday"}]}`))
	f.Add([]byte("404 page not found\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		id, err := parseIdentity(body)
		if err == nil && !strings.HasPrefix(id.SPIFFEID, "spiffe://") {
			t.Errorf("no error, and SPIFFE ID %q", id.SPIFFEID)
		}
	})
}
