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
	"github.com/mesh-dev/mesh/internal/names"
)

func annotatedNS(name string, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
}

// runOneCheck runs fn as the only check against a fake cluster of objects.
func runOneCheck(t *testing.T, fn func(context.Context, *checker) (string, error), objects ...runtime.Object) checkResult {
	t.Helper()
	c := &checker{k: &kube{client: fake.NewClientset(objects...)}, ns: manifests.DefaultNamespace}
	r := runChecks(context.Background(), NewOptions(nil, nil, nil), []check{{category: "test", name: "test", run: func(ctx context.Context, _ *checker) (string, error) {
		return fn(ctx, c)
	}}})
	return r.Checks[0]
}

func TestCheckProxyDefaults(t *testing.T) {
	cp := manifests.DefaultNamespace
	tests := []struct {
		name       string
		objects    []runtime.Object
		wantStatus checkStatus
		wantDetail string
		wantHint   []string
	}{
		{
			name:       "built-in",
			objects:    []runtime.Object{annotatedNS(cp, map[string]string{names.AnnotationInject: names.Disabled}), annotatedNS("shop", nil)},
			wantStatus: statusOK, wantDetail: "install: built-in",
		},
		{
			name: "the install's and two namespaces'",
			objects: []runtime.Object{
				annotatedNS(cp, map[string]string{names.AnnotationInject: names.Disabled,
					names.AnnotationTracingCollector: "mesh-jaeger.mesh-system.svc.cluster.local.:4317", names.AnnotationProxyLogLevel: "warn"}),
				annotatedNS("shop", map[string]string{names.AnnotationAccessLog: "json", names.AnnotationInject: names.Enabled}),
				annotatedNS("bank", map[string]string{names.AnnotationDefaultInboundPolicy: names.PolicyDeny, names.AnnotationProxyMemoryLimit: "256Mi"}),
				annotatedNS("plain", nil),
			},
			wantStatus: statusOK,
			wantDetail: "install: proxy-log-level=warn, tracing-collector=mesh-jaeger.mesh-system.svc.cluster.local.:4317; " +
				"2 namespaces set their own: bank (default-inbound-policy=deny, proxy-memory-limit=256Mi), shop (access-log=json)",
		},
		{
			name: "bad ones",
			objects: []runtime.Object{
				annotatedNS(cp, map[string]string{names.AnnotationTracingSampleRate: "all"}),
				annotatedNS("shop", map[string]string{names.AnnotationAccessLog: "xml", names.AnnotationOpaquePorts: "5432"}),
			},
			wantStatus: statusWarn,
			wantHint: []string{
				`config.mesh.dev/tracing-sample-rate="all" in the install's defaults (namespace mesh-system) is ignored`,
				`config.mesh.dev/access-log="xml" on namespace shop is ignored`,
				"config.mesh.dev/opaque-ports on namespace shop is ignored: it is read on pods only",
				"kubectl annotate namespace",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runOneCheck(t, checkProxyDefaults, tc.objects...)
			if got.Status != tc.wantStatus || (tc.wantDetail != "" && got.Detail != tc.wantDetail) {
				t.Errorf("status %s, detail %q; want %s, %q (hint %q)", got.Status, got.Detail, tc.wantStatus, tc.wantDetail, got.Hint)
			}
			for _, w := range tc.wantHint {
				if !strings.Contains(got.Hint, w) {
					t.Errorf("hint %q lacks %q", got.Hint, w)
				}
			}
		})
	}
}

func TestCheckJaeger(t *testing.T) {
	cp := manifests.DefaultNamespace
	deployment := func(available int32) *appsv1.Deployment {
		replicas := int32(1)
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: cp, Name: manifests.JaegerName, Generation: 1},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "jaeger", Image: "ghcr.io/mesh-dev/jaeger:1.75.0"}}}}},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 1,
				ReadyReplicas: available, AvailableReplicas: available},
		}
	}
	pointed := annotatedNS(cp, map[string]string{names.AnnotationTracingCollector: manifests.JaegerCollectorAddr(cp)})
	tests := []struct {
		name       string
		objects    []runtime.Object
		wantStatus checkStatus
		wantDetail string
		wantHint   string
	}{
		{name: "not installed", objects: []runtime.Object{annotatedNS(cp, nil)}, wantStatus: statusOK, wantDetail: "not installed (mesh install --with-jaeger deploys one)"},
		{name: "available", objects: []runtime.Object{pointed, deployment(1)}, wantStatus: statusOK, wantDetail: "1 of 1 pods available"},
		{name: "not ready", objects: []runtime.Object{pointed, deployment(0)}, wantStatus: statusFail, wantHint: "is ghcr.io/mesh-dev/jaeger:1.75.0 on the nodes"},
		{name: "proxies pointed at a missing one", objects: []runtime.Object{pointed}, wantStatus: statusFail, wantHint: "run mesh install --with-jaeger"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runOneCheck(t, checkJaeger, tc.objects...)
			if got.Status != tc.wantStatus || got.Detail != tc.wantDetail || !strings.Contains(got.Hint, tc.wantHint) {
				t.Errorf("status %s, detail %q, hint %q; want %s, %q, %q", got.Status, got.Detail, got.Hint, tc.wantStatus, tc.wantDetail, tc.wantHint)
			}
		})
	}
}
