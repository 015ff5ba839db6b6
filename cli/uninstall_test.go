package cli

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/mesh-dev/mesh/install/manifests"
)

// object is an object as the API server holds it; labelled objects carry
// manifests.PartOfLabel.
func object(apiVersion, kind, namespace, name string, labelled bool) *unstructured.Unstructured {
	o := &unstructured.Unstructured{}
	o.SetAPIVersion(apiVersion)
	o.SetKind(kind)
	o.SetNamespace(namespace)
	o.SetName(name)
	if labelled {
		o.SetLabels(map[string]string{manifests.PartOfLabel: manifests.PartOf})
	}
	return o
}

// TestUninstallDeletesViz: uninstall removes mesh-viz and its
// cluster-wide RBAC, which live outside the namespace, by name; and any
// other cluster-wide object labelled as mesh's (an older or newer
// install's), by label; an unlabelled one of another name stays.
func TestUninstallDeletesViz(t *testing.T) {
	const rbac = "rbac.authorization.k8s.io/v1"
	objs := []runtime.Object{
		object("v1", "Namespace", "", "mesh-system", true),
		object("apps/v1", "Deployment", "mesh-system", vizName, true),
		object("v1", "ServiceAccount", "mesh-system", vizName, true),
		object(rbac, "ClusterRole", "", vizName, true),
		object(rbac, "ClusterRoleBinding", "", vizName, true),
		object(rbac, "ClusterRoleBinding", "", "mesh-viz-old", true),
		object(rbac, "ClusterRole", "", "someone-elses", false),
	}
	targets, notes, err := uninstallTargets(context.Background(), fakeKube(t, objs...), "mesh-system")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tg := range targets {
		got = append(got, tg.String())
	}
	want := []string{
		"deployment/mesh-viz in namespace mesh-system",
		"clusterrolebinding/mesh-viz",
		"clusterrole/mesh-viz",
		"serviceaccount/mesh-viz in namespace mesh-system",
		"clusterrolebinding/mesh-viz-old",
		"namespace/mesh-system",
	}
	if diff := cmp.Diff(want, got); diff != "" || len(notes) > 0 {
		t.Errorf("targets (-want +got):\n%s\nnotes: %q", diff, notes)
	}
}
