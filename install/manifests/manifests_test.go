package manifests

import (
	"encoding/base64"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/internal/names"
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

func manifestNames(ms []Manifest) []string {
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
		"customresourcedefinition/authorizationpolicies.policy.mesh.dev",
		"customresourcedefinition/httpfaults.policy.mesh.dev",
		"customresourcedefinition/httplocalratelimitpolicies.policy.mesh.dev",
		"customresourcedefinition/meshtlsauthentications.policy.mesh.dev",
		"customresourcedefinition/networkauthentications.policy.mesh.dev",
		"customresourcedefinition/servers.policy.mesh.dev",
		"namespace/mesh-system",
		"serviceaccount/mesh-controller",
		"clusterrole/mesh-controller",
		"clusterrolebinding/mesh-controller",
		"secret/mesh-identity-issuer",
		"configmap/mesh-trust-roots",
		"secret/mesh-injector-tls",
		"deployment/mesh-controller",
		"service/mesh-injector", "service/mesh-controller", "service/mesh-identity",
	}
	viz := []string{"serviceaccount/mesh-viz", "clusterrole/mesh-viz", "clusterrolebinding/mesh-viz", "deployment/mesh-viz",
		// 36-tap.yaml: the APIService last, so uninstall deletes it first.
		"secret/mesh-tap-tls", "service/mesh-viz", "rolebinding/mesh-viz-auth-reader",
		"clusterrolebinding/mesh-viz-auth-delegator", "clusterrole/mesh-tap", "apiservice/v1alpha1.tap.mesh.dev"}
	tests := []struct {
		name string
		ha   bool
		want []string
	}{
		{name: "default", want: slices.Concat(base, viz, []string{"mutatingwebhookconfiguration/mesh-proxy-injector"})},
		{name: "ha", ha: true, want: slices.Concat(base, []string{"poddisruptionbudget/mesh-controller"}, viz, []string{"mutatingwebhookconfiguration/mesh-proxy-injector"})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := testValues()
			v.HA = tc.ha
			ms, err := Render(v)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, manifestNames(ms)); diff != "" {
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
		{name: "default inbound policy", modify: func(v *Values) { v.DefaultInboundPolicy = "allow" }, want: "want one of all-unauthenticated, all-authenticated"},
		{name: "default inbound policy with spaces", modify: func(v *Values) { v.DefaultInboundPolicy = " deny" }, want: "default inbound policy"},
		{name: "cluster network with host bits", modify: func(v *Values) { v.ClusterNetworks = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/8")} }, want: "cluster network 10.1.0.0/8"},
		{name: "zero cluster network", modify: func(v *Values) { v.ClusterNetworks = []netip.Prefix{{}} }, want: "cluster network"},
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

// TestCRDs checks the policy API's definitions as install applies them:
// one per kind of api/policy/v1alpha1, labelled for uninstall, and their
// YAML (what --dry-run prints) is the object install applies.
func TestCRDs(t *testing.T) {
	ms, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{ // plural -> kind
		policyv1alpha1.ServersResource.Resource:                    policyv1alpha1.KindServer,
		policyv1alpha1.MeshTLSAuthenticationsResource.Resource:     policyv1alpha1.KindMeshTLSAuthentication,
		policyv1alpha1.NetworkAuthenticationsResource.Resource:     policyv1alpha1.KindNetworkAuthentication,
		policyv1alpha1.AuthorizationPoliciesResource.Resource:      policyv1alpha1.KindAuthorizationPolicy,
		policyv1alpha1.HTTPLocalRateLimitPoliciesResource.Resource: policyv1alpha1.KindHTTPLocalRateLimitPolicy,
		policyv1alpha1.HTTPFaultsResource.Resource:                 policyv1alpha1.KindHTTPFault,
	}
	got := map[string]string{}
	for _, m := range ms {
		o := m.Object
		if !m.IsCRD() || o.GetLabels()[PartOfLabel] != PartOf {
			t.Errorf("%s: not a labelled CRD: %v", m.Name(), o.GetLabels())
		}
		group, _, _ := unstructured.NestedString(o.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(o.Object, "spec", "names", "plural")
		kind, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
		scope, _, _ := unstructured.NestedString(o.Object, "spec", "scope")
		if group != policyv1alpha1.GroupName || o.GetName() != plural+"."+group || scope != "Namespaced" {
			t.Errorf("%s: group %q, plural %q, scope %q", m.Name(), group, plural, scope)
		}
		got[plural] = kind
		versions, _, _ := unstructured.NestedSlice(o.Object, "spec", "versions")
		if len(versions) != 1 {
			t.Fatalf("%s: %d versions, want v1alpha1 only", m.Name(), len(versions))
		}
		v := versions[0].(map[string]any)
		if v["name"] != policyv1alpha1.SchemeGroupVersion.Version || v["served"] != true || v["storage"] != true {
			t.Errorf("%s: version %v served %v storage %v", m.Name(), v["name"], v["served"], v["storage"])
		}
		if _, ok, _ := unstructured.NestedMap(v, "schema", "openAPIV3Schema", "properties", "spec"); !ok {
			t.Errorf("%s: no schema of spec", m.Name())
		}

		fromYAML, err := split(m.YAML)
		if err != nil || len(fromYAML) != 1 {
			t.Fatalf("%s: %d documents, %v", m.Name(), len(fromYAML), err)
		}
		if diff := cmp.Diff(o.Object, fromYAML[0].Object.Object); diff != "" {
			t.Errorf("%s: YAML and object differ (-object +YAML):\n%s", m.Name(), diff)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CRDs (-want +got):\n%s", diff)
	}
}

// TestControllerReadsPolicy: the controller may watch every policy kind
// cluster-wide, the way its informers do.
func TestControllerReadsPolicy(t *testing.T) {
	ms, err := Render(testValues())
	if err != nil {
		t.Fatal(err)
	}
	role := find(t, ms, "ClusterRole", ControllerName)
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	granted := map[string]bool{} // "group/resource/verb"
	for _, r := range rules {
		r := r.(map[string]any)
		for _, g := range toStrings(r["apiGroups"].([]any)) {
			for _, res := range toStrings(r["resources"].([]any)) {
				for _, v := range toStrings(r["verbs"].([]any)) {
					granted[g+"/"+res+"/"+v] = true
				}
			}
		}
	}
	crds, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range crds {
		plural, _, _ := unstructured.NestedString(m.Object.Object, "spec", "names", "plural")
		for _, verb := range []string{"get", "list", "watch"} {
			if !granted[policyv1alpha1.GroupName+"/"+plural+"/"+verb] {
				t.Errorf("the controller may not %s %s.%s", verb, plural, policyv1alpha1.GroupName)
			}
		}
	}
}

// TestControllerReadsNoSecrets: the controller gets the identity issuer
// and its serving certificate as volume mounts and reads no Secret or
// ConfigMap through the API, so no role of the install grants it one (the
// namespaced Role that let it read every Secret in mesh-system is gone).
func TestControllerReadsNoSecrets(t *testing.T) {
	for _, ha := range []bool{false, true} {
		v := testValues()
		v.HA = ha
		ms, err := Render(v)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			switch m.Object.GetKind() {
			case "Role", "RoleBinding":
				if m.Name() == "rolebinding/mesh-viz-auth-reader" {
					continue // mesh-viz's, for the front-proxy CA in kube-system (36-tap.yaml)
				}
				t.Errorf("ha=%t: %s rendered; the controller needs no namespaced rights", ha, m.Name())
			case "ClusterRole":
				rules, _, _ := unstructured.NestedSlice(m.Object.Object, "rules")
				for _, r := range rules {
					resources, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
					for _, res := range resources {
						if res == "secrets" || res == "configmaps" || res == "*" {
							t.Errorf("ha=%t: %s grants %v on %s", ha, m.Name(), r.(map[string]any)["verbs"], res)
						}
					}
				}
			}
		}
	}
}

// TestWebhookIgnoreLabel: with or without --ha (failurePolicy Fail), the
// webhook is never called for a namespace labelled
// mesh.dev/webhook=ignore, so an admin can always exempt one.
func TestWebhookIgnoreLabel(t *testing.T) {
	want := map[string]any{"key": names.LabelWebhook, "operator": "NotIn", "values": []any{names.WebhookIgnore}}
	for _, ha := range []bool{false, true} {
		v := testValues()
		v.HA = ha
		ms, err := Render(v)
		if err != nil {
			t.Fatal(err)
		}
		wh := find(t, ms, "MutatingWebhookConfiguration", WebhookConfigName)
		hooks, _, _ := unstructured.NestedSlice(wh.Object, "webhooks")
		for _, h := range hooks {
			exprs, _, _ := unstructured.NestedSlice(h.(map[string]any), "namespaceSelector", "matchExpressions")
			if !slices.ContainsFunc(exprs, func(e any) bool { return cmp.Equal(want, e) }) {
				t.Errorf("ha=%t: webhook %v namespaceSelector %v lacks %v", ha, h.(map[string]any)["name"], exprs, want)
			}
		}
	}
}

// controllerArgs returns the controller container's arguments.
func controllerArgs(t testing.TB, v Values) []string {
	t.Helper()
	ms, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	dep := find(t, ms, "Deployment", ControllerName)
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	return toStrings(containers[0].(map[string]any)["args"].([]any))
}

func TestRenderPolicyArgs(t *testing.T) {
	tests := []struct {
		name         string
		policy       string
		networks     []netip.Prefix
		wantPolicy   string
		wantNetworks string
	}{
		{
			name:         "defaults",
			wantPolicy:   "--default-inbound-policy=all-unauthenticated",
			wantNetworks: "--cluster-networks=10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fd00::/8",
		},
		{
			name: "given", policy: names.PolicyDeny,
			networks:     []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("2001:db8::/64")},
			wantPolicy:   "--default-inbound-policy=deny",
			wantNetworks: "--cluster-networks=10.42.0.0/16,2001:db8::/64",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := testValues()
			v.DefaultInboundPolicy, v.ClusterNetworks = tc.policy, tc.networks
			args := controllerArgs(t, v)
			for _, want := range []string{tc.wantPolicy, tc.wantNetworks} {
				if !slices.Contains(args, want) {
					t.Errorf("controller args %q lack %s", args, want)
				}
			}
		})
	}
}

// TestRenderPolicyChangeRollsController: a new default policy or set of
// networks changes the pod template, so re-running install rolls the
// controller, and the injector gives new pods the new networks.
func TestRenderPolicyChangeRollsController(t *testing.T) {
	template := func(v Values) map[string]any {
		ms, err := Render(v)
		if err != nil {
			t.Fatal(err)
		}
		tmpl, _, _ := unstructured.NestedMap(find(t, ms, "Deployment", ControllerName).Object, "spec", "template")
		return tmpl
	}
	base := template(testValues())
	v := testValues()
	v.DefaultInboundPolicy = names.PolicyAudit
	if cmp.Equal(base, template(v)) {
		t.Error("another default inbound policy renders the same pod template")
	}
	v = testValues()
	v.ClusterNetworks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if cmp.Equal(base, template(v)) {
		t.Error("other cluster networks render the same pod template")
	}
}
