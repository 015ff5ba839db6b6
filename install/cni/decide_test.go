package cni

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/install/cni/interception"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/ports"
	"github.com/mesh-dev/mesh/proxy/iptables"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// meshedPod is a pod as the injector leaves it, with annotations.
func meshedPod(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Annotations: annotations},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: names.ProxyContainerName}},
			Containers:     []corev1.Container{{Name: "web"}},
		},
	}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name     string
		pod      *corev1.Pod
		wantMesh bool
		want     interception.Settings
		wantErr  string
	}{
		{
			name: "not injected",
			pod:  &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web"}}}},
		},
		{
			name: "host network",
			pod: func() *corev1.Pod {
				p := meshedPod(nil)
				p.Spec.HostNetwork = true
				return p
			}(),
		},
		{
			name: "opted out",
			pod:  meshedPod(map[string]string{names.AnnotationInject: names.Disabled}),
		},
		{
			name:     "proxy as a plain container counts too",
			pod:      &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: names.ProxyContainerName}}}},
			wantMesh: true,
		},
		{
			name:     "injected, no settings: mesh-proxy init's defaults",
			pod:      meshedPod(nil),
			wantMesh: true,
		},
		{
			name: "the injector's annotation",
			pod: meshedPod(map[string]string{interception.Annotation: `{"inboundPort":5143,"proxyUID":3000,
				"skipInboundPorts":"22,9000-9010","skipOutboundSubnets":["192.0.2.7/24"],"fromTheFuture":true}`}),
			wantMesh: true,
			want: interception.Settings{
				InboundPort: 5143, ProxyUID: 3000, SkipInboundPorts: ports.MustParse("22,9000-9010"),
				SkipOutboundSubnets: []netip.Prefix{netip.MustParsePrefix("192.0.2.7/24")},
			},
		},
		{
			name: "the annotation wins over the overrides",
			pod: meshedPod(map[string]string{interception.Annotation: `{}`,
				names.AnnotationSkipInboundPorts: "22"}),
			wantMesh: true,
		},
		{
			name:    "a malformed annotation fails the pod",
			pod:     meshedPod(map[string]string{interception.Annotation: `{"skipInboundPorts":"22-"}`}),
			wantErr: interception.Annotation,
		},
		{
			name:    "an empty subnet fails the pod",
			pod:     meshedPod(map[string]string{interception.Annotation: `{"skipOutboundSubnets":[""]}`}),
			wantErr: "empty subnet",
		},
		{
			name:    "a negative UID fails the pod",
			pod:     meshedPod(map[string]string{interception.Annotation: `{"proxyUID":-1}`}),
			wantErr: "not a UID",
		},
		{
			name: "the config.mesh.dev overrides, as mesh-init's flags",
			pod: meshedPod(map[string]string{
				names.AnnotationSkipInboundPorts:    "22",
				names.AnnotationSkipOutboundPorts:   "25,587",
				names.AnnotationSkipOutboundSubnets: "10.0.0.0/8, fd00::/8",
			}),
			wantMesh: true,
			want: interception.Settings{
				SkipInboundPorts:  ports.MustParse("22"),
				SkipOutboundPorts: ports.MustParse("25,587"),
				SkipOutboundSubnets: []netip.Prefix{
					netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"),
				},
			},
		},
		{
			name: "malformed overrides are ignored, as the injector ignores them",
			pod: meshedPod(map[string]string{
				names.AnnotationSkipInboundPorts:    "ssh",
				names.AnnotationSkipOutboundPorts:   "25",
				names.AnnotationSkipOutboundSubnets: "10.0.0.0/33",
			}),
			wantMesh: true,
			want:     interception.Settings{SkipOutboundPorts: ports.MustParse("25")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decide(tc.pod, discard())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Decide: err %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Mesh != tc.wantMesh {
				t.Fatalf("Mesh = %v (%s), want %v", got.Mesh, got.Reason, tc.wantMesh)
			}
			if got.Reason == "" {
				t.Error("no reason")
			}
			// Compare what reaches iptables: the rules both would install.
			for _, v6 := range []bool{false, true} {
				want, have := iptables.Rules(rulesConfig(tc.want), v6), iptables.Rules(rulesConfig(got.Rules), v6)
				if diff := cmp.Diff(want, have); diff != "" {
					t.Errorf("rules (v6 %v) (-want +got):\n%s", v6, diff)
				}
			}
		})
	}
}

// TestInterceptionRoundTrip: what the injector marshals, the plugin reads
// back as the same rules.
func TestInterceptionRoundTrip(t *testing.T) {
	in := interception.Settings{
		OutboundPort: 5140, AdminPort: 5191, TapPort: 5190,
		SkipInboundPorts: ports.MustParse("22"), SkipOutboundPorts: ports.MustParse("1000-2000"),
		SkipOutboundSubnets: []netip.Prefix{netip.MustParsePrefix("fd00::/8")},
	}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := interception.Parse(string(raw))
	if err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	if diff := cmp.Diff(iptables.Rules(rulesConfig(in), true), iptables.Rules(rulesConfig(got), true)); diff != "" {
		t.Errorf("%s: rules (-want +got):\n%s", raw, diff)
	}
	if raw, _ := json.Marshal(interception.Settings{}); string(raw) != "{}" {
		t.Errorf("the defaults marshal as %s, want {}", raw)
	}
}
