package cli

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

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

// route is an HTTPRoute or GRPCRoute as a user made it.
func route(kind, namespace, name string) *unstructured.Unstructured {
	return object(manifests.GatewayAPIGroup+"/v1", kind, namespace, name, false)
}

// TestUninstallGatewayAPI: the Gateway API CRDs go only when mesh made
// them and no object of their kinds exists; else uninstall keeps them and
// says why and how to delete them.
func TestUninstallGatewayAPI(t *testing.T) {
	const supported = manifests.GatewayAPIBundleVersion
	ours := func(t testing.TB) []runtime.Object {
		var objs []runtime.Object
		for _, plural := range []string{"httproutes", "grpcroutes"} {
			objs = append(objs, gatewayCRD(t, plural, supported, "standard", true))
		}
		return objs
	}
	deleted := []string{
		"customresourcedefinition/grpcroutes.gateway.networking.k8s.io",
		"customresourcedefinition/httproutes.gateway.networking.k8s.io",
	}
	keep := "kubectl delete customresourcedefinition grpcroutes.gateway.networking.k8s.io httproutes.gateway.networking.k8s.io"
	tests := []struct {
		name      string
		objs      []runtime.Object
		want      []string
		wantNotes []string
	}{
		{name: "mesh's, unused", objs: ours(t), want: deleted},
		{
			name: "mesh's, with routes",
			objs: append(ours(t), route("HTTPRoute", "shop", "web-split"), route("HTTPRoute", "shop", "api"), route("GRPCRoute", "pay", "charge")),
			wantNotes: []string{"kept the Gateway API CRDs mesh installed: deleting them would delete the cluster's 1 GRPCRoute (pay/charge), 2 HTTPRoutes (shop/",
				"kubectl get grpcroutes.gateway.networking.k8s.io,httproutes.gateway.networking.k8s.io -A finds nothing", keep},
		},
		{
			name:      "mesh's, with a GRPCRoute only",
			objs:      append(ours(t), route("GRPCRoute", "pay", "charge")),
			wantNotes: []string{"1 GRPCRoute (pay/charge)", keep},
		},
		{
			name: "another project's",
			objs: []runtime.Object{
				gatewayCRD(t, "httproutes", "v1.2.1", "standard", false),
				gatewayCRD(t, "grpcroutes", "v1.2.1", "standard", false),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			targets, notes, err := uninstallTargets(context.Background(), fakeKube(t, tc.objs...), "mesh-system")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tg := range targets {
				got = append(got, tg.String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("targets (-want +got):\n%s", diff)
			}
			if len(tc.wantNotes) == 0 && len(notes) > 0 {
				t.Errorf("notes %q, want none", notes)
			}
			for _, want := range tc.wantNotes {
				if len(notes) != 1 || !strings.Contains(notes[0], want) {
					t.Errorf("notes %q, want one containing %q", notes, want)
				}
			}
		})
	}
}

// TestUninstallGatewayAPIOrder: mesh's Gateway API CRDs go after the
// controller, which watches them, and before the namespace, like the
// policy CRDs.
func TestUninstallGatewayAPIOrder(t *testing.T) {
	objs := []runtime.Object{
		object("v1", "Namespace", "", "mesh-system", true),
		object("apps/v1", "Deployment", "mesh-system", "mesh-controller", true),
		gatewayCRD(t, "httproutes", manifests.GatewayAPIBundleVersion, "standard", true),
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
		"deployment/mesh-controller in namespace mesh-system",
		"customresourcedefinition/httproutes.gateway.networking.k8s.io",
		"namespace/mesh-system",
	}
	if diff := cmp.Diff(want, got); diff != "" || len(notes) > 0 {
		t.Errorf("targets (-want +got):\n%s\nnotes: %q", diff, notes)
	}
}

// TestUninstallGatewayAPICannotTell: when the routes cannot be listed,
// uninstall keeps the CRDs, as it cannot know what deleting them deletes.
func TestUninstallGatewayAPICannotTell(t *testing.T) {
	k := fakeKube(t, gatewayCRD(t, "httproutes", manifests.GatewayAPIBundleVersion, "standard", true))
	k.dynamic.(*dynamicfake.FakeDynamicClient).PrependReactor("list", "httproutes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: manifests.GatewayAPIGroup, Resource: "httproutes"}, "", errors.New("RBAC says no"))
	})
	targets, notes, err := uninstallTargets(context.Background(), k, "mesh-system")
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 0 || len(notes) != 1 || !strings.Contains(notes[0], "kept the Gateway API CRDs mesh installed: cannot tell whether routes exist") ||
		!strings.Contains(notes[0], "kubectl delete customresourcedefinition httproutes.gateway.networking.k8s.io") {
		t.Errorf("targets %v, notes %q; want none and a note on what was kept", targets, notes)
	}
}
