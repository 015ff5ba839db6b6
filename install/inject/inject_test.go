package inject

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/internal/names"
)

// newPod is a pod of one container in namespace "shop" with annotations.
func newPod(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
	}
}

func namespace(name, inject string) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if inject != "" {
		ns.Annotations = map[string]string{names.AnnotationInject: inject}
	}
	return ns
}

func TestPodOptIn(t *testing.T) {
	tests := []struct {
		name        string
		pod         *corev1.Pod
		ns          *corev1.Namespace
		wantSkip    Skip
		wantWarning []string // the annotation of each warning; "" for the pod as a whole
	}{
		{name: "namespace enabled", pod: newPod(nil), ns: namespace("shop", names.Enabled)},
		{name: "pod enabled", pod: newPod(map[string]string{names.AnnotationInject: names.Enabled}), ns: namespace("shop", "")},
		{name: "pod enabled overrides namespace disabled", pod: newPod(map[string]string{names.AnnotationInject: names.Enabled}), ns: namespace("shop", names.Disabled)},
		{name: "nil namespace uses the pod's annotations", pod: newPod(map[string]string{names.AnnotationInject: names.Enabled})},
		{name: "nothing enabled", pod: newPod(nil), ns: namespace("shop", ""), wantSkip: SkipNotEnabled},
		{name: "pod disabled in enabled namespace", pod: newPod(map[string]string{names.AnnotationInject: names.Disabled}), ns: namespace("shop", names.Enabled), wantSkip: SkipDisabled},
		{
			name: "bad pod value falls back to the namespace", pod: newPod(map[string]string{names.AnnotationInject: "true"}),
			ns: namespace("shop", names.Enabled), wantWarning: []string{names.AnnotationInject},
		},
		{
			name: "bad namespace value is not enabled", pod: newPod(nil),
			ns: namespace("shop", "Enabled"), wantSkip: SkipNotEnabled, wantWarning: []string{names.AnnotationInject},
		},
		{name: "kube-system", pod: newPod(nil), ns: namespace("kube-system", names.Enabled), wantSkip: SkipSystemNamespace, wantWarning: []string{""}},
		{name: "control plane, not asked", pod: newPod(nil), ns: namespace("mesh-system", ""), wantSkip: SkipControlPlane},
		{
			name: "control plane, pod asks", pod: newPod(map[string]string{names.AnnotationInject: names.Enabled}),
			ns: namespace("mesh-system", ""), wantSkip: SkipControlPlane, wantWarning: []string{""},
		},
		{
			name: "host network", wantSkip: SkipHostNetwork, wantWarning: []string{""}, ns: namespace("shop", names.Enabled),
			pod: func() *corev1.Pod { p := newPod(nil); p.Spec.HostNetwork = true; return p }(),
		},
		{
			name: "host network, not asked", wantSkip: SkipNotEnabled, ns: namespace("shop", ""),
			pod: func() *corev1.Pod { p := newPod(nil); p.Spec.HostNetwork = true; return p }(),
		},
		{
			name: "windows node", wantSkip: SkipNotLinux, wantWarning: []string{""}, ns: namespace("shop", names.Enabled),
			pod: func() *corev1.Pod {
				p := newPod(nil)
				p.Spec.NodeSelector = map[string]string{"kubernetes.io/os": "windows"}
				return p
			}(),
		},
		{
			name: "linux node selected already", ns: namespace("shop", names.Enabled),
			pod: func() *corev1.Pod {
				p := newPod(nil)
				p.Spec.NodeSelector = map[string]string{"kubernetes.io/os": "linux", "disk": "ssd"}
				return p
			}(),
		},
		{
			name: "already injected: annotation", wantSkip: SkipAlreadyInjected, ns: namespace("shop", names.Enabled),
			pod: newPod(map[string]string{names.AnnotationProxyVersion: "v0.0.9"}),
		},
		{
			name: "already injected: native sidecar", wantSkip: SkipAlreadyInjected, ns: namespace("shop", names.Enabled),
			pod: func() *corev1.Pod {
				p := newPod(nil)
				p.Spec.InitContainers = []corev1.Container{{Name: names.ProxyContainerName}}
				return p
			}(),
		},
		{
			name: "already injected: classic sidecar", wantSkip: SkipAlreadyInjected, ns: namespace("shop", names.Enabled),
			pod: func() *corev1.Pod {
				p := newPod(nil)
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: names.ProxyContainerName})
				return p
			}(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig := tc.pod.DeepCopy()
			res, err := Pod(tc.pod, tc.ns, testConfig)
			if err != nil {
				t.Fatal(err)
			}
			if res.Skip != tc.wantSkip || res.Injected != (tc.wantSkip == SkipNone) {
				t.Errorf("got Injected=%v Skip=%q (%s), want Skip=%q", res.Injected, res.Skip, res.Reason, tc.wantSkip)
			}
			if (res.Reason == "") != res.Injected {
				t.Errorf("Reason %q with Injected=%v", res.Reason, res.Injected)
			}
			var gotWarning []string
			for i, d := range res.Details {
				gotWarning = append(gotWarning, d.Annotation)
				if res.Warnings[i] != d.Message || !strings.Contains(d.Message, names.AnnotationInject) {
					t.Errorf("warning %d: %q (Warnings: %q)", i, d.Message, res.Warnings[i])
				}
			}
			if diff := cmp.Diff(tc.wantWarning, gotWarning); diff != "" {
				t.Errorf("warnings about annotations (-want +got):\n%s\n%q", diff, res.Warnings)
			}
			if !res.Injected {
				if diff := cmp.Diff(orig, tc.pod); diff != "" {
					t.Errorf("a pod not injected was changed (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestPodOverrides checks what each config.mesh.dev/* annotation does to
// the sidecar, and that a bad value leaves the default with a warning.
func TestPodOverrides(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		wantArgs    []string          // of mesh-init
		wantEnv     map[string]string // of mesh-proxy, beyond log format
		wantReq     map[corev1.ResourceName]string
		wantLim     map[corev1.ResourceName]string
		wantWarning []string // annotations warned about
	}{
		{name: "none"},
		{
			name:        "skips normalized",
			annotations: map[string]string{names.AnnotationSkipInboundPorts: " 23, 22 ", names.AnnotationSkipOutboundPorts: "443,442", names.AnnotationSkipOutboundSubnets: "192.168.1.7/16"},
			wantArgs:    []string{"--skip-inbound-ports=22-23", "--skip-outbound-ports=442-443", "--skip-outbound-subnets=192.168.0.0/16"},
		},
		{name: "empty skips add no flag", annotations: map[string]string{names.AnnotationSkipInboundPorts: "", names.AnnotationSkipOutboundSubnets: " , "}},
		{name: "opaque ports", annotations: map[string]string{names.AnnotationOpaquePorts: "3306,25"}, wantEnv: map[string]string{envOpaquePorts: "25,3306"}},
		{name: "empty opaque ports means none", annotations: map[string]string{names.AnnotationOpaquePorts: ""}, wantEnv: map[string]string{envOpaquePorts: ""}},
		{name: "bad opaque ports", annotations: map[string]string{names.AnnotationOpaquePorts: "25,smtp"}, wantWarning: []string{names.AnnotationOpaquePorts}},
		{name: "reversed range", annotations: map[string]string{names.AnnotationSkipOutboundPorts: "10-1"}, wantWarning: []string{names.AnnotationSkipOutboundPorts}},
		{name: "bad subnet", annotations: map[string]string{names.AnnotationSkipOutboundSubnets: "10.0.0.0"}, wantWarning: []string{names.AnnotationSkipOutboundSubnets}},
		{name: "log level", annotations: map[string]string{names.AnnotationProxyLogLevel: "Warn"}, wantEnv: map[string]string{envLogLevel: "warn"}},
		{
			name: "limits",
			annotations: map[string]string{
				names.AnnotationProxyMaxConnections: "500", names.AnnotationProxyMaxConnsPerHost: "0",
				names.AnnotationProxyOpaqueIdleTimeout: "30m", names.AnnotationProxyHTTP1BodyIdleTimeout: " 1m ",
			},
			wantEnv: map[string]string{
				"MESH_PROXY_MAX_CONNECTIONS": "500", "MESH_PROXY_MAX_CONNS_PER_HOST": "0",
				"MESH_PROXY_OPAQUE_IDLE_TIMEOUT": "30m", "MESH_PROXY_HTTP1_BODY_IDLE_TIMEOUT": "1m",
			},
		},
		{name: "negative limit", annotations: map[string]string{names.AnnotationProxyMaxConnections: "-1"}, wantWarning: []string{names.AnnotationProxyMaxConnections}},
		{name: "bad duration", annotations: map[string]string{names.AnnotationProxyOpaqueIdleTimeout: "1 hour"}, wantWarning: []string{names.AnnotationProxyOpaqueIdleTimeout}},
		{name: "bad log level", annotations: map[string]string{names.AnnotationProxyLogLevel: "trace"}, wantWarning: []string{names.AnnotationProxyLogLevel}},
		{
			name:        "resources",
			annotations: map[string]string{names.AnnotationProxyCPURequest: "0.1", names.AnnotationProxyCPULimit: "500m", names.AnnotationProxyMemoryRequest: "32Mi", names.AnnotationProxyMemoryLimit: "1Gi"},
			wantReq:     map[corev1.ResourceName]string{"cpu": "100m", "memory": "32Mi"},
			wantLim:     map[corev1.ResourceName]string{"cpu": "500m", "memory": "1Gi"},
			wantEnv:     map[string]string{envGoMemLimit: "921MiB", envMaxProcs: "1"},
		},
		{
			name:        "CPU limit rounded up to GOMAXPROCS",
			annotations: map[string]string{names.AnnotationProxyCPULimit: "2100m"},
			wantLim:     map[corev1.ResourceName]string{"cpu": "2100m"},
			wantEnv:     map[string]string{envMaxProcs: "3"},
		},
		{
			name:        "max procs over the CPU limit",
			annotations: map[string]string{names.AnnotationProxyCPULimit: "4", names.AnnotationProxyMaxProcs: " 2 "},
			wantLim:     map[corev1.ResourceName]string{"cpu": "4"},
			wantEnv:     map[string]string{envMaxProcs: "2"},
		},
		{
			name:        "max procs 0 leaves it to the proxy",
			annotations: map[string]string{names.AnnotationProxyCPULimit: "4", names.AnnotationProxyMaxProcs: "0"},
			wantLim:     map[corev1.ResourceName]string{"cpu": "4"},
			wantEnv:     map[string]string{envMaxProcs: "0"},
		},
		{
			name:        "max procs without a CPU limit",
			annotations: map[string]string{names.AnnotationProxyMaxProcs: "2"},
			wantEnv:     map[string]string{envMaxProcs: "2"},
		},
		{
			name:        "bad max procs: the CPU limit's",
			annotations: map[string]string{names.AnnotationProxyCPULimit: "1", names.AnnotationProxyMaxProcs: "all"},
			wantLim:     map[corev1.ResourceName]string{"cpu": "1"},
			wantEnv:     map[string]string{envMaxProcs: "1"},
			wantWarning: []string{names.AnnotationProxyMaxProcs},
		},
		{name: "negative max procs", annotations: map[string]string{names.AnnotationProxyMaxProcs: "-2"}, wantWarning: []string{names.AnnotationProxyMaxProcs}},
		{
			name:        "admin profiling",
			annotations: map[string]string{names.AnnotationProxyAdminProfiling: " true "},
			wantEnv:     map[string]string{"MESH_PROXY_ADMIN_PROFILING": "true"},
		},
		{name: "bad admin profiling", annotations: map[string]string{names.AnnotationProxyAdminProfiling: "yes please"}, wantWarning: []string{names.AnnotationProxyAdminProfiling}},
		{
			name:        "request above the default limit raises it",
			annotations: map[string]string{names.AnnotationProxyMemoryRequest: "256Mi"},
			wantReq:     map[corev1.ResourceName]string{"memory": "256Mi"},
			wantLim:     map[corev1.ResourceName]string{"memory": "256Mi"},
			wantEnv:     map[string]string{envGoMemLimit: "230MiB"},
		},
		{
			name:        "limit below the default request lowers it",
			annotations: map[string]string{names.AnnotationProxyMemoryLimit: "16Mi"},
			wantReq:     map[corev1.ResourceName]string{"memory": "16Mi"},
			wantLim:     map[corev1.ResourceName]string{"memory": "16Mi"},
			wantEnv:     map[string]string{envGoMemLimit: "14MiB"},
		},
		{
			name:        "request above annotated limit: both ignored",
			annotations: map[string]string{names.AnnotationProxyCPURequest: "2", names.AnnotationProxyCPULimit: "1"},
			wantWarning: []string{names.AnnotationProxyCPURequest},
		},
		{name: "bad quantity", annotations: map[string]string{names.AnnotationProxyCPURequest: "fast"}, wantWarning: []string{names.AnnotationProxyCPURequest}},
		{name: "zero quantity", annotations: map[string]string{names.AnnotationProxyCPULimit: "0"}, wantWarning: []string{names.AnnotationProxyCPULimit}},
		{name: "fractional bytes", annotations: map[string]string{names.AnnotationProxyMemoryRequest: "100m"}, wantWarning: []string{names.AnnotationProxyMemoryRequest}},
		{name: "unknown key", annotations: map[string]string{names.ConfigPrefix + "sidecar-image": "x"}, wantWarning: []string{names.ConfigPrefix + "sidecar-image"}},
		{name: "misspelt key", annotations: map[string]string{names.ConfigPrefix + "proxy-memroy-limit": "1Gi"}, wantWarning: []string{names.ConfigPrefix + "proxy-memroy-limit"}},
		// The controller reads the policy from the pod: nothing to add, and
		// no warning for a valid one.
		{name: "default inbound policy", annotations: map[string]string{names.AnnotationDefaultInboundPolicy: "deny"}},
		{name: "bad default inbound policy", annotations: map[string]string{names.AnnotationDefaultInboundPolicy: "allow"}, wantWarning: []string{names.AnnotationDefaultInboundPolicy}},
		{name: "other prefixes are not ours", annotations: map[string]string{"mesh.dev/owner": "x", "example.com/config.mesh.dev/x": "y"}},
	}
	defaults := testConfig.withDefaults().ProxyResources
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ann := map[string]string{names.AnnotationInject: names.Enabled}
			for k, v := range tc.annotations {
				ann[k] = v
			}
			pod := newPod(ann)
			res, err := Pod(pod, nil, testConfig)
			if err != nil || !res.Injected {
				t.Fatalf("Pod: %v, %+v", err, res)
			}
			var gotWarning []string
			for _, d := range res.Details {
				gotWarning = append(gotWarning, d.Annotation)
				if !strings.Contains(d.Message, d.Annotation) {
					t.Errorf("warning %q does not name %s", d.Message, d.Annotation)
				}
				_, known := parsers[d.Annotation]
				if v, ok := tc.annotations[d.Annotation]; ok && known && !strings.Contains(d.Message, v) {
					t.Errorf("warning %q does not show the value %q", d.Message, v)
				}
			}
			if diff := cmp.Diff(tc.wantWarning, gotWarning); diff != "" {
				t.Errorf("warnings (-want +got):\n%s\n%q", diff, res.Warnings)
			}
			for k, v := range tc.annotations {
				if pod.Annotations[k] != v {
					t.Errorf("annotation %s=%q became %q: overrides stay on the pod", k, v, pod.Annotations[k])
				}
			}

			initC, proxyC := pod.Spec.InitContainers[0], pod.Spec.InitContainers[1]
			if diff := cmp.Diff(append([]string{"init"}, tc.wantArgs...), initC.Args); diff != "" {
				t.Errorf("mesh-init args (-want +got):\n%s", diff)
			}
			wantEnv := map[string]string{
				envLogLevel: "info", envLogFormat: "json",
				envDestinationAddr: names.DefaultDestinationAddr(names.DefaultControlPlaneNamespace),
				envNamespace:       "",       // from the downward API
				envPodName:         "",       // from the downward API
				envGoMemLimit:      "115MiB", // 90 % of the default limit, 128Mi
				envGoDebug:         proxyGoDebug,
			}
			for k, v := range tc.wantEnv {
				wantEnv[k] = v
			}
			gotEnv := map[string]string{}
			for _, e := range proxyC.Env {
				gotEnv[e.Name] = e.Value
			}
			if diff := cmp.Diff(wantEnv, gotEnv); diff != "" {
				t.Errorf("mesh-proxy env (-want +got):\n%s", diff)
			}
			wantRes := *defaults.DeepCopy()
			for k, v := range tc.wantReq {
				wantRes.Requests[k] = resource.MustParse(v)
			}
			for k, v := range tc.wantLim {
				wantRes.Limits[k] = resource.MustParse(v)
			}
			if diff := cmp.Diff(quantities(wantRes), quantities(proxyC.Resources)); diff != "" {
				t.Errorf("mesh-proxy resources (-want +got):\n%s", diff)
			}
		})
	}
}

// quantities renders resources as strings, which compare by value.
func quantities(r corev1.ResourceRequirements) map[string]string {
	out := map[string]string{}
	for k, v := range r.Requests {
		out["requests."+string(k)] = v.String()
	}
	for k, v := range r.Limits {
		out["limits."+string(k)] = v.String()
	}
	return out
}

func TestPodTemplateSharesPodLogic(t *testing.T) {
	// A Deployment's template: no namespace in its metadata, the
	// workload's namespace passed by the caller.
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec:       newPod(nil).Spec,
	}
	res, err := PodTemplate(&tmpl.ObjectMeta, &tmpl.Spec, namespace("shop", names.Enabled), testConfig)
	if err != nil || !res.Injected {
		t.Fatalf("PodTemplate: %v, %+v", err, res)
	}
	pod := newPod(nil)
	pod.Labels = map[string]string{"app": "web"}
	if _, err := Pod(pod, namespace("shop", names.Enabled), testConfig); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(pod.Spec, tmpl.Spec); diff != "" {
		t.Errorf("template and pod injected differently (-pod +template):\n%s", diff)
	}
	if diff := cmp.Diff(pod.Labels, tmpl.Labels); diff != "" {
		t.Errorf("labels (-pod +template):\n%s", diff)
	}
}

func TestPodConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "no image", cfg: Config{Version: "v1"}},
		{name: "no version", cfg: Config{ProxyImage: "img"}},
		{name: "bad log level", cfg: Config{ProxyImage: "img", Version: "v1", ProxyLogLevel: "loud"}},
		{name: "cluster network with host bits", cfg: Config{ProxyImage: "img", Version: "v1", ClusterNetworks: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}}},
		{name: "zero cluster network", cfg: Config{ProxyImage: "img", Version: "v1", ClusterNetworks: []netip.Prefix{{}}}},
		{
			name: "request above limit",
			cfg: Config{ProxyImage: "img", Version: "v1", ProxyResources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
			}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := newPod(map[string]string{names.AnnotationInject: names.Enabled})
			orig := pod.DeepCopy()
			_, err := Pod(pod, nil, tc.cfg)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("got %v, want ErrConfig", err)
			}
			if diff := cmp.Diff(orig, pod); diff != "" {
				t.Errorf("pod changed on error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigAnnotations(t *testing.T) {
	want := []string{
		names.AnnotationAccessLog, names.AnnotationDefaultInboundPolicy, names.AnnotationOpaquePorts, names.AnnotationProxyAdminProfiling, names.AnnotationProxyCPULimit, names.AnnotationProxyCPURequest, names.AnnotationProxyHTTP1BodyIdleTimeout,
		names.AnnotationProxyLogLevel, names.AnnotationProxyMaxConnections, names.AnnotationProxyMaxConnsPerHost,
		names.AnnotationProxyMaxProcs, names.AnnotationProxyMemoryLimit, names.AnnotationProxyMemoryRequest, names.AnnotationProxyOpaqueIdleTimeout, names.AnnotationSkipInboundPorts,
		names.AnnotationSkipOutboundPorts, names.AnnotationSkipOutboundSubnets,
		names.AnnotationTracingCollector, names.AnnotationTracingSampleRate,
	}
	if diff := cmp.Diff(want, ConfigAnnotations()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestMaxProcs(t *testing.T) {
	tests := []struct {
		name   string
		limits corev1.ResourceList
		want   string // "" for no MESH_PROXY_MAX_PROCS
	}{
		{name: "a tenth of a CPU", limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}, want: "1"},
		{name: "one CPU", limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}, want: "1"},
		{name: "just over one", limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1001m")}, want: "2"},
		{name: "whole CPUs", limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")}, want: "4"},
		{name: "memory limit only", limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
		{name: "no limits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := maxProcs(corev1.ResourceRequirements{Limits: tc.limits})
			if ok != (tc.want != "") || got != tc.want {
				t.Errorf("maxProcs = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}

func TestGoMemLimit(t *testing.T) {
	tests := []struct {
		name   string
		limits corev1.ResourceList
		want   string // "" for no GOMEMLIMIT
	}{
		{name: "64Mi", limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}, want: "57MiB"},
		{name: "the default limit", limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}, want: "115MiB"},
		{name: "decimal units", limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1G")}, want: "858MiB"},
		{name: "under a MiB is in bytes", limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1000Ki")}, want: "921600"},
		{name: "cpu limit only", limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}},
		{name: "no limits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := goMemLimit(corev1.ResourceRequirements{Limits: tc.limits})
			if ok != (tc.want != "") || got != tc.want {
				t.Errorf("goMemLimit = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}
