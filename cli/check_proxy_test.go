package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/version"
)

// urlReader reads a test's admin server at base directly, as the
// port-forward of openForward reaches the proxy on loopback.
type urlReader struct{ base string }

func (r urlReader) Public(ctx context.Context, pod *corev1.Pod, path string) (int, []byte, error) {
	return r.Local(ctx, pod, path)
}

func (r urlReader) Local(ctx context.Context, _ *corev1.Pod, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.base+"/"+path, nil)
	if err != nil {
		return 0, nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res.StatusCode, body, err
}

func TestCheckProxy(t *testing.T) {
	ca := identitytest.NewCA(t)
	svid := ca.IssueSVID(t, ca.ID("shop", "web"))
	leaf := svid.Certificates[0]
	valid := leaf.NotAfter.Add(-leftBeforeExpiry)
	good := diagProxy{identity: []byte(identityAnswer(t, svid, ca.Root).body), policy: policyBody(t, diagPolicy())}
	meshedPod := func(name string) *corev1.Pod {
		p := testPod("shop", name, true)
		p.Labels[names.LabelControlPlaneNamespace] = manifests.DefaultNamespace
		p.Annotations = map[string]string{names.AnnotationProxyVersion: version.Version}
		return p
	}
	type want struct {
		status checkStatus
		text   string // in the detail or the hint
	}
	for _, tc := range []struct {
		name    string
		proxies map[string]diagProxy // by pod name; a pod missing here cannot be reached
		now     time.Time
		// version is web-2's proxy version; "" is the CLI's.
		version string
		// want has one item per check of proxyCheckList, in order. The
		// version check counts the pending pod too: its version is in
		// its annotations, running or not.
		want []want
	}{
		{
			name: "all good", proxies: map[string]diagProxy{"web-1": good, "web-2": good}, now: valid,
			want: []want{
				{statusOK, version.Version + ", 3 pods"}, {statusOK, "2 pods"},
				{statusOK, "2 certificates, the first to expire in 17h3m"}, {statusOK, "2 proxies, 1 revision"}, {statusOK, "2 proxies"},
			},
		},
		{
			name: "skewed, unreachable", proxies: map[string]diagProxy{"web-1": good}, now: valid, version: "v0.0.1",
			want: []want{
				{statusWarn, "1 of 3 meshed pods run another proxy version than " + version.Version + ": shop/web-2 (v0.0.1); restart their workloads"},
				{statusFail, "1 of 2 proxies could not be asked:\nno port-forward to shop/web-2"},
				{statusOK, "1 certificate"}, {statusOK, "1 proxy, 1 revision"}, {statusOK, "1 proxy"},
			},
		},
		{
			name: "expired", proxies: map[string]diagProxy{"web-1": good, "web-2": good}, now: leaf.NotAfter.Add(time.Minute),
			want: []want{
				{statusOK, "3 pods"}, {statusOK, "2 pods"},
				{statusFail, "2 proxies hold a certificate that is not valid now: shop/web-1 (expired 1m ago), shop/web-2 (expired 1m ago); peers refuse their mTLS"},
				{statusOK, "2 proxies"}, {statusOK, "2 proxies"},
			},
		},
		{
			name: "expiring, no policy, not ready",
			proxies: map[string]diagProxy{
				"web-1": {identity: good.identity, policy: policyBody(t, nil), notReady: errors.New("no inbound policy from the controller yet")},
				"web-2": {},
			},
			now: leaf.NotAfter.Add(-30 * time.Minute),
			want: []want{
				{statusOK, "3 pods"}, {statusOK, "2 pods"},
				{statusWarn, "1 proxy holds a certificate that expires within 1h and was not renewed: shop/web-1 (expires in 30m)"},
				{statusFail, "1 proxy has no inbound policy from the controller: shop/web-1; until they do they refuse inbound connections"},
				{statusFail, "1 proxy is not ready: shop/web-1 (not ready: no inbound policy from the controller yet)"},
			},
		},
		{
			name: "no identity, no policy endpoint", proxies: map[string]diagProxy{"web-1": {}, "web-2": {}}, now: valid,
			want: []want{
				{statusOK, "3 pods"}, {statusOK, "2 pods"},
				{statusWarn, "cannot tell for 2 proxies: shop/web-1 (runs without an identity: its traffic is not mTLS)"},
				{statusWarn, "2 proxies serve no /policy"},
				{statusOK, "2 proxies"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			web2 := meshedPod("web-2")
			if tc.version != "" {
				web2.Annotations[names.AnnotationProxyVersion] = tc.version
			}
			pending := meshedPod("pending")
			pending.Status.Phase, pending.Status.PodIP = corev1.PodPending, ""
			objs := []runtime.Object{meshedPod("web-1"), web2, pending, testPod("shop", "plain", false)}
			addrs := map[string]string{}
			for name, p := range tc.proxies {
				addrs[name] = p.start(t)
			}
			open := func(_ context.Context, _ *kube, pod *corev1.Pod) (adminReader, func(), error) {
				addr, ok := addrs[pod.Name]
				if !ok {
					return nil, nil, fmt.Errorf("no port-forward to %s/%s", pod.Namespace, pod.Name)
				}
				return urlReader{addr}, func() {}, nil
			}
			c := &checker{k: &kube{client: fake.NewClientset(objs...)}, ns: manifests.DefaultNamespace, now: tc.now, controlVersion: version.Version}
			checks := proxyCheckList("shop", open)
			if len(checks) != len(tc.want) {
				t.Fatalf("%d checks, want %d", len(checks), len(tc.want))
			}
			for i, ch := range checks {
				r := runChecks(context.Background(), NewOptions(nil, nil, nil), []check{{category: ch.category, name: ch.name,
					run: func(ctx context.Context, _ *checker) (string, error) { return ch.run(ctx, c) }}}).Checks[0]
				w := tc.want[i]
				if r.Status != w.status || !strings.Contains(r.Detail+r.Hint, w.text) {
					t.Errorf("%s: %s %q %q\nwant %s with %q", ch.name, r.Status, r.Detail, r.Hint, w.status, w.text)
				}
			}
		})
	}
}

func TestCheckProxyFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "--proxy", "--pre"}, "--proxy checks an installed mesh; --pre checks that it can be installed: pass one"},
		{[]string{"check", "-n", "shop"}, "--namespace selects the proxies of --proxy; pass --proxy too"},
	} {
		_, _, err := run(t, "", tc.args...)
		if err == nil || err.Error() != tc.want {
			t.Errorf("mesh %s: %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

// TestAskProxyThroughPortForward asks a proxy through openForward's one
// port-forward, to a real admin handler behind apiStandIn.
func TestAskProxyThroughPortForward(t *testing.T) {
	f := newDiagFixture(t)
	isolateKubeconfig(t)
	o := NewOptions(nil, io.Discard, io.Discard)
	o.Kubeconfig = f.kubeconfig
	k, err := o.kube()
	if err != nil {
		t.Fatal(err)
	}
	pod := testPod("shop", "web-1", true)
	st := askProxy(context.Background(), k, pod, openForward)
	if st.err != nil || st.ready != nil || st.identityErr != nil || st.policyErr != nil {
		t.Fatalf("asking web-1: %v; ready %v; identity %v; policy %v", st.err, st.ready, st.identityErr, st.policyErr)
	}
	if !st.received || st.revision != "42" || st.identity.SPIFFEID != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Errorf("web-1: received %v revision %q identity %q; want revision 42 of spiffe://cluster.local/ns/shop/sa/web", st.received, st.revision, st.identity.SPIFFEID)
	}
	st = askProxy(context.Background(), k, testPod("shop", "plain", false), openForward)
	if st.err == nil {
		t.Error("asking a pod without a proxy succeeded")
	}
}
