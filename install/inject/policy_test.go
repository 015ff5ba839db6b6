package inject

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/internal/names"
)

// TestProxyPolicyEnv checks what the proxy needs to enforce inbound
// policy: its pod's name from the downward API, and the cluster networks
// of the install, which mesh-proxy parses back to the same list.
func TestProxyPolicyEnv(t *testing.T) {
	tests := []struct {
		name     string
		networks []netip.Prefix
		want     string // MESH_PROXY_CLUSTER_NETWORKS; "" for unset
	}{
		{name: "proxy default", networks: nil},
		{name: "install's", networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd12:3456::/32")}, want: "10.42.0.0/16,fd12:3456::/32"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig
			cfg.ClusterNetworks = tc.networks
			pod := newPod(map[string]string{names.AnnotationInject: names.Enabled})
			if res, err := Pod(pod, nil, cfg); err != nil || !res.Injected {
				t.Fatalf("Pod: %v, %+v", err, res)
			}
			env := map[string]corev1.EnvVar{}
			for _, e := range pod.Spec.InitContainers[1].Env {
				env[e.Name] = e
			}
			podName := env[envPodName]
			if podName.ValueFrom == nil || podName.ValueFrom.FieldRef == nil || podName.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				t.Errorf("%s = %+v, want the downward API's metadata.name", envPodName, podName)
			}
			got, ok := env[envClusterNetworks]
			if (tc.want != "") != ok || got.Value != tc.want {
				t.Errorf("%s = %q (set: %v), want %q", envClusterNetworks, got.Value, ok, tc.want)
			}
			checkProxyAccepts(t, pod)
		})
	}
}

// TestDefaultInboundPolicyWarnings: a malformed policy on the pod or its
// namespace is a warning naming it, never a blocked pod; a valid one says
// nothing. The annotation stays on the pod for the controller to read.
func TestDefaultInboundPolicyWarnings(t *testing.T) {
	tests := []struct {
		name        string
		pod, ns     string // the annotation's value; "" for none
		wantWarning []string
	}{
		{name: "none"},
		{name: "pod", pod: names.PolicyDeny},
		{name: "namespace", ns: names.PolicyAudit},
		{name: "bad on the pod", pod: "deny-all", wantWarning: []string{`config.mesh.dev/default-inbound-policy="deny-all" is ignored`}},
		{name: "bad on the namespace", ns: "Audit", wantWarning: []string{`config.mesh.dev/default-inbound-policy="Audit" on namespace shop is ignored`}},
		{
			name: "bad on both", pod: "open", ns: "closed",
			wantWarning: []string{`default-inbound-policy="open" is ignored`, `default-inbound-policy="closed" on namespace shop`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ann := map[string]string{names.AnnotationInject: names.Enabled}
			if tc.pod != "" {
				ann[names.AnnotationDefaultInboundPolicy] = tc.pod
			}
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
			if tc.ns != "" {
				ns.Annotations = map[string]string{names.AnnotationDefaultInboundPolicy: tc.ns}
			}
			pod := newPod(ann)
			res, err := Pod(pod, ns, testConfig)
			if err != nil || !res.Injected {
				t.Fatalf("Pod: %v, %+v", err, res)
			}
			if len(res.Details) != len(tc.wantWarning) {
				t.Fatalf("warnings %q, want %d", res.Warnings, len(tc.wantWarning))
			}
			for i, d := range res.Details {
				if d.Annotation != names.AnnotationDefaultInboundPolicy || !strings.Contains(d.Message, tc.wantWarning[i]) {
					t.Errorf("warning %d about %s: %q, want one containing %q", i, d.Annotation, d.Message, tc.wantWarning[i])
				}
				for _, name := range names.DefaultInboundPolicies {
					if !strings.Contains(d.Message, name) {
						t.Errorf("warning %q does not list %s", d.Message, name)
					}
				}
			}
			if got := pod.Annotations[names.AnnotationDefaultInboundPolicy]; got != tc.pod {
				t.Errorf("the pod's annotation became %q, want %q kept", got, tc.pod)
			}
		})
	}
}
