package manifests

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func testValues() Values {
	return Values{
		Namespace:   DefaultNamespace,
		Registry:    DefaultRegistry,
		Version:     "v0.1.0",
		TrustDomain: "cluster.local",
		Identity:    IdentityPEM{TrustAnchors: []byte("ANCHORS\n"), IssuerCert: []byte("ISSUER\n"), IssuerKey: []byte("KEY\n")},
		Injector:    ServingPEM{CA: []byte("CA\n"), Cert: []byte("CERT\n"), Key: []byte("SKEY\n")},
	}
}

func names(ms []Manifest) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name())
	}
	return out
}

func find(t testing.TB, ms []Manifest, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, m := range ms {
		if m.Object.GetKind() == kind && m.Object.GetName() == name {
			return m.Object
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

func TestRenderOrderAndNames(t *testing.T) {
	base := []string{
		"namespace/mesh-system",
		"serviceaccount/mesh-controller",
		"clusterrole/mesh-controller",
		"clusterrolebinding/mesh-controller",
		"role/mesh-controller",
		"rolebinding/mesh-controller",
		"secret/mesh-identity-issuer",
		"configmap/mesh-trust-roots",
		"secret/mesh-injector-tls",
		"deployment/mesh-controller",
		"service/mesh-injector", "service/mesh-controller", "service/mesh-identity",
	}
	tests := []struct {
		name string
		ha   bool
		want []string
	}{
		{name: "default", want: append(append([]string{}, base...), "mutatingwebhookconfiguration/mesh-proxy-injector")},
		{name: "ha", ha: true, want: append(append([]string{}, base...), "poddisruptionbudget/mesh-controller", "mutatingwebhookconfiguration/mesh-proxy-injector")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := testValues()
			v.HA = tc.ha
			ms, err := Render(v)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, names(ms)); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
			for _, m := range ms {
				if m.Object.GetLabels()[PartOfLabel] != PartOf {
					t.Errorf("%s lacks %s=%s", m.Name(), PartOfLabel, PartOf)
				}
			}
		})
	}
}

func TestRenderValues(t *testing.T) {
	v := testValues()
	v.Namespace = "mesh"
	v.Registry = "localhost:5000/team"
	v.Version = "v9.9.9"
	v.HA = true
	ms, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	dep := find(t, ms, "Deployment", ControllerName)
	if got, _, _ := unstructured.NestedInt64(dep.Object, "spec", "replicas"); got != 2 {
		t.Errorf("replicas %d, want 2", got)
	}
	if got := dep.GetLabels()[VersionLabel]; got != "v9.9.9" {
		t.Errorf("version label %q", got)
	}
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	c := containers[0].(map[string]any)
	if c["image"] != "localhost:5000/team/mesh-controller:v9.9.9" {
		t.Errorf("image %v", c["image"])
	}
	args := strings.Join(toStrings(c["args"].([]any)), " ")
	if !strings.Contains(args, "--proxy-image=localhost:5000/team/mesh-proxy:v9.9.9") {
		t.Errorf("args %s lack the proxy image", args)
	}

	wh := find(t, ms, "MutatingWebhookConfiguration", WebhookConfigName)
	hooks, _, _ := unstructured.NestedSlice(wh.Object, "webhooks")
	hook := hooks[0].(map[string]any)
	if hook["failurePolicy"] != "Fail" {
		t.Errorf("failurePolicy %v, want Fail with HA", hook["failurePolicy"])
	}
	ca, _, _ := unstructured.NestedString(hook, "clientConfig", "caBundle")
	if got, _ := base64.StdEncoding.DecodeString(ca); string(got) != "CA\n" {
		t.Errorf("caBundle %q", got)
	}
	excluded, _, _ := unstructured.NestedSlice(hook, "namespaceSelector", "matchExpressions")
	values := toStrings(excluded[0].(map[string]any)["values"].([]any))
	if diff := cmp.Diff([]string{"kube-system", "mesh"}, values); diff != "" {
		t.Errorf("excluded namespaces (-want +got):\n%s", diff)
	}

	roots := find(t, ms, "ConfigMap", TrustRootsConfigMapName)
	if got, _, _ := unstructured.NestedString(roots.Object, "data", TrustRootsKey); got != "ANCHORS\n" {
		t.Errorf("trust bundle %q", got)
	}
}

func TestRenderEmptyPEM(t *testing.T) {
	v := testValues()
	v.Identity, v.Injector = IdentityPEM{}, ServingPEM{}
	if _, err := Render(v); err != nil {
		t.Fatalf("Render without certificates: %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Values)
		want   string
	}{
		{name: "namespace", modify: func(v *Values) { v.Namespace = "Mesh_System" }, want: "namespace"},
		{name: "registry with digest", modify: func(v *Values) { v.Registry = "reg@sha256" }, want: "registry"},
		{name: "empty registry", modify: func(v *Values) { v.Registry = "" }, want: "registry"},
		{name: "tag", modify: func(v *Values) { v.Version = "v1/2" }, want: "version"},
		{name: "trust domain", modify: func(v *Values) { v.TrustDomain = "" }, want: "trust domain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := testValues()
			tc.modify(&v)
			err := v.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func toStrings(in []any) []string {
	out := make([]string, len(in))
	for i, v := range in {
		out[i], _ = v.(string)
	}
	return out
}
