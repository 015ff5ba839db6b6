package inject

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/internal/names"
)

// proxyEnv returns the injected proxy's environment variables that have a
// value, by name.
func proxyEnv(t testing.TB, pod *corev1.Pod) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range pod.Spec.InitContainers[1].Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

// TestLayeredDefaults: the install's defaults, a namespace's and a pod's
// annotations of DefaultAnnotations reach the proxy, the most specific
// winning key by key; a malformed value leaves the one below it in force
// and says so.
func TestLayeredDefaults(t *testing.T) {
	const collector = "jaeger.mesh-system.svc.cluster.local.:4317"
	tests := []struct {
		name          string
		install, ns   map[string]string
		pod           map[string]string
		wantEnv       map[string]string // "" for unset
		wantWarnings  []string          // substrings, in order
		wantResources string            // the proxy's resources, as requests/limits; "" for the defaults
	}{
		{
			name:    "nothing set: access log and tracing off",
			wantEnv: map[string]string{envAccessLog: "", envTracingCollector: "", envTracingSampleRate: "", envLogLevel: "info"},
		},
		{
			name:    "the install's",
			install: map[string]string{names.AnnotationTracingCollector: collector, names.AnnotationTracingSampleRate: "0.01", names.AnnotationProxyLogLevel: "warn"},
			wantEnv: map[string]string{envTracingCollector: collector, envTracingSampleRate: "0.01", envLogLevel: "warn", envAccessLog: ""},
		},
		{
			name:    "the namespace's over the install's",
			install: map[string]string{names.AnnotationTracingCollector: collector, names.AnnotationTracingSampleRate: "0.01"},
			ns:      map[string]string{names.AnnotationAccessLog: "json", names.AnnotationTracingSampleRate: "1"},
			wantEnv: map[string]string{envAccessLog: "json", envTracingCollector: collector, envTracingSampleRate: "1"},
		},
		{
			name:    "the pod's over the namespace's",
			ns:      map[string]string{names.AnnotationAccessLog: "json", names.AnnotationProxyLogLevel: "debug"},
			pod:     map[string]string{names.AnnotationAccessLog: "Apache", names.AnnotationTracingCollector: "otel.tracing:4317"},
			wantEnv: map[string]string{envAccessLog: "apache", envLogLevel: "debug", envTracingCollector: "otel.tracing:4317"},
		},
		{
			name:         "a bad pod value leaves the namespace's",
			ns:           map[string]string{names.AnnotationAccessLog: "json"},
			pod:          map[string]string{names.AnnotationAccessLog: "yes"},
			wantEnv:      map[string]string{envAccessLog: "json"},
			wantWarnings: []string{`config.mesh.dev/access-log="yes" is ignored and the default used: unknown format; want apache or json`},
		},
		{
			name:    "a bad namespace value leaves the install's",
			install: map[string]string{names.AnnotationTracingCollector: collector},
			ns:      map[string]string{names.AnnotationTracingCollector: "http://otel:4317", names.AnnotationTracingSampleRate: "2"},
			wantEnv: map[string]string{envTracingCollector: collector, envTracingSampleRate: ""},
			wantWarnings: []string{
				`config.mesh.dev/tracing-collector="http://otel:4317" on namespace shop is ignored and the install's default used: not host:port`,
				`config.mesh.dev/tracing-sample-rate="2" on namespace shop is ignored and the install's default used: not a rate; want a number from 0 to 1`,
			},
		},
		{
			name:         "a bad install value is a warning too",
			install:      map[string]string{names.AnnotationProxyLogLevel: "loud"},
			wantEnv:      map[string]string{envLogLevel: "info"},
			wantWarnings: []string{`config.mesh.dev/proxy-log-level="loud" in the install's defaults (namespace mesh-system) is ignored and the built-in default used`},
		},
		{
			name: "pod-only annotations on a namespace or the install are ignored",
			install: map[string]string{names.AnnotationOpaquePorts: "5432",
				names.AnnotationDefaultInboundPolicy: names.PolicyDeny},
			ns:      map[string]string{names.AnnotationSkipInboundPorts: "22", names.AnnotationInject: names.Enabled},
			wantEnv: map[string]string{envOpaquePorts: ""},
			wantWarnings: []string{
				"annotation config.mesh.dev/skip-inbound-ports on namespace shop is ignored: it is read on pods only; a namespace, and the install, may set access-log, proxy-cpu-limit",
				"annotation config.mesh.dev/default-inbound-policy in the install's defaults (namespace mesh-system) is ignored: it is read on pods only",
				"annotation config.mesh.dev/opaque-ports in the install's defaults (namespace mesh-system) is ignored",
			},
		},
		{
			name:         "a misspelt one on a namespace",
			ns:           map[string]string{names.ConfigPrefix + "acess-log": "json"},
			wantWarnings: []string{`annotation "config.mesh.dev/acess-log" on namespace shop is unknown and ignored; did you mean config.mesh.dev/access-log?`},
		},
		{
			// A namespace's limit gives way to the pod's larger request, as
			// a built-in default does; the install's memory request stays.
			name:          "resources, key by key",
			install:       map[string]string{names.AnnotationProxyMemoryRequest: "32Mi", names.AnnotationProxyCPURequest: "20m"},
			ns:            map[string]string{names.AnnotationProxyCPULimit: "500m", names.AnnotationProxyCPURequest: "100m"},
			pod:           map[string]string{names.AnnotationProxyCPURequest: "1"},
			wantResources: "requests cpu=1 memory=32Mi; limits cpu=1 memory=128Mi",
			wantEnv:       map[string]string{envMaxProcs: "1", envGoMemLimit: "115MiB"},
		},
		{
			name:          "conflicting values of one namespace are both ignored",
			ns:            map[string]string{names.AnnotationProxyMemoryRequest: "256Mi", names.AnnotationProxyMemoryLimit: "64Mi"},
			wantResources: "requests cpu=10m memory=20Mi; limits memory=128Mi",
			wantWarnings:  []string{`annotations config.mesh.dev/proxy-memory-request="256Mi" and config.mesh.dev/proxy-memory-limit="64Mi" on namespace shop are ignored and the defaults used: the request is above the limit`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig
			cfg.Defaults = tc.install
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: tc.ns}}
			ann := map[string]string{names.AnnotationInject: names.Enabled}
			for k, v := range tc.pod {
				ann[k] = v
			}
			pod := newPod(ann)
			res, err := Pod(pod, ns, cfg)
			if err != nil || !res.Injected {
				t.Fatalf("Pod: %v, %+v", err, res)
			}
			if len(res.Warnings) != len(tc.wantWarnings) {
				t.Fatalf("warnings %q, want %d", res.Warnings, len(tc.wantWarnings))
			}
			for i, w := range tc.wantWarnings {
				if !strings.Contains(res.Warnings[i], w) {
					t.Errorf("warning %d: %q, want it to contain %q", i, res.Warnings[i], w)
				}
			}
			env := proxyEnv(t, pod)
			for k, want := range tc.wantEnv {
				if got, ok := env[k]; got != want || ok != (want != "") {
					t.Errorf("%s = %q (set: %v), want %q", k, got, ok, want)
				}
			}
			if tc.wantResources != "" {
				if got := describeResources(pod.Spec.InitContainers[1].Resources); got != tc.wantResources {
					t.Errorf("resources %s, want %s", got, tc.wantResources)
				}
			}
			checkProxyAccepts(t, pod)
		})
	}
}

func describeResources(r corev1.ResourceRequirements) string {
	list := func(l corev1.ResourceList) string {
		var parts []string
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, ok := l[name]; ok {
				parts = append(parts, string(name)+"="+q.String())
			}
		}
		return strings.Join(parts, " ")
	}
	return "requests " + list(r.Requests) + "; limits " + list(r.Limits)
}

// TestCheckDefaults: what `mesh install` and `mesh check` hear about a
// namespace's or the install's defaults is what pods would be warned of.
func TestCheckDefaults(t *testing.T) {
	good := map[string]string{
		names.AnnotationAccessLog: "json", names.AnnotationProxyLogLevel: "debug",
		names.AnnotationTracingCollector: "otel:4317", names.AnnotationTracingSampleRate: "0.5",
		names.AnnotationProxyCPURequest: "50m", names.AnnotationProxyMemoryLimit: "256Mi",
		names.AnnotationInject: names.Disabled, "example.com/other": "x",
	}
	if w := CheckDefaults(good, "mesh-system", true); len(w) != 0 {
		t.Errorf("install defaults %v: warnings %+v, want none", good, w)
	}
	bad := map[string]string{
		names.AnnotationAccessLog:            "xml",
		names.AnnotationDefaultInboundPolicy: names.PolicyDeny,
		names.AnnotationTracingSampleRate:    "1",
	}
	var got []string
	for _, w := range CheckDefaults(bad, "mesh-system", true) {
		got = append(got, w.Annotation)
	}
	if diff := cmp.Diff([]string{names.AnnotationAccessLog, names.AnnotationDefaultInboundPolicy}, got); diff != "" {
		t.Errorf("install: warnings about (-want +got):\n%s", diff)
	}
	// A namespace may also set its default inbound policy.
	got = nil
	for _, w := range CheckDefaults(bad, "shop", false) {
		got = append(got, w.Annotation)
		if !strings.Contains(w.Message, "on namespace shop") {
			t.Errorf("warning %q does not name the namespace", w.Message)
		}
	}
	if diff := cmp.Diff([]string{names.AnnotationAccessLog}, got); diff != "" {
		t.Errorf("namespace: warnings about (-want +got):\n%s", diff)
	}
}

func TestDefaultAnnotations(t *testing.T) {
	got := DefaultAnnotations()
	for _, k := range got {
		if !strings.HasPrefix(k, names.ConfigPrefix) {
			t.Errorf("%s is not a config annotation", k)
		}
		if _, ok := parsers[k]; !ok {
			t.Errorf("%s has no parser", k)
		}
	}
	got[0] = "changed"
	if DefaultAnnotations()[0] == "changed" {
		t.Error("DefaultAnnotations returns the package's own slice")
	}
}

// FuzzLayeredDefaults puts arbitrary values of the default annotations on
// the install, the namespace and the pod. Whatever they say, the pod is
// injected, each warning names one of the keys set, and mesh-proxy
// accepts its environment.
//
//	go test ./install/inject -run '^$' -fuzz FuzzLayeredDefaults -fuzztime 1m
func FuzzLayeredDefaults(f *testing.F) {
	// Arguments: a key index and a value for each of the install, the
	// namespace and the pod.
	f.Add(uint8(0), "json", uint8(6), "otel:4317", uint8(7), "0.5")
	f.Add(uint8(1), "1", uint8(2), "2", uint8(5), "64Mi")     // a limit under the namespace's request
	f.Add(uint8(4), "1Gi", uint8(5), "2Gi", uint8(4), "64Mi") // a pod's limit under the namespace's request
	f.Add(uint8(3), "LOUD", uint8(0), "xml", uint8(6), "[::1]:0")
	f.Add(uint8(7), "NaN", uint8(7), "-0", uint8(7), "1e-320")
	f.Fuzz(func(t *testing.T, ki uint8, install string, kn uint8, ns string, kp uint8, pod string) {
		keys := DefaultAnnotations()
		key := func(i uint8) string { return keys[int(i)%len(keys)] }
		cfg := testConfig
		cfg.Defaults = map[string]string{key(ki): install}
		namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{key(kn): ns}}}
		p := newPod(map[string]string{names.AnnotationInject: names.Enabled, key(kp): pod})
		res, err := Pod(p, namespace, cfg)
		if err != nil || !res.Injected {
			t.Fatalf("Pod: %v, %+v", err, res)
		}
		for _, d := range res.Details {
			if d.Annotation != key(ki) && d.Annotation != key(kn) && d.Annotation != key(kp) &&
				!strings.HasPrefix(d.Annotation, names.ConfigPrefix+"proxy-") {
				t.Errorf("warning about %s, which no layer set: %s", d.Annotation, d.Message)
			}
		}
		checkProxyAccepts(t, p)
	})
}
