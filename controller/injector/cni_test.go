package injector

import (
	"encoding/json"
	"net/http"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/internal/names"
)

// TestCNIMode: the install's CNI mode reaches the injector on the
// control-plane namespace's mesh.dev/cni annotation. With it, a pod gets
// the interception annotation and no mesh-init; without it, mesh-init and
// no annotation.
func TestCNIMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		cni  string // mesh.dev/cni on the control-plane namespace; "" for none
		want bool
	}{
		{name: "cni", cni: names.Enabled, want: true},
		{name: "no annotation", want: false},
		{name: "disabled", cni: names.Disabled, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			controlPlane := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
				Name: names.DefaultControlPlaneNamespace, UID: "uid-cp", Annotations: map[string]string{},
			}}
			if tc.cni != "" {
				controlPlane.Annotations[names.AnnotationCNI] = tc.cni
			}
			s := startServer(t, serverOptions{namespaces: []*corev1.Namespace{controlPlane, enabledNS("shop")}})
			pod := replicaSetPod(map[string]string{names.AnnotationSkipInboundPorts: "22"})
			status, out, raw := s.post(t, review(t, "shop", pod, true))
			if status != http.StatusOK || out.Response == nil || len(out.Response.Patch) == 0 {
				t.Fatalf("status %d, not patched: %s", status, raw)
			}
			if len(out.Response.Warnings) != 0 {
				t.Errorf("warnings %q", out.Response.Warnings)
			}
			p, err := jsonpatch.DecodePatch(out.Response.Patch)
			if err != nil {
				t.Fatal(err)
			}
			orig, _ := json.Marshal(pod)
			patched, err := p.Apply(orig)
			if err != nil {
				t.Fatal(err)
			}
			var got corev1.Pod
			if err := json.Unmarshal(patched, &got); err != nil {
				t.Fatal(err)
			}
			v, annotated := got.Annotations[names.AnnotationInterception]
			hasInit := false
			for _, c := range got.Spec.InitContainers {
				hasInit = hasInit || c.Name == names.InitContainerName
			}
			if annotated != tc.want || hasInit == tc.want {
				t.Errorf("annotation %q (present %v), mesh-init %v; want CNI mode %v", v, annotated, hasInit, tc.want)
			}
			if tc.want && v != `{"skipInboundPorts":"22"}` {
				t.Errorf("annotation %s=%s, want the pod's skip", names.AnnotationInterception, v)
			}
		})
	}
}
