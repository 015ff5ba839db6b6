package cli

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/mesh-dev/mesh/install/manifests"
)

// embeddedGatewayAPI decodes the embedded Gateway API CRDs once: half a
// megabyte of YAML takes a while. Callers copy what they change.
var embeddedGatewayAPI = sync.OnceValues(manifests.GatewayAPICRDs)

// gatewayCRD is one of the Gateway API CRDs mesh installs (by plural) as
// a cluster holds it: of release version ("" for none) and channel,
// labelled as mesh's when mesh is set, and Established.
func gatewayCRD(t testing.TB, plural, version, channel string, mesh bool) *unstructured.Unstructured {
	t.Helper()
	gw, err := embeddedGatewayAPI()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range gw {
		if m.Object.GetName() != plural+"."+manifests.GatewayAPIGroup {
			continue
		}
		o := m.Object.DeepCopy()
		a := o.GetAnnotations()
		delete(a, manifests.BundleVersionAnnotation)
		if version != "" {
			a[manifests.BundleVersionAnnotation] = version
		}
		a[manifests.ChannelAnnotation] = channel
		o.SetAnnotations(a)
		if !mesh {
			o.SetLabels(nil)
		}
		_ = unstructured.SetNestedSlice(o.Object, []any{map[string]any{"type": "Established", "status": "True"}}, "status", "conditions")
		return o
	}
	t.Fatalf("mesh installs no Gateway API CRD %s", plural)
	return nil
}

func TestPlanGatewayAPI(t *testing.T) {
	const supported = manifests.GatewayAPIBundleVersion
	terminating := gatewayCRD(t, "httproutes", supported, "standard", true)
	now := metav1.Now()
	terminating.SetDeletionTimestamp(&now)
	tests := []struct {
		name      string
		found     *unstructured.Unstructured
		wantApply bool
		wantWarn  bool
		wantNote  string
	}{
		{name: "none", wantApply: true},
		{name: "mesh's, this release", found: gatewayCRD(t, "httproutes", supported, "standard", true), wantApply: true},
		{
			name: "mesh's, older", found: gatewayCRD(t, "httproutes", "v1.5.1", "standard", true), wantApply: true,
			wantNote: "customresourcedefinition/httproutes.gateway.networking.k8s.io: upgrading v1.5.1 to " + supported,
		},
		{
			name: "mesh's, newer", found: gatewayCRD(t, "httproutes", "v1.7.0", "standard", true),
			wantNote: "v1.7.0 (standard channel, installed by mesh) is newer than mesh's " + supported + ": kept",
		},
		{
			name: "another project's, older", found: gatewayCRD(t, "httproutes", "v1.2.1", "standard", false), wantWarn: true,
			wantNote: "v1.2.1 (standard channel, installed by another project): kept; it is older than the " + supported + " mesh supports: upgrade it with the project that installed it",
		},
		{
			name: "another project's, this release", found: gatewayCRD(t, "httproutes", supported, "standard", false),
			wantNote: "(standard channel, installed by another project): kept",
		},
		{
			name: "another project's, newer", found: gatewayCRD(t, "httproutes", "v1.8.0", "experimental", false),
			wantNote: "is newer than mesh's " + supported + ": kept",
		},
		{
			name: "mesh's turned experimental, older", found: gatewayCRD(t, "httproutes", "v1.5.0", "experimental", true), wantWarn: true,
			wantNote: "kept, as the standard channel would drop its extra fields; it is older",
		},
		{
			name: "experimental, this release", found: gatewayCRD(t, "httproutes", supported, "experimental", false),
			wantNote: "kept, as the standard channel would drop its extra fields",
		},
		{
			name: "no release", found: gatewayCRD(t, "httproutes", "", "", false), wantWarn: true,
			wantNote: "no gateway.networking.k8s.io/bundle-version annotation, so its release is unknown: left alone",
		},
		{
			name: "not a version", found: gatewayCRD(t, "httproutes", "main", "standard", true), wantWarn: true,
			wantNote: `bundle version "main"`,
		},
		{name: "being deleted", found: terminating, wantWarn: true, wantNote: "is being deleted: left alone"},
	}
	gw, err := manifests.GatewayAPICRDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			found := map[string]*unstructured.Unstructured{}
			if tc.found != nil {
				found[tc.found.GetName()] = tc.found
			}
			steps := planGatewayAPI(gw, found)
			if len(steps) != len(gw) {
				t.Fatalf("%d steps for %d CRDs", len(steps), len(gw))
			}
			for _, s := range steps {
				if s.m.Object.GetName() != "httproutes."+manifests.GatewayAPIGroup {
					if !s.apply || s.note != "" {
						t.Errorf("%s, absent: apply %v, note %q; want applied without a note", s.m.Name(), s.apply, s.note)
					}
					continue
				}
				if s.apply != tc.wantApply || s.warn != tc.wantWarn || !strings.Contains(s.note, tc.wantNote) || (tc.wantNote == "") != (s.note == "") {
					t.Errorf("apply %v, warn %v, note %q; want apply %v, warn %v, a note containing %q", s.apply, s.warn, s.note, tc.wantApply, tc.wantWarn, tc.wantNote)
				}
			}
		})
	}
}

// TestInstallGatewayAPI: install reads the cluster's copies, says what it
// keeps and why, warns when the CRDs end up of several releases, and
// applies only the rest, labelled as mesh's.
func TestInstallGatewayAPI(t *testing.T) {
	k := fakeKube(t, gatewayCRD(t, "httproutes", "v1.2.1", "standard", false))
	var out bytes.Buffer
	p := newProgress(&out, func() time.Time { return testNow })
	apply, err := installGatewayAPI(context.Background(), k, p)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range apply {
		got = append(got, m.Name())
		if m.Object.GetLabels()[manifests.PartOfLabel] != manifests.PartOf {
			t.Errorf("%s is not labelled as mesh's", m.Name())
		}
	}
	want := []string{"customresourcedefinition/grpcroutes.gateway.networking.k8s.io"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("applied (-want +got):\n%s", diff)
	}
	for _, line := range []string{
		warnMark + " customresourcedefinition/httproutes.gateway.networking.k8s.io v1.2.1 (standard channel, installed by another project): kept; it is older than the " + manifests.GatewayAPIBundleVersion + " mesh supports",
		warnMark + " the Gateway API CRDs are now of 2 releases (v1.2.1, " + manifests.GatewayAPIBundleVersion + ")",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, out.String())
		}
	}

	// One of unknown release: named so in the warning.
	out.Reset()
	if _, err := installGatewayAPI(context.Background(), fakeKube(t, gatewayCRD(t, "httproutes", "", "", false)), p); err != nil {
		t.Fatal(err)
	}
	if want := "releases (unknown, " + manifests.GatewayAPIBundleVersion + ")"; !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}

	// A cluster with mesh's copies of this release: all re-applied, quietly.
	var objs []runtime.Object
	for _, plural := range []string{"httproutes", "grpcroutes"} {
		objs = append(objs, gatewayCRD(t, plural, manifests.GatewayAPIBundleVersion, "standard", true))
	}
	out.Reset()
	apply, err = installGatewayAPI(context.Background(), fakeKube(t, objs...), p)
	if err != nil || len(apply) != 2 || out.Len() != 0 {
		t.Errorf("mesh's own: %d to apply, %v, output %q; want 2, no output", len(apply), err, out.String())
	}
}
