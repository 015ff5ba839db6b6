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
		ns.Annotations = map[string]string{AnnotationInject: inject}
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
		{name: "namespace enabled", pod: newPod(nil), ns: namespace("shop", Enabled)},
		{name: "pod enabled", pod: newPod(map[string]string{AnnotationInject: Enabled}), ns: namespace("shop", "")},
		{name: "pod enabled overrides namespace disabled", pod: newPod(map[string]string{AnnotationInject: Enabled}), ns: namespace("shop", Disabled)},
		{name: "nil namespace uses the pod's annotations", pod: newPod(map[string]string{AnnotationInject: Enabled})},
		{name: "nothing enabled", pod: newPod(nil), ns: namespace("shop", ""), wantSkip: SkipNotEnabled},
		{name: "pod disabled in enabled namespace", pod: newPod(map[string]string{AnnotationInject: Disabled}), ns: namespace("shop", Enabled), wantSkip: SkipDisabled},
		{
			name: "bad pod value falls back to the namespace", pod: newPod(map[string]string{AnnotationInject: "true"}),
			ns: namespace("shop", Enabled), wantWarning: []string{AnnotationInject},
		},
		{
			name: "bad namespace value is not enabled", pod: newPod(nil),
			ns: namespace("shop", "Enabled"), wantSkip: SkipNotEnabled, wantWarning: []string{AnnotationInject},
		},
		{name: "kube-system", pod: newPod(nil), ns: namespace("kube-system", Enabled), wantSkip: SkipSystemNamespace, wantWarning: []string{""}},
		{name: "control plane, not asked", pod: newPod(nil), ns: namespace("mesh-system", ""), wantSkip: SkipControlPlane},
		{
			name: "control plane, pod asks", pod: newPod(map[string]string{AnnotationInject: Enabled}),
			ns: namespace("mesh-system", ""), wantSkip: SkipControlPlane, wantWarning: []string{""},
		},
		{
			name: "host network", wantSkip: SkipHostNetwork, wantWarning: []string{""}, ns: namespace("shop", Enabled),
			pod: func() *corev1.Pod { p := newPod(nil); p.Spec.HostNetwork = true; return p }(),
		},
		{
			name: "host network, not asked", wantSkip: SkipNotEnabled, ns: namespace("shop", ""),
			pod: func() *corev1.Pod { p := newPod(nil); p.Spec.HostNetwork = true; return p }(),
		},
		{
			name: "already injected: annotation", wantSkip: SkipAlreadyInjected, ns: namespace("shop", Enabled),
			pod: newPod(map[string]string{AnnotationProxyVersion: "v0.0.9"}),
		},
		{
			name: "already injected: native sidecar", wantSkip: SkipAlreadyInjected, ns: namespace("shop", Enabled),
			pod: func() *corev1.Pod {
				p := newPod(nil)
				p.Spec.InitContainers = []corev1.Container{{Name: ProxyContainerName}}
				return p
			}(),
		},
		{
			name: "already injected: classic sidecar", wantSkip: SkipAlreadyInjected, ns: namespace("shop", Enabled),
			pod: func() *corev1.Pod {
				p := newPod(nil)
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: ProxyContainerName})
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
				if res.Warnings[i] != d.Message || !strings.Contains(d.Message, AnnotationInject) {
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
			annotations: map[string]string{AnnotationSkipInboundPorts: " 23, 22 ", AnnotationSkipOutboundPorts: "443,442", AnnotationSkipOutboundSubnets: "192.168.1.7/16"},
			wantArgs:    []string{"--skip-inbound-ports=22-23", "--skip-outbound-ports=442-443", "--skip-outbound-subnets=192.168.0.0/16"},
		},
		{name: "empty skips add no flag", annotations: map[string]string{AnnotationSkipInboundPorts: "", AnnotationSkipOutboundSubnets: " , "}},
		{name: "opaque ports", annotations: map[string]string{AnnotationOpaquePorts: "3306,25"}, wantEnv: map[string]string{envOpaquePorts: "25,3306"}},
		{name: "empty opaque ports means none", annotations: map[string]string{AnnotationOpaquePorts: ""}, wantEnv: map[string]string{envOpaquePorts: ""}},
		{name: "bad opaque ports", annotations: map[string]string{AnnotationOpaquePorts: "25,smtp"}, wantWarning: []string{AnnotationOpaquePorts}},
		{name: "reversed range", annotations: map[string]string{AnnotationSkipOutboundPorts: "10-1"}, wantWarning: []string{AnnotationSkipOutboundPorts}},
		{name: "bad subnet", annotations: map[string]string{AnnotationSkipOutboundSubnets: "10.0.0.0"}, wantWarning: []string{AnnotationSkipOutboundSubnets}},
		{name: "log level", annotations: map[string]string{AnnotationProxyLogLevel: "Warn"}, wantEnv: map[string]string{envLogLevel: "warn"}},
		{
			name: "limits",
			annotations: map[string]string{
				AnnotationProxyMaxConnections: "500", AnnotationProxyMaxConnsPerHost: "0",
				AnnotationProxyOpaqueIdleTimeout: "30m", AnnotationProxyHTTP1BodyIdleTimeout: " 1m ",
			},
			wantEnv: map[string]string{
				"MESH_PROXY_MAX_CONNECTIONS": "500", "MESH_PROXY_MAX_CONNS_PER_HOST": "0",
				"MESH_PROXY_OPAQUE_IDLE_TIMEOUT": "30m", "MESH_PROXY_HTTP1_BODY_IDLE_TIMEOUT": "1m",
			},
		},
		{name: "negative limit", annotations: map[string]string{AnnotationProxyMaxConnections: "-1"}, wantWarning: []string{AnnotationProxyMaxConnections}},
		{name: "bad duration", annotations: map[string]string{AnnotationProxyOpaqueIdleTimeout: "1 hour"}, wantWarning: []string{AnnotationProxyOpaqueIdleTimeout}},
		{name: "bad log level", annotations: map[string]string{AnnotationProxyLogLevel: "trace"}, wantWarning: []string{AnnotationProxyLogLevel}},
		{
			name:        "resources",
			annotations: map[string]string{AnnotationProxyCPURequest: "0.1", AnnotationProxyCPULimit: "500m", AnnotationProxyMemoryRequest: "32Mi", AnnotationProxyMemoryLimit: "1Gi"},
			wantReq:     map[corev1.ResourceName]string{"cpu": "100m", "memory": "32Mi"},
			wantLim:     map[corev1.ResourceName]string{"cpu": "500m", "memory": "1Gi"},
			wantEnv:     map[string]string{envGoMemLimit: "921MiB"},
		},
		{
			name:        "request above the default limit raises it",
			annotations: map[string]string{AnnotationProxyMemoryRequest: "256Mi"},
			wantReq:     map[corev1.ResourceName]string{"memory": "256Mi"},
			wantLim:     map[corev1.ResourceName]string{"memory": "256Mi"},
			wantEnv:     map[string]string{envGoMemLimit: "230MiB"},
		},
		{
			name:        "limit below the default request lowers it",
			annotations: map[string]string{AnnotationProxyMemoryLimit: "16Mi"},
			wantReq:     map[corev1.ResourceName]string{"memory": "16Mi"},
			wantLim:     map[corev1.ResourceName]string{"memory": "16Mi"},
			wantEnv:     map[string]string{envGoMemLimit: "14MiB"},
		},
		{
			name:        "request above annotated limit: both ignored",
			annotations: map[string]string{AnnotationProxyCPURequest: "2", AnnotationProxyCPULimit: "1"},
			wantWarning: []string{AnnotationProxyCPURequest},
		},
		{name: "bad quantity", annotations: map[string]string{AnnotationProxyCPURequest: "fast"}, wantWarning: []string{AnnotationProxyCPURequest}},
		{name: "zero quantity", annotations: map[string]string{AnnotationProxyCPULimit: "0"}, wantWarning: []string{AnnotationProxyCPULimit}},
		{name: "fractional bytes", annotations: map[string]string{AnnotationProxyMemoryRequest: "100m"}, wantWarning: []string{AnnotationProxyMemoryRequest}},
		{name: "unknown key", annotations: map[string]string{ConfigPrefix + "sidecar-image": "x"}, wantWarning: []string{ConfigPrefix + "sidecar-image"}},
		{name: "misspelt key", annotations: map[string]string{ConfigPrefix + "proxy-memroy-limit": "1Gi"}, wantWarning: []string{ConfigPrefix + "proxy-memroy-limit"}},
		// The controller reads the policy from the pod: nothing to add, and
		// no warning for a valid one.
		{name: "default inbound policy", annotations: map[string]string{AnnotationDefaultInboundPolicy: "deny"}},
		{name: "bad default inbound policy", annotations: map[string]string{AnnotationDefaultInboundPolicy: "allow"}, wantWarning: []string{AnnotationDefaultInboundPolicy}},
		{name: "other prefixes are not ours", annotations: map[string]string{"mesh.dev/owner": "x", "example.com/config.mesh.dev/x": "y"}},
	}
	defaults := testConfig.withDefaults().ProxyResources
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ann := map[string]string{AnnotationInject: Enabled}
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
				envDestinationAddr: DefaultDestinationAddr(DefaultControlPlaneNamespace),
				envNamespace:       "",      // from the downward API
				envPodName:         "",      // from the downward API
				envGoMemLimit:      "57MiB", // 90 % of the default limit, 64Mi
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
	res, err := PodTemplate(&tmpl.ObjectMeta, &tmpl.Spec, namespace("shop", Enabled), testConfig)
	if err != nil || !res.Injected {
		t.Fatalf("PodTemplate: %v, %+v", err, res)
	}
	pod := newPod(nil)
	pod.Labels = map[string]string{"app": "web"}
	if _, err := Pod(pod, namespace("shop", Enabled), testConfig); err != nil {
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
			pod := newPod(map[string]string{AnnotationInject: Enabled})
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
		AnnotationDefaultInboundPolicy, AnnotationOpaquePorts, AnnotationProxyCPULimit, AnnotationProxyCPURequest, AnnotationProxyHTTP1BodyIdleTimeout,
		AnnotationProxyLogLevel, AnnotationProxyMaxConnections, AnnotationProxyMaxConnsPerHost,
		AnnotationProxyMemoryLimit, AnnotationProxyMemoryRequest, AnnotationProxyOpaqueIdleTimeout, AnnotationSkipInboundPorts,
		AnnotationSkipOutboundPorts, AnnotationSkipOutboundSubnets,
	}
	if diff := cmp.Diff(want, ConfigAnnotations()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestGoMemLimit(t *testing.T) {
	tests := []struct {
		name   string
		limits corev1.ResourceList
		want   string // "" for no GOMEMLIMIT
	}{
		{name: "default limit", limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}, want: "57MiB"},
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
