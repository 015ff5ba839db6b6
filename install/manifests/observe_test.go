package manifests

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/mesh-dev/mesh/install/image"
	"github.com/mesh-dev/mesh/install/inject"
	"github.com/mesh-dev/mesh/internal/names"
)

// TestProxyDefaultsOnNamespace: the install's proxy defaults are the
// control-plane namespace's annotations, where the injector reads them;
// with none set the namespace carries only mesh.dev/inject.
func TestProxyDefaultsOnNamespace(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Values)
		want   map[string]string
	}{
		{name: "none", modify: func(*Values) {}, want: map[string]string{}},
		{
			name: "every flag",
			modify: func(v *Values) {
				v.Proxy = ProxyDefaults{LogLevel: "debug", CPURequest: "50m", CPULimit: "1", MemoryRequest: "32Mi", MemoryLimit: "256Mi"}
				v.Tracing = Tracing{Collector: "otel.tracing:4317", SampleRate: "0.05"}
			},
			want: map[string]string{
				names.AnnotationProxyLogLevel: "debug", names.AnnotationProxyCPURequest: "50m", names.AnnotationProxyCPULimit: "1",
				names.AnnotationProxyMemoryRequest: "32Mi", names.AnnotationProxyMemoryLimit: "256Mi",
				names.AnnotationTracingCollector: "otel.tracing:4317", names.AnnotationTracingSampleRate: "0.05",
			},
		},
		{
			name:   "jaeger is the collector when none is given",
			modify: func(v *Values) { v.Tracing.Jaeger = true },
			want:   map[string]string{names.AnnotationTracingCollector: "mesh-jaeger.mesh-system.svc.cluster.local.:4317"},
		},
		{
			name:   "a collector given wins over jaeger",
			modify: func(v *Values) { v.Tracing = Tracing{Jaeger: true, Collector: "otel.tracing:4317"} },
			want:   map[string]string{names.AnnotationTracingCollector: "otel.tracing:4317"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := testValues()
			tc.modify(&v)
			ms, err := Render(v)
			if err != nil {
				t.Fatal(err)
			}
			got := find(t, ms, "Namespace", v.Namespace).GetAnnotations()
			if got[names.AnnotationInject] != names.Disabled {
				t.Errorf("namespace lost %s=%s", names.AnnotationInject, names.Disabled)
			}
			delete(got, names.AnnotationInject)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("namespace annotations (-want +got):\n%s", diff)
			}
			if w := inject.CheckDefaults(got, v.Namespace, true); len(w) != 0 {
				t.Errorf("the injector would warn: %+v", w)
			}
		})
	}
}

func TestValidateProxyDefaults(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Values)
		want   string
	}{
		{name: "log level", modify: func(v *Values) { v.Proxy.LogLevel = "trace" }, want: `proxy-log-level="trace"`},
		{name: "cpu", modify: func(v *Values) { v.Proxy.CPURequest = "lots" }, want: "proxy-cpu-request"},
		{name: "fraction of a byte", modify: func(v *Values) { v.Proxy.MemoryLimit = "100m" }, want: "a fraction of a byte"},
		{name: "request above limit", modify: func(v *Values) { v.Proxy.MemoryRequest, v.Proxy.MemoryLimit = "1Gi", "64Mi" }, want: "the request is above the limit"},
		{name: "collector", modify: func(v *Values) { v.Tracing.Collector = "http://jaeger:4317" }, want: "tracing-collector"},
		{name: "sample rate", modify: func(v *Values) { v.Tracing.SampleRate = "5%" }, want: "want a number from 0 to 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := testValues()
			tc.modify(&v)
			if err := v.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

// TestJaeger: --with-jaeger adds Jaeger's Deployment and Service to the
// control-plane namespace, part of mesh so uninstall finds them, its pod
// fit for the namespace's restricted Pod Security Standard; without it
// nothing of Jaeger's is rendered.
func TestJaeger(t *testing.T) {
	v := testValues()
	without, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range manifestNames(without) {
		if strings.Contains(n, "jaeger") {
			t.Errorf("%s rendered without Jaeger", n)
		}
	}
	v.Tracing.Jaeger = true
	ms, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	added := slices.DeleteFunc(manifestNames(ms), func(n string) bool { return slices.Contains(manifestNames(without), n) })
	if diff := cmp.Diff([]string{"deployment/mesh-jaeger", "service/mesh-jaeger"}, added); diff != "" {
		t.Errorf("objects Jaeger adds (-want +got):\n%s", diff)
	}
	for _, kind := range []string{"Deployment", "Service"} {
		obj := find(t, ms, kind, JaegerName)
		if obj.GetNamespace() != v.Namespace || obj.GetLabels()[PartOfLabel] != PartOf {
			t.Errorf("%s in namespace %q with labels %v: want %s, %s=%s", kind, obj.GetNamespace(), obj.GetLabels(), v.Namespace, PartOfLabel, PartOf)
		}
	}

	c, _ := container(t, ms, JaegerName)
	if got, want := c["image"], "ghcr.io/mesh-dev/jaeger:1.75.0"; got != want {
		t.Errorf("image %v, want %s", got, want)
	}
	if got := c["imagePullPolicy"]; got != "IfNotPresent" {
		t.Errorf("imagePullPolicy %v: locally loaded images must run", got)
	}
	if diff := cmp.Diff(map[string]int64{"otlp-grpc": JaegerOTLPPort, "otlp-http": 4318, "query": JaegerQueryPort, "health": 13133}, ports(c)); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	if p, _, _ := unstructured.NestedString(c, "readinessProbe", "httpGet", "path"); p != "/status" {
		t.Errorf("readiness probe path %q, want Jaeger's health check /status", p)
	}
	for _, res := range []string{"cpu", "memory"} {
		if q, _, _ := unstructured.NestedString(c, "resources", "requests", res); q == "" {
			t.Errorf("no %s request", res)
		}
	}
	if q, _, _ := unstructured.NestedString(c, "resources", "limits", "memory"); q == "" {
		t.Error("no memory limit: spans in memory must not grow without bound")
	}
	// The restricted Pod Security Standard.
	dep := find(t, ms, "Deployment", JaegerName)
	pod, _, _ := unstructured.NestedMap(dep.Object, "spec", "template", "spec")
	checks := []struct {
		path []string
		want any
	}{
		{[]string{"securityContext", "runAsNonRoot"}, true},
		{[]string{"securityContext", "seccompProfile", "type"}, "RuntimeDefault"},
	}
	for _, ch := range checks {
		if got, _, _ := unstructured.NestedFieldNoCopy(pod, ch.path...); got != ch.want {
			t.Errorf("pod %s = %v, want %v", strings.Join(ch.path, "."), got, ch.want)
		}
	}
	if got, _, _ := unstructured.NestedFieldNoCopy(c, "securityContext", "allowPrivilegeEscalation"); got != false {
		t.Errorf("allowPrivilegeEscalation %v, want false", got)
	}
	if got, _, _ := unstructured.NestedStringSlice(c, "securityContext", "capabilities", "drop"); !slices.Equal(got, []string{"ALL"}) {
		t.Errorf("capabilities drop %v, want [ALL]", got)
	}

	svc := find(t, ms, "Service", JaegerName)
	sel, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
	labels, _, _ := unstructured.NestedStringMap(dep.Object, "spec", "template", "metadata", "labels")
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("service selector %s=%s does not select the pod (labels %v)", k, v, labels)
		}
	}
	svcPorts, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	got := map[string]int64{}
	for _, p := range svcPorts {
		p := p.(map[string]any)
		got[p["name"].(string)] = p["port"].(int64)
	}
	if got["otlp-grpc"] != JaegerOTLPPort || got["query"] != JaegerQueryPort {
		t.Errorf("service ports %v: want otlp-grpc %d and query %d", got, JaegerOTLPPort, JaegerQueryPort)
	}
	if !strings.HasPrefix(JaegerCollectorAddr(v.Namespace), JaegerName+"."+v.Namespace+".svc.") {
		t.Errorf("JaegerCollectorAddr %s does not name the Service", JaegerCollectorAddr(v.Namespace))
	}
}

// TestJaegerImageIsBuilt: the image --with-jaeger runs is the one make
// images builds, at the default registry; the constants live apart so the
// CLI does not link the image builder.
func TestJaegerImageIsBuilt(t *testing.T) {
	v := testValues()
	if got, want := v.JaegerImage(), image.Ref(image.JaegerName, image.JaegerVersion); got != want || DefaultRegistry != image.Registry {
		t.Errorf("JaegerImage = %s at registry %s; make images builds %s at %s", got, DefaultRegistry, want, image.Registry)
	}
}
