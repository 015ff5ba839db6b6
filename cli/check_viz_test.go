package cli

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mesh-dev/mesh/install/manifests"
)

func TestCheckVizDeployment(t *testing.T) {
	deployment := func(available int32) *appsv1.Deployment {
		replicas := int32(1)
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: manifests.DefaultNamespace, Name: vizName, Generation: 1,
				Labels: map[string]string{manifests.VersionLabel: "v0.1.0"}},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 1,
				ReadyReplicas: available, AvailableReplicas: available},
		}
	}
	crashing := testPod(manifests.DefaultNamespace, "mesh-viz-1", false)
	crashing.Labels = map[string]string{manifests.NameLabel: vizName, manifests.PartOfLabel: manifests.PartOf}
	crashing.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "viz", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
	}}
	for _, tc := range []struct {
		name       string
		objects    []runtime.Object
		wantStatus checkStatus
		wantDetail string
		want       []string
	}{
		{
			name: "available", objects: []runtime.Object{deployment(1)},
			wantStatus: statusOK, wantDetail: "v0.1.0, 1 of 1 pods available",
		},
		{
			name: "missing", wantStatus: statusFail,
			want: []string{"no deployment mesh-viz in namespace mesh-system, so mesh viz cannot work: run mesh install"},
		},
		{
			name: "not ready", objects: []runtime.Object{deployment(0), crashing}, wantStatus: statusFail,
			want: []string{
				"0 of 1 pods available; pod mesh-viz-1: container viz: CrashLoopBackOff; see kubectl -n mesh-system logs mesh-viz-1 -c viz",
				"holds its own certificate from the identity service",
				"kubectl -n mesh-system logs deployment/mesh-viz",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &checker{k: &kube{client: fake.NewClientset(tc.objects...)}, ns: manifests.DefaultNamespace}
			r := runChecks(context.Background(), NewOptions(nil, nil, nil), []check{{category: "control-plane", name: "viz", run: func(ctx context.Context, _ *checker) (string, error) {
				return checkVizDeployment(ctx, c)
			}}})
			got := r.Checks[0]
			if got.Status != tc.wantStatus || got.Detail != tc.wantDetail {
				t.Errorf("status %s, detail %q; want %s, %q (hint %q)", got.Status, got.Detail, tc.wantStatus, tc.wantDetail, got.Hint)
			}
			for _, w := range tc.want {
				if !strings.Contains(got.Hint, w) {
					t.Errorf("hint %q lacks %q", got.Hint, w)
				}
			}
		})
	}
}
