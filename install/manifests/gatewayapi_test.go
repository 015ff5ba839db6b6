package manifests

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestGatewayAPICRDs: the embedded CRDs are the module's standard channel
// at the version go.mod requires (make test-generated checks the bytes),
// of the kinds a mesh serves, labelled as mesh's, and their YAML (what
// --dry-run prints) is the object install applies.
func TestGatewayAPICRDs(t *testing.T) {
	ms, err := GatewayAPICRDs()
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, m := range ms {
		o := m.Object
		if !m.IsCRD() || !IsGatewayAPICRD(o) || o.GetLabels()[PartOfLabel] != PartOf {
			t.Errorf("%s: not a labelled Gateway API CRD: %v", m.Name(), o.GetLabels())
		}
		if got := ReadGatewayAPICRD(o); got.Version != GatewayAPIBundleVersion || got.Channel != GatewayAPIChannel || !got.Mesh {
			t.Errorf("%s: %+v, want the %s channel of %s, mesh's", m.Name(), got, GatewayAPIChannel, GatewayAPIBundleVersion)
		}
		kind, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
		kinds = append(kinds, kind)
		if !servesVersion(o, gatewayv1.GroupVersion.Version) {
			t.Errorf("%s does not serve %s", m.Name(), gatewayv1.GroupVersion)
		}
		fromYAML, err := split(m.YAML)
		if err != nil || len(fromYAML) != 1 {
			t.Fatalf("%s: %d documents, %v", m.Name(), len(fromYAML), err)
		}
		if diff := cmp.Diff(o.Object, fromYAML[0].Object.Object); diff != "" {
			t.Errorf("%s: YAML differs from the object (-object +yaml):\n%s", m.Name(), diff)
		}
	}
	// The kinds the controller will watch, through the module's v1 types:
	// each CRD must serve that version.
	want := []string{
		reflect.TypeFor[gatewayv1.GRPCRoute]().Name(),
		reflect.TypeFor[gatewayv1.HTTPRoute]().Name(),
	}
	slices.Sort(kinds)
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("kinds (-want +got):\n%s", diff)
	}
}

func servesVersion(crd *unstructured.Unstructured, version string) bool {
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		v, _ := v.(map[string]any)
		if v["name"] == version && v["served"] == true {
			return true
		}
	}
	return false
}

// TestRenderLeavesGatewayAPIOut: the Gateway API CRDs may belong to
// another project, so install decides about them apart and uninstall
// never deletes them by Render's list.
func TestRenderLeavesGatewayAPIOut(t *testing.T) {
	ms, err := Render(testValues())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if IsGatewayAPICRD(m.Object) {
			t.Errorf("Render includes %s", m.Name())
		}
	}
}

func TestCompareToSupported(t *testing.T) {
	tests := []struct {
		version string
		want    int
		wantErr error
	}{
		{version: GatewayAPIBundleVersion, want: 0},
		{version: "v1.2.1", want: -1},
		{version: "v1.6.0", want: -1},
		{version: "v1.6.4", want: 1},
		{version: "v1.7.0-rc1", want: 1},
		{version: "v1.6.3-rc.1", want: -1},
		{version: "v2.0.0", want: 1},
		{version: "", wantErr: ErrNoBundleVersion},
		{version: "dev"},
	}
	for _, tc := range tests {
		t.Run(tc.version, func(t *testing.T) {
			got, err := GatewayAPICRD{Version: tc.version}.CompareToSupported()
			switch {
			case tc.version == "dev":
				if err == nil {
					t.Errorf("got %d, want an error for a version that is not semantic", got)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("err = %v, want %v", err, tc.wantErr)
				}
			case err != nil || got != tc.want:
				t.Errorf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestReadGatewayAPICRD(t *testing.T) {
	o := &unstructured.Unstructured{}
	o.SetAPIVersion("apiextensions.k8s.io/v1")
	o.SetKind(CRDKind)
	o.SetName("httproutes.gateway.networking.k8s.io")
	o.SetAnnotations(map[string]string{BundleVersionAnnotation: "v1.2.0", ChannelAnnotation: "experimental"})
	now := metav1.Now()
	o.SetDeletionTimestamp(&now)
	_ = unstructured.SetNestedField(o.Object, GatewayAPIGroup, "spec", "group")
	want := GatewayAPICRD{Name: "httproutes.gateway.networking.k8s.io", Version: "v1.2.0", Channel: "experimental", Terminating: true}
	if diff := cmp.Diff(want, ReadGatewayAPICRD(o)); diff != "" || !IsGatewayAPICRD(o) {
		t.Errorf("(-want +got):\n%s", diff)
	}
	o.SetLabels(map[string]string{PartOfLabel: PartOf})
	if !ReadGatewayAPICRD(o).Mesh {
		t.Error("a labelled CRD is not mesh's")
	}
	_ = unstructured.SetNestedField(o.Object, "policy.mesh.dev", "spec", "group")
	if IsGatewayAPICRD(o) {
		t.Error("a CRD of another group is a Gateway API one")
	}
}
