package inject

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/install/cni/interception"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/ports"
)

// TestCNIAnnotationReadsBack: what the injector writes in CNI mode is what
// the plugin reads (interception.Parse), for a pod with skips and one
// without, and the pod gets no container or volume that needs NET_ADMIN.
func TestCNIAnnotationReadsBack(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        interception.Settings
	}{
		{name: "no skips", want: interception.Settings{}},
		{
			name: "skips",
			annotations: map[string]string{
				names.AnnotationSkipInboundPorts:    "22",
				names.AnnotationSkipOutboundPorts:   "3306,9000-9010",
				names.AnnotationSkipOutboundSubnets: "10.96.0.0/12",
			},
			want: interception.Settings{
				SkipInboundPorts:    mustPorts(t, "22"),
				SkipOutboundPorts:   mustPorts(t, "3306,9000-9010"),
				SkipOutboundSubnets: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
			},
		},
		// A malformed skip is ignored with a warning, as mesh-init's flag
		// would be: the annotation must still parse.
		{
			name:        "malformed skip",
			annotations: map[string]string{names.AnnotationSkipInboundPorts: "http"},
			want:        interception.Settings{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop", Annotations: tc.annotations},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:v1"}}},
			}
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
				Name: "shop", Annotations: map[string]string{names.AnnotationInject: names.Enabled},
			}}
			cfg := testConfig
			cfg.CNI = true
			res, err := Pod(pod, ns, cfg)
			if err != nil || !res.Injected {
				t.Fatalf("Pod: %v, %+v", err, res)
			}
			v, ok := pod.Annotations[names.AnnotationInterception]
			if !ok {
				t.Fatalf("no %s annotation: %v", names.AnnotationInterception, pod.Annotations)
			}
			got, err := interception.Parse(v)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b ports.Set) bool { return a.String() == b.String() }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("settings (-want +got):\n%s", diff)
			}
			for _, c := range pod.Spec.InitContainers {
				if c.Name == names.InitContainerName {
					t.Errorf("CNI mode wrote %s", names.InitContainerName)
				}
				if sc := c.SecurityContext; sc != nil && sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
					t.Errorf("container %s adds capabilities %v", c.Name, sc.Capabilities.Add)
				}
			}
			if len(pod.Spec.Volumes) != 0 {
				t.Errorf("CNI mode added volumes %v", pod.Spec.Volumes)
			}
			// Injecting again is refused, as without CNI mode.
			if res, _ := Pod(pod, ns, cfg); res.Injected || res.Skip != SkipAlreadyInjected {
				t.Errorf("second injection: %+v", res)
			}
		})
	}
}

func mustPorts(t *testing.T, s string) ports.Set {
	t.Helper()
	p, err := ports.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
