package manifests

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/mesh-dev/mesh/internal/names"
)

// container returns the first container of Deployment name, and its args
// by flag name ("--viz-addr" → "127.0.0.1:8085"; "viz" → "").
func container(t *testing.T, ms []Manifest, name string) (map[string]any, map[string]string) {
	t.Helper()
	dep := find(t, ms, "Deployment", name)
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	c := containers[0].(map[string]any)
	args := map[string]string{}
	raw, _ := c["args"].([]any)
	for _, a := range toStrings(raw) {
		k, v, _ := strings.Cut(a, "=")
		args[k] = v
	}
	return c, args
}

// ports returns a container's ports, name → number.
func ports(c map[string]any) map[string]int64 {
	out := map[string]int64{}
	ps, _ := c["ports"].([]any)
	for _, p := range ps {
		p := p.(map[string]any)
		n, _ := p["containerPort"].(int64)
		out[p["name"].(string)] = n
	}
	return out
}

// TestViz: viz is its own Deployment, its API on loopback only, so no pod
// reaches it, and it has left the controller (issue 12).
func TestViz(t *testing.T) {
	ms, err := Render(testValues())
	if err != nil {
		t.Fatal(err)
	}
	c, args := container(t, ms, "mesh-viz")
	if _, ok := args["viz"]; !ok {
		t.Errorf("mesh-viz args %v lack the viz subcommand", args)
	}
	host, _, err := net.SplitHostPort(args["--viz-addr"])
	if ip, perr := netip.ParseAddr(host); err != nil || perr != nil || !ip.IsLoopback() {
		t.Errorf("--viz-addr=%q, want a loopback address", args["--viz-addr"])
	}
	if c["image"] != "ghcr.io/mesh-dev/mesh-controller:v0.1.0" {
		t.Errorf("mesh-viz image %v, want the controller's", c["image"])
	}
	// The tap API of controller/tapapi, on the port the mesh-viz Service
	// targets, with the serving certificate of Secret mesh-tap-tls.
	want := map[string]int64{"admin": 9990, "tap": 8089}
	if diff := cmp.Diff(want, ports(c)); diff != "" {
		t.Errorf("mesh-viz ports (-want +got):\n%s", diff)
	}
	if args["--tap-addr"] != ":8089" || args["--tap-tls-dir"] != "/var/run/mesh/tap-tls" {
		t.Errorf("tap args %v", args)
	}

	dep := find(t, ms, "Deployment", "mesh-viz")
	spec, _, _ := unstructured.NestedMap(dep.Object, "spec", "template", "spec")
	if spec["serviceAccountName"] != "mesh-viz" {
		t.Errorf("serviceAccountName %v, want mesh-viz: proxies admit its SPIFFE ID to tap", spec["serviceAccountName"])
	}
	if _, ok := spec["affinity"]; ok {
		t.Error("anti-affinity without --ha")
	}
	annotations := dep.Object["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["annotations"].(map[string]any)
	if annotations[names.AnnotationInject] != names.Disabled {
		t.Errorf("mesh-viz pods are not opted out of injection: %v", annotations)
	}
	mounts := map[string]string{} // volume → path
	vm, _ := c["volumeMounts"].([]any)
	for _, m := range vm {
		m := m.(map[string]any)
		mounts[m["name"].(string)] = m["mountPath"].(string)
	}
	volumes := map[string]map[string]any{}
	vs, _ := spec["volumes"].([]any)
	for _, v := range vs {
		v := v.(map[string]any)
		volumes[v["name"].(string)] = v
	}
	// Its identity, as a proxy gets one: a token for the identity
	// service's audience where --identity-token-file says, and the trust
	// anchors the identity service is checked against.
	token, _, _ := unstructured.NestedSlice(volumes["identity-token"], "projected", "sources")
	audience, _, _ := unstructured.NestedString(token[0].(map[string]any), "serviceAccountToken", "audience")
	path, _, _ := unstructured.NestedString(token[0].(map[string]any), "serviceAccountToken", "path")
	if audience != names.IdentityTokenAudience || mounts["identity-token"]+"/"+path != args["--identity-token-file"] {
		t.Errorf("token for %q at %s/%s, want %q at %s", audience, mounts["identity-token"], path, names.IdentityTokenAudience, args["--identity-token-file"])
	}
	roots, _, _ := unstructured.NestedString(volumes["trust-roots"], "configMap", "name")
	if roots != TrustRootsConfigMapName || mounts["trust-roots"]+"/"+TrustRootsKey != args["--trust-anchors-file"] {
		t.Errorf("trust anchors from configmap %q at %s, want %s at %s", roots, mounts["trust-roots"], TrustRootsConfigMapName, args["--trust-anchors-file"])
	}
	secret, _, _ := unstructured.NestedString(volumes["tap-tls"], "secret", "secretName")
	if secret != "mesh-tap-tls" || mounts["tap-tls"] != args["--tap-tls-dir"] {
		t.Errorf("tap serving certificate from secret %q at %s", secret, mounts["tap-tls"])
	}

	// Read-only, on pods, services and namespaces: nothing else.
	role := find(t, ms, "ClusterRole", "mesh-viz")
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	for _, r := range rules {
		r := r.(map[string]any)
		verbs := toStrings(r["verbs"].([]any))
		if diff := cmp.Diff([]string{"get", "list", "watch"}, verbs); diff != "" {
			t.Errorf("mesh-viz may %v on %v", verbs, r["resources"])
		}
		if groups := toStrings(r["apiGroups"].([]any)); !slices.Equal(groups, []string{""}) {
			t.Errorf("mesh-viz reads API groups %v, want the core group only", groups)
		}
	}

	// The controller serves no viz any more.
	c, args = container(t, ms, ControllerName)
	if v, ok := args["--viz-addr"]; ok {
		t.Errorf("the controller still serves viz on %q", v)
	}
	if _, ok := ports(c)["viz"]; ok {
		t.Error("the controller still exposes the viz port")
	}
}

func TestVizHA(t *testing.T) {
	v := testValues()
	v.HA = true
	ms, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	dep := find(t, ms, "Deployment", "mesh-viz")
	if n, _, _ := unstructured.NestedInt64(dep.Object, "spec", "replicas"); n != 2 {
		t.Errorf("mesh-viz replicas with --ha: %d, want 2", n)
	}
	terms, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "affinity", "podAntiAffinity",
		"preferredDuringSchedulingIgnoredDuringExecution")
	if len(terms) != 1 {
		t.Fatalf("mesh-viz anti-affinity with --ha: %v", terms)
	}
	app, _, _ := unstructured.NestedString(terms[0].(map[string]any), "podAffinityTerm", "labelSelector", "matchLabels", NameLabel)
	if app != "mesh-viz" {
		t.Errorf("anti-affinity selects %q, want mesh-viz's own pods", app)
	}
}
