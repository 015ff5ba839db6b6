package manifests

import (
	"encoding/base64"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestTap: the APIService calls the Service mesh-viz, which reaches the
// mesh-viz pods' tap port, with the caBundle of the serving certificate
// they mount; mesh-viz may read the front-proxy settings and review
// access; mesh-tap grants tap and nothing else.
func TestTap(t *testing.T) {
	v := testValues()
	v.Tap = ServingPEM{CA: []byte("TAPCA\n"), Cert: []byte("TAPCERT\n"), Key: []byte("TAPKEY\n")}
	ms, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	str := func(u *unstructured.Unstructured, path ...string) string {
		s, _, _ := unstructured.NestedString(u.Object, path...)
		return s
	}

	api := find(t, ms, "APIService", TapAPIServiceName)
	svc := find(t, ms, "Service", TapServiceName)
	if got := str(api, "spec", "service", "name"); got != svc.GetName() || str(api, "spec", "service", "namespace") != v.Namespace {
		t.Errorf("the APIService calls service %s/%s, want %s/%s", str(api, "spec", "service", "namespace"), got, v.Namespace, svc.GetName())
	}
	if str(api, "spec", "group") != "tap.mesh.dev" || str(api, "spec", "version") != "v1alpha1" {
		t.Errorf("the APIService registers %s/%s, want tap.mesh.dev/v1alpha1", str(api, "spec", "group"), str(api, "spec", "version"))
	}
	if got := str(api, "spec", "caBundle"); got != base64.StdEncoding.EncodeToString(v.Tap.CA) {
		t.Errorf("caBundle %q, want the tap CA", got)
	}
	secret := find(t, ms, "Secret", TapTLSSecretName)
	if str(secret, "data", "tls.crt") != base64.StdEncoding.EncodeToString(v.Tap.Cert) || str(secret, "type") != "kubernetes.io/tls" {
		t.Errorf("secret %s does not hold the tap serving certificate", TapTLSSecretName)
	}

	// The APIService's port 443 reaches the pods' port "tap", the one
	// mesh-viz serves the tap API on, and the selector picks those pods.
	svcPorts, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	port := svcPorts[0].(map[string]any)
	apiPort, _, _ := unstructured.NestedInt64(api.Object, "spec", "service", "port")
	if port["port"] != apiPort || port["targetPort"] != "tap" {
		t.Errorf("service port %v → %v, want %d → tap", port["port"], port["targetPort"], apiPort)
	}
	c, args := container(t, ms, "mesh-viz")
	if _, ok := ports(c)["tap"]; !ok || args["--tap-tls-dir"] == "" {
		t.Errorf("mesh-viz has no tap port or --tap-tls-dir: ports %v, args %v", ports(c), args)
	}
	selector, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
	podLabels, _, _ := unstructured.NestedStringMap(find(t, ms, "Deployment", "mesh-viz").Object, "spec", "template", "metadata", "labels")
	for k, want := range selector {
		if podLabels[k] != want {
			t.Errorf("service selects %s=%s; the mesh-viz pods have %q", k, want, podLabels[k])
		}
	}

	// mesh-viz's ServiceAccount reads the ConfigMap and reviews access.
	for kind, name := range map[string]string{"RoleBinding": "mesh-viz-auth-reader", "ClusterRoleBinding": "mesh-viz-auth-delegator"} {
		b := find(t, ms, kind, name)
		subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
		want := []any{map[string]any{"kind": "ServiceAccount", "name": "mesh-viz", "namespace": v.Namespace}}
		if diff := cmp.Diff(want, subjects); diff != "" {
			t.Errorf("%s %s subjects (-want +got):\n%s", kind, name, diff)
		}
	}
	if b := find(t, ms, "RoleBinding", "mesh-viz-auth-reader"); b.GetNamespace() != "kube-system" || str(b, "roleRef", "name") != "extension-apiserver-authentication-reader" {
		t.Errorf("the auth reader binding is %s/%s, want kube-system/extension-apiserver-authentication-reader", b.GetNamespace(), str(b, "roleRef", "name"))
	}
	if b := find(t, ms, "ClusterRoleBinding", "mesh-viz-auth-delegator"); str(b, "roleRef", "name") != "system:auth-delegator" {
		t.Errorf("the delegator binding grants %s, want system:auth-delegator", str(b, "roleRef", "name"))
	}

	// mesh-tap is the watch verb on the tap resources of tap.mesh.dev.
	rules, _, _ := unstructured.NestedSlice(find(t, ms, "ClusterRole", TapClusterRoleName).Object, "rules")
	for _, r := range rules {
		r := r.(map[string]any)
		groups, _, _ := unstructured.NestedStringSlice(r, "apiGroups")
		verbs, _, _ := unstructured.NestedStringSlice(r, "verbs")
		resources, _, _ := unstructured.NestedStringSlice(r, "resources")
		if !slices.Equal(groups, []string{"tap.mesh.dev"}) || !slices.Equal(verbs, []string{"watch"}) {
			t.Errorf("mesh-tap grants %v on %v %v, want watch on tap.mesh.dev only", verbs, groups, resources)
		}
		if !slices.Contains(resources, "tap") || !slices.Contains(resources, "deployments/tap") {
			t.Errorf("mesh-tap resources %v lack tap or deployments/tap", resources)
		}
	}
}

// TestTapAPIServiceDeletedFirst: uninstall deletes in the reverse order of
// Render, and an APIService whose backend is gone breaks discovery for
// every client, so it comes after everything of mesh-viz.
func TestTapAPIServiceDeletedFirst(t *testing.T) {
	ms, err := Render(testValues())
	if err != nil {
		t.Fatal(err)
	}
	n := manifestNames(ms)
	api := slices.Index(n, "apiservice/"+TapAPIServiceName)
	for _, dep := range []string{"service/mesh-viz", "deployment/mesh-viz", "secret/mesh-tap-tls", "clusterrolebinding/mesh-viz-auth-delegator"} {
		if i := slices.Index(n, dep); i < 0 || i > api {
			t.Errorf("%s renders at %d, after the APIService (%d)", dep, i, api)
		}
	}
}
