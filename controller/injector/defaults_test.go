package injector

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/internal/names"
)

// TestInstallDefaults: the webhook gives every pod the install's proxy
// defaults, the control-plane namespace's annotations, under the pod's
// namespace's and its own; a bad one there is a warning on the pod, not a
// refusal.
func TestInstallDefaults(t *testing.T) {
	controlPlane := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: names.DefaultControlPlaneNamespace, UID: "uid-cp",
		Annotations: map[string]string{
			names.AnnotationInject:            names.Disabled,
			names.AnnotationTracingCollector:  "mesh-jaeger.mesh-system.svc.cluster.local.:4317",
			names.AnnotationTracingSampleRate: "0.1",
			names.AnnotationProxyLogLevel:     "bogus",
		},
	}}
	shop := enabledNS("shop")
	shop.Annotations[names.AnnotationAccessLog] = names.AccessLogJSON
	shop.Annotations[names.AnnotationTracingSampleRate] = "1"
	s := startServer(t, serverOptions{namespaces: []*corev1.Namespace{controlPlane, shop}})

	pod := replicaSetPod(map[string]string{names.AnnotationProxyLogLevel: "debug"})
	status, out, raw := s.post(t, review(t, "shop", pod, true))
	if status != http.StatusOK || out.Response == nil || len(out.Response.Patch) == 0 {
		t.Fatalf("status %d, not patched: %s", status, raw)
	}
	if len(out.Response.Warnings) != 1 || !strings.Contains(out.Response.Warnings[0], `proxy-log-level="bogus" in the install's defaults (namespace mesh-system) is ignored`) {
		t.Errorf("warnings %q, want the one about the install's log level", out.Response.Warnings)
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
	env := map[string]string{}
	for _, e := range got.Spec.InitContainers[1].Env {
		if strings.HasPrefix(e.Name, "MESH_PROXY_ACCESS") || strings.HasPrefix(e.Name, "MESH_PROXY_TRACING") || e.Name == "MESH_PROXY_LOG_LEVEL" {
			env[e.Name] = e.Value
		}
	}
	want := map[string]string{
		"MESH_PROXY_ACCESS_LOG":          "json",
		"MESH_PROXY_TRACING_COLLECTOR":   "mesh-jaeger.mesh-system.svc.cluster.local.:4317",
		"MESH_PROXY_TRACING_SAMPLE_RATE": "1",
		"MESH_PROXY_LOG_LEVEL":           "debug",
	}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Errorf("proxy env (-want +got):\n%s", diff)
	}
}
