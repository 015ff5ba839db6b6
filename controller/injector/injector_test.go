package injector

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/events"

	"github.com/mesh-dev/mesh/controller/injector/injectortest"
	"github.com/mesh-dev/mesh/install/inject"
	"github.com/mesh-dev/mesh/internal/names"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var testInject = inject.Config{ProxyImage: "ghcr.io/mesh-dev/mesh-proxy:v0.1.0", Version: "v0.1.0"}

// server is a webhook under test: the real Run over HTTPS on loopback with
// a per-test CA. The namespace cache and the event sink are a fake
// clientset: this suite checks the webhook's side of the API; the real API
// server's side (registration, TLS from the Secret, the patch applied to
// real pods) is exercised by the end-to-end suite on the local cluster.
type server struct {
	addr    string
	url     string
	ca      *injectortest.CA
	tlsDir  string
	client  *fake.Clientset
	metrics *Metrics
	reg     *prometheus.Registry
}

type serverOptions struct {
	namespaces []*corev1.Namespace
	lister     corelisters.NamespaceLister // nil: an informer on the fake clientset
	// idleTimeout is Config.IdleTimeout.
	idleTimeout time.Duration
}

func startServer(t *testing.T, opts serverOptions) *server {
	t.Helper()
	objs := make([]runtime.Object, len(opts.namespaces))
	for i, ns := range opts.namespaces {
		objs[i] = ns
	}
	s := &server{ca: injectortest.NewCA(t), tlsDir: t.TempDir(), client: fake.NewClientset(objs...), reg: prometheus.NewRegistry()}
	s.ca.WriteServing(t, s.tlsDir)
	s.metrics = NewMetrics(s.reg)

	ctx, cancel := context.WithCancel(t.Context())
	lister := opts.lister
	if lister == nil {
		factory := informers.NewSharedInformerFactory(s.client, 0)
		lister = factory.Core().V1().Namespaces().Lister()
		factory.Start(ctx.Done())
		t.Cleanup(factory.Shutdown) // runs after cancel: cleanups are LIFO
		for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
			if !ok {
				t.Fatalf("%v cache did not sync", typ)
			}
		}
	}
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: s.client.EventsV1()})
	if err := broadcaster.StartRecordingToSinkWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broadcaster.Shutdown)

	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Addr:       "127.0.0.1:0",
			TLSDir:     s.tlsDir,
			Inject:     testInject,
			Namespaces: lister,
			Events:     broadcaster.NewRecorder(scheme.Scheme, "mesh-injector"),
			Metrics:    s.metrics,
			Log:        slog.New(slog.NewTextHandler(t.Output(), nil)),
			Ready:      func(a net.Addr) { ready <- a },

			IdleTimeout: opts.idleTimeout,
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case a := <-ready:
		s.addr = a.String()
		s.url = "https://" + s.addr + Path
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	return s
}

// review is an AdmissionReview for creating pod in namespace ns, as the API
// server sends it.
func review(t testing.TB, ns string, pod *corev1.Pod, dryRun bool) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	r := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("req-" + pod.GenerateName + pod.Name),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: ns,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
			DryRun:    &dryRun,
		},
	}
	out, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// post sends body and returns the status and the decoded answer, if any.
func (s *server) post(t testing.TB, body []byte) (int, *admissionv1.AdmissionReview, string) {
	t.Helper()
	resp, err := s.ca.Client().Post(s.url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, string(raw)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("answer %s: %v", raw, err)
	}
	return resp.StatusCode, &out, string(raw)
}

func enabledNS(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: name, UID: types.UID("uid-" + name),
		Annotations: map[string]string{names.AnnotationInject: names.Enabled},
	}}
}

// ignoredNS is an enabled namespace an admin exempted from the webhook.
func ignoredNS(name string) *corev1.Namespace {
	ns := enabledNS(name)
	ns.Labels = map[string]string{names.LabelWebhook: names.WebhookIgnore}
	return ns
}

// replicaSetPod is a pod as a ReplicaSet creates it: a generated name and
// no namespace in the body.
func replicaSetPod(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "web-7d4b9c-",
			Annotations:  annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d4b9c", UID: "rs-uid", Controller: new(true),
			}},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
	}
}

func TestWebhook(t *testing.T) {
	s := startServer(t, serverOptions{namespaces: []*corev1.Namespace{
		enabledNS("shop"),
		{ObjectMeta: metav1.ObjectMeta{Name: "plain", UID: "uid-plain"}},
		ignoredNS("quiet"),
	}})
	bare := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "bare", Annotations: map[string]string{names.AnnotationInject: names.Enabled, names.ConfigPrefix + "color": "red"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	hostNet := replicaSetPod(nil)
	hostNet.Spec.HostNetwork = true

	tests := []struct {
		name        string
		ns          string
		pod         *corev1.Pod
		dryRun      bool
		wantPatched bool
		wantWarn    int
		wantEvents  []string // "Reason Kind/name"
		wantMetric  [2]string
	}{
		{name: "namespace enabled", ns: "shop", pod: replicaSetPod(nil), wantPatched: true, wantMetric: [2]string{"injected", "none"}},
		{name: "namespace not enabled", ns: "plain", pod: replicaSetPod(nil), wantMetric: [2]string{"skipped", "not-enabled"}},
		{
			name: "bad annotation: event on the owner", ns: "shop", pod: replicaSetPod(map[string]string{names.AnnotationOpaquePorts: "3306,mysql"}),
			wantPatched: true, wantWarn: 1, wantEvents: []string{"InvalidAnnotation ReplicaSet/web-7d4b9c"}, wantMetric: [2]string{"injected", "none"},
		},
		{
			name: "no owner: event on the namespace", ns: "plain", pod: bare,
			wantPatched: true, wantWarn: 1, wantEvents: []string{"InvalidAnnotation Namespace/plain"}, wantMetric: [2]string{"injected", "none"},
		},
		{
			name: "host network", ns: "shop", pod: hostNet,
			wantWarn: 1, wantEvents: []string{"InjectionSkipped ReplicaSet/web-7d4b9c"}, wantMetric: [2]string{"skipped", "host-network"},
		},
		{
			name: "dry run: warnings but no event", ns: "shop", pod: replicaSetPod(map[string]string{names.AnnotationProxyLogLevel: "loud"}), dryRun: true,
			wantPatched: true, wantWarn: 1, wantMetric: [2]string{"injected", "none"},
		},
		{name: "namespace missing from the cache", ns: "new", pod: replicaSetPod(nil), wantMetric: [2]string{"skipped", "not-enabled"}},
		// mesh.dev/webhook=ignore wins over the namespace's annotation, and
		// over the pod's own, bad ones included: no patch, no warning, no
		// event.
		{name: "namespace labelled webhook=ignore", ns: "quiet", pod: replicaSetPod(nil), wantMetric: [2]string{"skipped", reasonIgnored}},
		{
			name: "namespace labelled webhook=ignore, pod asks", ns: "quiet",
			pod:        replicaSetPod(map[string]string{names.AnnotationInject: names.Enabled, names.AnnotationOpaquePorts: "3306,mysql"}),
			wantMetric: [2]string{"skipped", reasonIgnored},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearEvents(t, s.client)
			before := testutil.ToFloat64(s.metrics.injections.WithLabelValues(tc.wantMetric[0], tc.wantMetric[1]))
			body := review(t, tc.ns, tc.pod, tc.dryRun)
			status, out, raw := s.post(t, body)
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, raw)
			}
			resp := out.Response
			if out.Kind != "AdmissionReview" || out.APIVersion != "admission.k8s.io/v1" || resp == nil {
				t.Fatalf("answer is not an AdmissionReview: %s", raw)
			}
			if !resp.Allowed || resp.UID != types.UID("req-"+tc.pod.GenerateName+tc.pod.Name) {
				t.Errorf("Allowed=%v UID=%q", resp.Allowed, resp.UID)
			}
			if got := len(resp.Patch) > 0; got != tc.wantPatched {
				t.Fatalf("patched=%v, want %v: %s", got, tc.wantPatched, raw)
			}
			if tc.wantPatched {
				checkPatch(t, tc.pod, resp)
			}
			if len(resp.Warnings) != tc.wantWarn {
				t.Errorf("warnings %q, want %d", resp.Warnings, tc.wantWarn)
			}
			for _, w := range resp.Warnings {
				if !strings.Contains(w, "mesh.dev/") {
					t.Errorf("warning %q names no annotation", w)
				}
			}
			if diff := cmp.Diff(tc.wantEvents, waitEvents(t, s.client, len(tc.wantEvents))); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if got := testutil.ToFloat64(s.metrics.injections.WithLabelValues(tc.wantMetric[0], tc.wantMetric[1])); got != before+1 {
				t.Errorf("injections_total%v went from %v to %v", tc.wantMetric, before, got)
			}
		})
	}
	if got := testutil.ToFloat64(s.metrics.warnings.WithLabelValues(names.ConfigPrefix + "unknown")); got != 1 {
		t.Errorf("warnings_total{annotation=config.mesh.dev/unknown} = %v, want 1", got)
	}
}

// checkPatch applies the answer's patch to the pod that was sent and looks
// for the sidecar.
func checkPatch(t testing.TB, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) {
	t.Helper()
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v", resp.PatchType)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := json.Marshal(pod)
	patched, err := p.Apply(orig)
	if err != nil {
		t.Fatalf("apply %s: %v", resp.Patch, err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	var containers []string
	for _, c := range got.Spec.InitContainers {
		containers = append(containers, c.Name)
	}
	if diff := cmp.Diff([]string{names.InitContainerName, names.ProxyContainerName}, containers); diff != "" {
		t.Errorf("init containers after the patch (-want +got):\n%s", diff)
	}
	if got.Annotations[names.AnnotationProxyVersion] != testInject.Version {
		t.Errorf("annotations after the patch: %v", got.Annotations)
	}
}

func clearEvents(t testing.TB, c *fake.Clientset) {
	t.Helper()
	for _, e := range listEvents(t, c) {
		if err := c.EventsV1().Events(e.Namespace).Delete(t.Context(), e.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func listEvents(t testing.TB, c *fake.Clientset) []eventsv1.Event {
	t.Helper()
	list, err := c.EventsV1().Events("").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// waitEvents waits for n events to reach the fake API server (the recorder
// sends them asynchronously), then a little longer to catch extra ones.
// Each is summed up as "Reason Kind/name".
func waitEvents(t testing.TB, c *fake.Clientset, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(listEvents(t, c)) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // no event is expected after the n-th
	var out []string
	for _, e := range listEvents(t, c) {
		if e.Type != corev1.EventTypeWarning || !strings.Contains(e.Note, "mesh.dev/") {
			t.Errorf("event %s %s: %q", e.Type, e.Reason, e.Note)
		}
		if e.Regarding.Kind == "ReplicaSet" && (e.Regarding.UID != "rs-uid" || e.Regarding.Namespace != "shop") ||
			e.Regarding.Kind == "Namespace" && e.Regarding.UID != types.UID("uid-"+e.Regarding.Name) {
			t.Errorf("event regards %+v", e.Regarding)
		}
		out = append(out, fmt.Sprintf("%s %s/%s", e.Reason, e.Regarding.Kind, e.Regarding.Name))
	}
	return out
}

func TestBadRequests(t *testing.T) {
	s := startServer(t, serverOptions{})
	v1beta1 := strings.Replace(string(review(t, "shop", replicaSetPod(nil), false)), "admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1)
	tests := []struct {
		name        string
		method      string
		contentType string
		body        string
		wantStatus  int
		wantMessage string
	}{
		{name: "GET", method: http.MethodGet, wantStatus: http.StatusMethodNotAllowed, wantMessage: "POST"},
		{name: "not JSON", contentType: "text/plain", body: "{}", wantStatus: http.StatusUnsupportedMediaType, wantMessage: "application/json"},
		{name: "garbage", body: "{not json", wantStatus: http.StatusBadRequest, wantMessage: "malformed AdmissionReview"},
		{name: "empty", body: "", wantStatus: http.StatusBadRequest, wantMessage: "malformed AdmissionReview"},
		{name: "wrong kind", body: `{"apiVersion":"v1","kind":"Pod"}`, wantStatus: http.StatusBadRequest, wantMessage: "want an AdmissionReview of admission.k8s.io/v1"},
		{name: "v1beta1", body: v1beta1, wantStatus: http.StatusBadRequest, wantMessage: "admission.k8s.io/v1beta1"},
		{name: "no request", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, wantStatus: http.StatusBadRequest, wantMessage: "no request"},
		{name: "too large", body: `{"apiVersion":"` + strings.Repeat("x", maxReviewBytes) + `"}`, wantStatus: http.StatusRequestEntityTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.method == "" {
				tc.method = http.MethodPost
			}
			if tc.contentType == "" {
				tc.contentType = "application/json; charset=utf-8"
			}
			req, err := http.NewRequestWithContext(t.Context(), tc.method, s.url, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tc.contentType)
			resp, err := s.ca.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			msg, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(msg), tc.wantMessage) {
				t.Errorf("got %d %q, want %d with %q", resp.StatusCode, msg, tc.wantStatus, tc.wantMessage)
			}
		})
	}
}

// panickingLister stands for a bug anywhere in the admission path.
type panickingLister struct{ corelisters.NamespaceLister }

func (panickingLister) Get(string) (*corev1.Namespace, error) { panic("bug") }

func TestFailuresAdmitThePod(t *testing.T) {
	tests := []struct {
		name       string
		lister     corelisters.NamespaceLister
		body       func(t testing.TB) []byte
		wantReason string
	}{
		{
			name: "panic", lister: panickingLister{}, wantReason: reasonInternal,
			body: func(t testing.TB) []byte { return review(t, "shop", replicaSetPod(nil), false) },
		},
		{
			name: "undecodable pod", wantReason: reasonBadPod,
			body: func(t testing.TB) []byte {
				return bytes.Replace(review(t, "shop", replicaSetPod(nil), false), []byte(`"containers":[`), []byte(`"containers":7,"x":[`), 1)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, serverOptions{namespaces: []*corev1.Namespace{enabledNS("shop")}, lister: tc.lister})
			status, out, raw := s.post(t, tc.body(t))
			if status != http.StatusOK || !out.Response.Allowed || len(out.Response.Patch) != 0 || out.Response.UID == "" {
				t.Errorf("got %d %s, want the pod allowed unchanged", status, raw)
			}
			if got := testutil.ToFloat64(s.metrics.injections.WithLabelValues(resultError, tc.wantReason)); got != 1 {
				t.Errorf("injections_total{error,%s} = %v", tc.wantReason, got)
			}
		})
	}
}

func TestNotAPodCreation(t *testing.T) {
	s := startServer(t, serverOptions{namespaces: []*corev1.Namespace{enabledNS("shop")}})
	body := bytes.Replace(review(t, "shop", replicaSetPod(nil), false), []byte(`"operation":"CREATE"`), []byte(`"operation":"UPDATE"`), 1)
	status, out, raw := s.post(t, body)
	if status != http.StatusOK || !out.Response.Allowed || len(out.Response.Patch) != 0 {
		t.Errorf("got %d %s, want allowed without a patch", status, raw)
	}
}

// TestIdleConnectionClosed: a keep-alive connection that sends no next
// review is closed after the idle timeout; any pod can reach the port.
func TestIdleConnectionClosed(t *testing.T) {
	const idle = 200 * time.Millisecond
	s := startServer(t, serverOptions{namespaces: []*corev1.Namespace{enabledNS("shop")}, idleTimeout: idle})
	tlsConfig := s.ca.Client().Transport.(*http.Transport).TLSClientConfig
	c, err := tls.Dial("tcp", s.addr, tlsConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	body := review(t, "shop", replicaSetPod(nil), false)
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: injector\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", Path, len(body), body)
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Close {
		t.Fatalf("review: %s, close %v; want 200 on a kept-alive connection", res.Status, res.Close)
	}
	start := time.Now()
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("read on the idle connection: %v, want EOF", err)
	}
	if waited := time.Since(start); waited < idle/2 || waited > 5*time.Second {
		t.Errorf("closed after %s idle, want about %s", waited, idle)
	}
}
