package workload

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestOf(t *testing.T) {
	owned := func(kind, name string, labels map[string]string) *corev1.Pod {
		yes := true
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
			Name: "p-1", Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &yes}},
		}}
	}
	hash := map[string]string{templateHashLabel: "5d8f7c"}
	tests := []struct {
		name string
		pod  *corev1.Pod
		want Ref
	}{
		{name: "deployment", pod: owned("ReplicaSet", "web-5d8f7c", hash), want: Ref{"deployment", "web"}},
		{name: "replicaset without hash label", pod: owned("ReplicaSet", "web-5d8f7c", nil), want: Ref{"replicaset", "web-5d8f7c"}},
		{name: "replicaset not named after the hash", pod: owned("ReplicaSet", "web", hash), want: Ref{"replicaset", "web"}},
		{name: "hash is the whole name", pod: owned("ReplicaSet", "-5d8f7c", hash), want: Ref{"replicaset", "-5d8f7c"}},
		{name: "statefulset", pod: owned("StatefulSet", "db", nil), want: Ref{"statefulset", "db"}},
		{name: "no controller", pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "lonely"}}, want: Ref{"pod", "lonely"}},
		{name: "owner that is not the controller", pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
			Name: "p", OwnerReferences: []metav1.OwnerReference{{Kind: "Node", Name: "n1"}},
		}}, want: Ref{"pod", "p"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Of(tc.pod); got != tc.want {
				t.Errorf("Of = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestServiceAccount(t *testing.T) {
	if got := ServiceAccount(&corev1.Pod{}); got != "default" {
		t.Errorf("no service account: %q, want default", got)
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{ServiceAccountName: "web"}}
	if got := ServiceAccount(pod); got != "web" {
		t.Errorf("ServiceAccount = %q, want web", got)
	}
}
