package kubelab

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mesh-dev/mesh/internal/names"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestPoll(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		cond    func(n int) (bool, string, error)
		wantErr string
		wantIs  error
	}{
		{name: "done on the third call", cond: func(n int) (bool, string, error) { return n == 3, "not yet", nil }},
		{name: "an error ends it", cond: func(n int) (bool, string, error) { return false, "", boom }, wantErr: "the thing: boom", wantIs: boom},
		{name: "the last reason on a timeout", cond: func(n int) (bool, string, error) {
			if n == 1 {
				return false, "first reason", nil
			}
			return false, "", nil // no news keeps the last reason
		}, wantErr: "the thing: not done after 30ms: first reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			err := Poll(t.Context(), 30*time.Millisecond, time.Millisecond, "the thing", func(context.Context) (bool, string, error) {
				n++
				return tc.cond(n)
			})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Poll: %v", err)
			case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
				t.Fatalf("Poll: %v, want %q", err, tc.wantErr)
			case tc.wantIs != nil && !errors.Is(err, tc.wantIs):
				t.Fatalf("Poll: %v does not wrap %v", err, tc.wantIs)
			}
		})
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := Poll(ctx, time.Minute, time.Millisecond, "the thing", func(context.Context) (bool, string, error) { return false, "", nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Poll with an ended context: %v, want context.Canceled", err)
	}
}

func TestDeploymentNotReady(t *testing.T) {
	three := int32(3)
	for _, tc := range []struct {
		name string
		d    appsv1.Deployment
		want string
	}{
		{name: "ready", want: "", d: appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Generation: 2},
			Spec:       appsv1.DeploymentSpec{Replicas: &three},
			Status:     appsv1.DeploymentStatus{ObservedGeneration: 2, UpdatedReplicas: 3, ReadyReplicas: 3, AvailableReplicas: 3},
		}},
		{name: "one replica by default", want: "", d: appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Status:     appsv1.DeploymentStatus{UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1},
		}},
		{name: "spec not seen", want: "deployment web: its controller has not seen the latest spec", d: appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Generation: 3},
			Status:     appsv1.DeploymentStatus{ObservedGeneration: 2, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1},
		}},
		{name: "rolling out", want: "deployment web: 2 of 3 pods updated, 1 ready, 1 available", d: appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec:       appsv1.DeploymentSpec{Replicas: &three},
			Status:     appsv1.DeploymentStatus{UpdatedReplicas: 2, ReadyReplicas: 1, AvailableReplicas: 1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DeploymentNotReady(&tc.d); got != tc.want {
				t.Errorf("DeploymentNotReady = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestProxyContainer(t *testing.T) {
	sidecar := corev1.Pod{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: names.InitContainerName}, {Name: names.ProxyContainerName, Image: "native"}},
		Containers:     []corev1.Container{{Name: "app"}},
	}}
	plain := corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: names.ProxyContainerName, Image: "plain"}}}}
	none := corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: names.InitContainerName}}, Containers: []corev1.Container{{Name: "app"}}}}
	if c := ProxyContainer(&sidecar); c == nil || c.Image != "native" || !HasProxy(&sidecar) {
		t.Errorf("native sidecar: ProxyContainer = %v", c)
	}
	if c := ProxyContainer(&plain); c == nil || c.Image != "plain" || !HasProxy(&plain) {
		t.Errorf("plain container: ProxyContainer = %v", c)
	}
	if c := ProxyContainer(&none); c != nil || HasProxy(&none) {
		t.Errorf("a pod without the proxy: ProxyContainer = %v", c)
	}
}

// TestDeleteNamespace deletes only a namespace that carries the
// benchmark's label.
func TestDeleteNamespace(t *testing.T) {
	const label = "bench.mesh.dev/test"
	kc := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ours", Labels: map[string]string{label: "true"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "theirs"}},
	)
	var log strings.Builder
	l := &Lab{Client: kc, log: io.Discard, logf: func(format string, args ...any) { log.WriteString(format + "\n") }}
	ctx := t.Context()
	err := l.DeleteNamespace(ctx, "theirs", label, true)
	if err == nil || !strings.Contains(err.Error(), "not this benchmark's") {
		t.Errorf("DeleteNamespace of an unlabelled namespace: %v, want a refusal", err)
	}
	if _, err := kc.CoreV1().Namespaces().Get(ctx, "theirs", metav1.GetOptions{}); err != nil {
		t.Errorf("the unlabelled namespace is gone: %v", err)
	}
	if err := l.DeleteNamespace(ctx, "ours", label, true); err != nil {
		t.Fatalf("DeleteNamespace of the run's namespace: %v", err)
	}
	if _, err := kc.CoreV1().Namespaces().Get(ctx, "ours", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the run's namespace is still there: %v", err)
	}
	if !strings.Contains(log.String(), "left behind by an earlier run") {
		t.Errorf("a leftover's deletion was not logged as one: %q", log.String())
	}
	if err := l.DeleteNamespace(ctx, "absent", label, false); err != nil {
		t.Errorf("DeleteNamespace of an absent namespace: %v, want nothing to do", err)
	}
}
