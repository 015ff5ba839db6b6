package manifests

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/mesh-dev/mesh/install/image"
	"github.com/mesh-dev/mesh/internal/names"
)

// TestCNIOff: without --cni nothing of the plugin is rendered and the
// control-plane namespace does not tell the injector CNI mode.
func TestCNIOff(t *testing.T) {
	ms, err := Render(testValues())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Object.GetName() == CNIName || m.Object.GetNamespace() == CNINamespace {
			t.Errorf("%s rendered without CNI mode", m.Name())
		}
	}
	if v, ok := find(t, ms, "Namespace", DefaultNamespace).GetAnnotations()[names.AnnotationCNI]; ok {
		t.Errorf("control-plane namespace has %s=%s without CNI mode", names.AnnotationCNI, v)
	}
}

// TestCNIOn: with --cni the plugin's DaemonSet runs in its own privileged
// namespace on every node, mounts the node directories it was given, and
// the control-plane namespace tells the injector.
func TestCNIOn(t *testing.T) {
	v := testValues()
	v.CNI = CNI{Enabled: true, BinDir: "/usr/lib/cni", ConfDir: "/var/lib/mesh-cluster/cni/net.d"}
	ms, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	if got := find(t, ms, "Namespace", DefaultNamespace).GetAnnotations()[names.AnnotationCNI]; got != names.Enabled {
		t.Errorf("control-plane namespace %s=%q, want %s", names.AnnotationCNI, got, names.Enabled)
	}
	ns := find(t, ms, "Namespace", CNINamespace)
	if got := ns.GetLabels()["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("namespace %s enforces %q, want privileged: the DaemonSet uses hostPath and hostNetwork", CNINamespace, got)
	}
	if got := ns.GetLabels()[names.LabelWebhook]; got != names.WebhookIgnore {
		t.Errorf("namespace %s %s=%q, want %s", CNINamespace, names.LabelWebhook, got, names.WebhookIgnore)
	}
	// Uninstall finds them by label.
	for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"} {
		if got := find(t, ms, kind, CNIName).GetLabels()[PartOfLabel]; got != PartOf {
			t.Errorf("%s/%s %s=%q, want %s", kind, CNIName, PartOfLabel, got, PartOf)
		}
	}
	// Strictly: a misspelt field would be dropped by the API server, and
	// the DaemonSet would run without it.
	var ds appsv1.DaemonSet
	raw, err := json.Marshal(find(t, ms, "DaemonSet", CNIName).Object)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ds); err != nil {
		t.Fatalf("DaemonSet: %v", err)
	}
	if ds.Namespace != CNINamespace {
		t.Errorf("DaemonSet in %q, want %s", ds.Namespace, CNINamespace)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != "Exists" || spec.PriorityClassName != "system-node-critical" {
		t.Errorf("DaemonSet does not run on every node's network first: hostNetwork %v, tolerations %v, priority %q",
			spec.HostNetwork, spec.Tolerations, spec.PriorityClassName)
	}
	hostPaths := map[string]string{}
	for _, vol := range spec.Volumes {
		if vol.HostPath != nil {
			hostPaths[vol.Name] = vol.HostPath.Path
		}
	}
	if hostPaths["cni-bin"] != "/usr/lib/cni" || hostPaths["cni-conf"] != "/var/lib/mesh-cluster/cni/net.d" {
		t.Errorf("hostPath volumes %v, want the bin and conf dirs given", hostPaths)
	}
	c := spec.Containers[0]
	if c.Image != "ghcr.io/mesh-dev/mesh-cni:"+v.Version {
		t.Errorf("image %s", c.Image)
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"install ", "--host-cni-conf-dir=/var/lib/mesh-cluster/cni/net.d", "--exclude-namespaces=kube-system," + CNINamespace + "," + DefaultNamespace} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("securityContext %+v: want every capability dropped, a read-only root, no privilege escalation", sc)
	}
}

// TestCNIDefaultsAndValidation: the dirs default to containerd's, and a
// dir a hostPath cannot name is refused before anything is applied.
func TestCNIDefaultsAndValidation(t *testing.T) {
	v := testValues()
	v.CNI.Enabled = true
	ms, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	ds := find(t, ms, "DaemonSet", CNIName)
	vols, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "volumes")
	got := map[string]any{}
	for _, vol := range vols {
		m := vol.(map[string]any)
		if hp, ok := m["hostPath"].(map[string]any); ok {
			got[m["name"].(string)] = hp["path"]
		}
	}
	if got["cni-bin"] != DefaultCNIBinDir || got["cni-conf"] != DefaultCNIConfDir {
		t.Errorf("default dirs %v", got)
	}
	for _, bad := range []CNI{
		{Enabled: true, BinDir: "opt/cni/bin"},
		{Enabled: true, ConfDir: "/etc/cni/net.d/"},
		{Enabled: true, ConfDir: "/etc/../cni"},
		{Enabled: true, BinDir: "/"},
	} {
		v.CNI = bad
		if _, err := Render(v); err == nil || !strings.Contains(err.Error(), "CNI") {
			t.Errorf("Render with %+v: err %v, want one about the CNI dir", bad, err)
		}
	}
}

// TestCNIImageIsBuilt: the DaemonSet's image is the one `make images`
// builds.
func TestCNIImageIsBuilt(t *testing.T) {
	v := testValues()
	if got, want := v.CNIImage(), image.Ref(image.CNIName, v.Version); got != want {
		t.Errorf("CNIImage = %s; make images builds %s", got, want)
	}
}
