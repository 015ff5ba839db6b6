package inject

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/internal/names"
)

// applyPatch applies patch to doc with an independent RFC 6902
// implementation (the one the API server's own tests use).
func applyPatch(t testing.TB, doc, patch []byte) []byte {
	t.Helper()
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("decode patch %s: %v", patch, err)
	}
	out, err := p.Apply(doc)
	if err != nil {
		t.Fatalf("apply patch %s: %v", patch, err)
	}
	return out
}

// jsonDiff compares two JSON documents as values, returning a diff.
func jsonDiff(t testing.TB, want, got []byte) string {
	t.Helper()
	var w, g any
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	return cmp.Diff(w, g)
}

func TestPatch(t *testing.T) {
	tests := []struct {
		name   string
		orig   *corev1.Pod
		mutate func(*corev1.Pod)
		want   string // the exact patch, where it is short enough to read
	}{
		{name: "unchanged", orig: newPod(nil), mutate: func(*corev1.Pod) {}, want: `[]`},
		{
			name: "escaped keys", orig: newPod(map[string]string{"a/b": "1"}),
			mutate: func(p *corev1.Pod) { p.Annotations["a/b"] = "2"; p.Annotations["x~y"] = "3" },
			want:   `[{"op":"replace","path":"/metadata/annotations/a~1b","value":"2"},{"op":"add","path":"/metadata/annotations/x~0y","value":"3"}]`,
		},
		{
			name: "removed list elements", orig: func() *corev1.Pod {
				p := newPod(nil)
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "b"}, corev1.Container{Name: "c"})
				return p
			}(),
			mutate: func(p *corev1.Pod) { p.Spec.Containers = p.Spec.Containers[:1] },
			want:   `[{"op":"remove","path":"/spec/containers/1"},{"op":"remove","path":"/spec/containers/1"}]`,
		},
		{
			name: "changed list element", orig: newPod(nil),
			mutate: func(p *corev1.Pod) { p.Spec.Containers[0].Image = "nginx:2" },
			want:   `[{"op":"replace","path":"/spec/containers/0/image","value":"nginx:2"}]`,
		},
		{
			name: "reordered list is replaced", orig: func() *corev1.Pod {
				p := newPod(nil)
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "b"}, corev1.Container{Name: "c"})
				return p
			}(),
			mutate: func(p *corev1.Pod) { c := p.Spec.Containers; p.Spec.Containers = []corev1.Container{c[2], c[1]} },
		},
		{name: "removed field", orig: newPod(map[string]string{"a": "b"}), mutate: func(p *corev1.Pod) { p.Annotations = nil }, want: `[{"op":"remove","path":"/metadata/annotations"}]`},
		{
			name: "injected, pod has nothing to append to", orig: newPod(map[string]string{names.AnnotationInject: names.Enabled}),
			mutate: func(p *corev1.Pod) { mustInject(t, p) },
		},
		{
			name: "injected before the pod's init containers",
			orig: func() *corev1.Pod {
				p := newPod(map[string]string{names.AnnotationInject: names.Enabled})
				p.Labels = map[string]string{"app": "web"}
				p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "m"}}
				p.Spec.Volumes = []corev1.Volume{{Name: "data"}}
				return p
			}(),
			mutate: func(p *corev1.Pod) { mustInject(t, p) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mutated := tc.orig.DeepCopy()
			tc.mutate(mutated)
			patch, err := Patch(tc.orig, mutated)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != "" {
				if diff := jsonDiff(t, []byte(tc.want), patch); diff != "" {
					t.Errorf("patch (-want +got):\n%s", diff)
				}
			}
			origJSON, _ := json.Marshal(tc.orig)
			wantJSON, _ := json.Marshal(mutated)
			if diff := jsonDiff(t, wantJSON, applyPatch(t, origJSON, patch)); diff != "" {
				t.Errorf("patched pod differs from the mutated one (-want +got):\n%s", diff)
			}
		})
	}
}

func mustInject(t testing.TB, p *corev1.Pod) {
	t.Helper()
	res, err := Pod(p, nil, testConfig)
	if err != nil || !res.Injected {
		t.Fatalf("Pod: %v, %+v", err, res)
	}
}

// TestPatchKeepsUnknownFields applies the patch to the pod as submitted,
// with a field this build's API types do not know: the API server applies
// the patch to what was submitted, so the field must survive.
func TestPatchKeepsUnknownFields(t *testing.T) {
	raw := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"shop","annotations":{"mesh.dev/inject":"enabled"}},
		"spec":{"initContainers":[{"name":"migrate","image":"m","fromTheFuture":{"a":1}}],"containers":[{"name":"web","image":"nginx","fromTheFuture":true}]}}`)
	var orig corev1.Pod
	if err := json.Unmarshal(raw, &orig); err != nil {
		t.Fatal(err)
	}
	mutated := orig.DeepCopy()
	mustInject(t, mutated)
	patch, err := Patch(&orig, mutated)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     struct {
			InitContainers []map[string]any `json:"initContainers"`
			Containers     []map[string]any `json:"containers"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(applyPatch(t, raw, patch), &got); err != nil {
		t.Fatal(err)
	}
	var containers []any
	for _, c := range got.Spec.InitContainers {
		containers = append(containers, c["name"])
	}
	if diff := cmp.Diff([]any{names.InitContainerName, names.ProxyContainerName, "migrate"}, containers); diff != "" {
		t.Errorf("init containers (-want +got):\n%s", diff)
	}
	if got.Spec.InitContainers[2]["fromTheFuture"] == nil || got.Spec.Containers[0]["fromTheFuture"] == nil {
		t.Errorf("unknown fields lost: %s", patch)
	}
}
