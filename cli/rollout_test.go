package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRolloutDone(t *testing.T) {
	two := int32(2)
	dep := func(gen, observed int64, st appsv1.DeploymentStatus) *appsv1.Deployment {
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Generation: gen},
			Spec:       appsv1.DeploymentSpec{Replicas: &two},
			Status:     func() appsv1.DeploymentStatus { st.ObservedGeneration = observed; return st }(),
		}
	}
	tests := []struct {
		name     string
		d        *appsv1.Deployment
		wantDone bool
		want     string
	}{
		{name: "not observed", d: dep(2, 1, appsv1.DeploymentStatus{}), want: "waiting for the deployment controller"},
		{name: "updating", d: dep(1, 1, appsv1.DeploymentStatus{UpdatedReplicas: 1}), want: "1 of 2 pods updated"},
		{name: "old pods", d: dep(1, 1, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 2}), want: "1 old pods terminating"},
		{name: "unavailable", d: dep(1, 1, appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 1}), want: "1 of 2 pods available"},
		{name: "done", d: dep(1, 1, appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}), wantDone: true, want: "2 of 2 pods available"},
		{
			name: "stalled",
			d: dep(1, 1, appsv1.DeploymentStatus{Conditions: []appsv1.DeploymentCondition{{
				Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded", Message: "ReplicaSet has timed out",
			}}}),
			want: "rollout stalled: ReplicaSet has timed out",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done, detail := rolloutDone(tc.d)
			if done != tc.wantDone || detail != tc.want {
				t.Errorf("rolloutDone = %v, %q; want %v, %q", done, detail, tc.wantDone, tc.want)
			}
		})
	}
}

func TestPodProblem(t *testing.T) {
	waiting := func(reason string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: "controller", Image: "ghcr.io/mesh-dev/mesh-controller:v0.1.0",
			State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2}}}
	}
	pod := func(st corev1.PodStatus) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "mesh-controller-x", Namespace: "mesh-system"}, Status: st}
	}
	tests := []struct {
		name string
		pod  corev1.Pod
		want []string
	}{
		{name: "healthy", pod: pod(corev1.PodStatus{Phase: corev1.PodRunning})},
		{
			name: "image pull",
			pod:  pod(corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("ImagePullBackOff")}}),
			want: []string{"ImagePullBackOff", "ghcr.io/mesh-dev/mesh-controller:v0.1.0", "--registry"},
		},
		{
			name: "crash loop",
			pod:  pod(corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("CrashLoopBackOff")}}),
			want: []string{"CrashLoopBackOff (exit code 2)", "kubectl -n mesh-system logs mesh-controller-x -c controller"},
		},
		{
			name: "unschedulable",
			pod: pod(corev1.PodStatus{Conditions: []corev1.PodCondition{{
				Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available",
			}}}),
			want: []string{"cannot be scheduled: 0/1 nodes are available"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := podProblem([]corev1.Pod{tc.pod})
			if len(tc.want) == 0 && got != "" {
				t.Errorf("podProblem = %q, want none", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("podProblem = %q, lacks %q", got, w)
				}
			}
		})
	}
}

func TestPollTimeoutSaysWhy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var last string
	_, err := poll(ctx, func(s string) { last = s }, func(context.Context) (bool, string, error) {
		return false, "0 of 1 pods available", nil
	})
	if err == nil || !strings.Contains(err.Error(), "timed out: 0 of 1 pods available") {
		t.Fatalf("err = %v", err)
	}
	if last != "0 of 1 pods available" {
		t.Errorf("status %q", last)
	}
}
