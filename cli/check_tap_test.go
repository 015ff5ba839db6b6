package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mesh-dev/mesh/install/certs"
	"github.com/mesh-dev/mesh/install/manifests"
)

// renderedTap returns the APIService and Secret of the tap API as mesh
// install --dry-run renders them for namespace ns.
func renderedTap(t testing.TB, ns string) (*unstructured.Unstructured, *corev1.Secret) {
	t.Helper()
	out, _, err := run(t, "", "install", "--dry-run", "--control-plane-namespace", ns)
	if err != nil {
		t.Fatal(err)
	}
	docs := decodeDocs(t, []byte(out))
	api := objectOf(t, docs, "APIService", manifests.TapAPIServiceName)
	secret := &corev1.Secret{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(objectOf(t, docs, "Secret", manifests.TapTLSSecretName).Object, secret); err != nil {
		t.Fatal(err)
	}
	return api, secret
}

// withAvailable sets the APIService's Available condition, as the API
// server's availability check does.
func withAvailable(t testing.TB, api *unstructured.Unstructured, status, reason, message string) *unstructured.Unstructured {
	t.Helper()
	api = api.DeepCopy()
	cond := []any{map[string]any{"type": "Available", "status": status, "reason": reason, "message": message}}
	if err := unstructured.SetNestedSlice(api.Object, cond, "status", "conditions"); err != nil {
		t.Fatal(err)
	}
	return api
}

// tapChecker is a checker at now whose cluster holds api and secret,
// either of which may be nil.
func tapChecker(ns string, now time.Time, api *unstructured.Unstructured, secret *corev1.Secret) *checker {
	var dynObjs []runtime.Object
	if api != nil {
		dynObjs = append(dynObjs, api)
	}
	var objs []runtime.Object
	if secret != nil {
		objs = append(objs, secret)
	}
	scheme := runtime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{apiServiceGVR: "APIServiceList"}, dynObjs...)
	return &checker{k: &kube{client: fake.NewClientset(objs...), dynamic: dyn}, ns: ns, now: now}
}

func TestCheckTapAPIService(t *testing.T) {
	const ns = "mesh"
	api, _ := renderedTap(t, ns)
	other := api.DeepCopy()
	unstructured.SetNestedField(other.Object, "other-mesh", "spec", "service", "namespace")
	for _, tc := range []struct {
		name       string
		api        *unstructured.Unstructured
		wantDetail string
		want       []string
	}{
		{"available", withAvailable(t, api, "True", "Passed", "all checks passed"), "service mesh/mesh-viz", nil},
		{"missing", nil, "", []string{"no APIService v1alpha1.tap.mesh.dev, so mesh viz tap cannot work: run mesh install"}},
		{"not checked yet", api, "", []string{"is not available (NoCondition: the API server has not checked it yet)"}},
		{"no endpoints", withAvailable(t, api, "False", "MissingEndpoints", "endpoints for service/mesh-viz in \"mesh\" have no addresses"), "",
			[]string{"(MissingEndpoints: endpoints for service/mesh-viz", "finds no ready mesh-viz pod behind service mesh/mesh-viz"}},
		{"discovery fails", withAvailable(t, api, "False", "FailedDiscoveryCheck", "failing or missing response from https://10.244.0.9:8089/apis/tap.mesh.dev/v1alpha1: bad status from https://10.244.0.9:8089/apis/tap.mesh.dev/v1alpha1: 401"), "",
			[]string{": 401)", "a 401 means mesh-viz does not accept the API server's front-proxy certificate"}},
		{"another control plane", withAvailable(t, other, "True", "Passed", ""), "",
			[]string{"calls service other-mesh/mesh-viz, not mesh/mesh-viz"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			detail, err := checkTapAPIService(context.Background(), tapChecker(ns, testNow, tc.api, nil))
			if tc.want == nil {
				if err != nil || detail != tc.wantDetail {
					t.Errorf("got %q, %v; want %q", detail, err, tc.wantDetail)
				}
				return
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to contain %q", err, w)
				}
			}
		})
	}
}

// What mesh install renders passes checkTapCert: the APIService's
// caBundle verifies the Secret's certificate for mesh-viz.<ns>.svc; a
// mismatched, missing or expiring one does not.
func TestCheckTapCert(t *testing.T) {
	const ns = "mesh"
	api, secret := renderedTap(t, ns)
	_, otherSecret := renderedTap(t, ns) // another CA
	for _, tc := range []struct {
		name   string
		api    *unstructured.Unstructured
		secret *corev1.Secret
		now    time.Time
		ok     bool
		want   string
	}{
		{name: "rendered", api: api, secret: secret, now: testNow, ok: true, want: "valid until " + day(testNow.Add(certs.ServingValidity))},
		{name: "other CA", api: api, secret: otherSecret, now: testNow, want: "the API server would refuse the tap API's certificate"},
		{name: "no secret", api: api, now: testNow, want: "no secret mesh-tap-tls in namespace mesh: run mesh install"},
		{name: "no APIService", secret: secret, now: testNow, want: "no APIService v1alpha1.tap.mesh.dev"},
		{name: "expiring", api: api, secret: secret, now: testNow.Add(certs.ServingValidity - 24*time.Hour),
			want: "the tap API's serving certificate expires on " + day(testNow.Add(certs.ServingValidity)) + ": run mesh install to renew it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			detail, err := checkTapCert(context.Background(), tapChecker(ns, tc.now, tc.api, tc.secret))
			switch {
			case tc.ok && (err != nil || detail != tc.want):
				t.Errorf("got %q, %v; want %q", detail, err, tc.want)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
