package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

// TestInstallDryRunProxyDefaults: the proxy default and tracing flags
// reach the control-plane namespace's annotations as the injector reads
// them, and --with-jaeger adds Jaeger and points the proxies at it.
func TestInstallDryRunProxyDefaults(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		want       map[string]string
		wantJaeger bool
	}{
		{name: "none", want: map[string]string{}},
		{
			name: "every flag, spelt loosely",
			args: []string{"--proxy-log-level", "WARN", "--proxy-cpu-request", " 50m", "--proxy-cpu-limit", "2",
				"--proxy-memory-request", "32Mi", "--proxy-memory-limit", "256Mi ",
				"--tracing-collector", "otel.tracing:4317 ", "--tracing-sample-rate", " 0.25"},
			want: map[string]string{
				names.AnnotationProxyLogLevel: "warn", names.AnnotationProxyCPURequest: "50m", names.AnnotationProxyCPULimit: "2",
				names.AnnotationProxyMemoryRequest: "32Mi", names.AnnotationProxyMemoryLimit: "256Mi",
				names.AnnotationTracingCollector: "otel.tracing:4317", names.AnnotationTracingSampleRate: "0.25",
			},
		},
		{
			name:       "with jaeger",
			args:       []string{"--with-jaeger"},
			want:       map[string]string{names.AnnotationTracingCollector: "mesh-jaeger.mesh-system.svc.cluster.local.:4317"},
			wantJaeger: true,
		},
		{
			name:       "with jaeger and another collector",
			args:       []string{"--with-jaeger", "--tracing-collector", "otel.tracing:4317"},
			want:       map[string]string{names.AnnotationTracingCollector: "otel.tracing:4317"},
			wantJaeger: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := run(t, "", append([]string{"install", "--dry-run", "-o", "yaml"}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			docs := decodeDocs(t, []byte(out))
			got := objectOf(t, docs, "Namespace", manifests.DefaultNamespace).GetAnnotations()
			delete(got, names.AnnotationInject)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("namespace annotations (-want +got):\n%s", diff)
			}
			jaeger := 0
			for _, d := range docs {
				if md, _ := d["metadata"].(map[string]any); md["name"] == manifests.JaegerName {
					jaeger++
				}
			}
			want := 0
			if tc.wantJaeger {
				want = 2 // its Deployment and Service
			}
			if jaeger != want {
				t.Errorf("%d objects named %s, want %d", jaeger, manifests.JaegerName, want)
			}
		})
	}
}

func TestInstallRefusesBadProxyDefaults(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "log level", args: []string{"--proxy-log-level", "trace"}, want: `--proxy-log-level "trace": want debug, info, warn or error`},
		{name: "cpu", args: []string{"--proxy-cpu-request", "fast"}, want: `--proxy-cpu-request "fast": want a positive quantity, like 100m or 1`},
		{name: "negative", args: []string{"--proxy-memory-limit", "-1Gi"}, want: `--proxy-memory-limit "-1Gi": want a positive quantity, like 64Mi or 1Gi`},
		{name: "fraction of a byte", args: []string{"--proxy-memory-request", "1500m"}, want: "want a whole number of bytes"},
		{name: "request above limit", args: []string{"--proxy-cpu-request", "2", "--proxy-cpu-limit", "500m"}, want: "--proxy-cpu-request 2 is above --proxy-cpu-limit 500m"},
		{name: "collector", args: []string{"--tracing-collector", "http://jaeger:4317"}, want: "--tracing-collector: invalid tracing collector address"},
		{name: "collector without port", args: []string{"--tracing-collector", "jaeger"}, want: "want host:port"},
		{name: "sample rate", args: []string{"--tracing-sample-rate", "10"}, want: "--tracing-sample-rate: invalid tracing sample rate \"10\": want a number from 0 to 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, "", append([]string{"install", "--dry-run"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestPruneJaeger: install without --with-jaeger deletes the Jaeger an
// earlier install made, and nothing of that name it did not make.
func TestPruneJaeger(t *testing.T) {
	ns := manifests.DefaultNamespace
	ours := metav1.ObjectMeta{Namespace: ns, Name: manifests.JaegerName, Labels: map[string]string{manifests.PartOfLabel: manifests.PartOf}}
	theirs := metav1.ObjectMeta{Namespace: ns, Name: manifests.JaegerName}
	tests := []struct {
		name        string
		deployment  *metav1.ObjectMeta
		service     *metav1.ObjectMeta
		wantDeleted []string
	}{
		{name: "none"},
		{name: "ours", deployment: &ours, service: &ours, wantDeleted: []string{"deployment/mesh-jaeger", "service/mesh-jaeger"}},
		{name: "someone else's", deployment: &theirs, service: &theirs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			ctx := context.Background()
			if tc.deployment != nil {
				if _, err := client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: *tc.deployment}, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.service != nil {
				if _, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: *tc.service}, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			got, err := pruneJaeger(ctx, &kube{client: client}, ns)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.wantDeleted, got); diff != "" {
				t.Errorf("deleted (-want +got):\n%s", diff)
			}
			_, errD := client.AppsV1().Deployments(ns).Get(ctx, manifests.JaegerName, metav1.GetOptions{})
			_, errS := client.CoreV1().Services(ns).Get(ctx, manifests.JaegerName, metav1.GetOptions{})
			stillThere := tc.deployment != nil && len(tc.wantDeleted) == 0
			if apierrors.IsNotFound(errD) == stillThere || apierrors.IsNotFound(errS) == stillThere {
				t.Errorf("after prune: deployment err %v, service err %v; want them kept: %v", errD, errS, stillThere)
			}
		})
	}
}
