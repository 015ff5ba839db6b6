package main

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"

	"github.com/mesh-dev/mesh/bench/internal/kubelab"
	"github.com/mesh-dev/mesh/internal/names"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
		check   func(config) bool
	}{
		{name: "defaults are the issue's figures", check: func(c config) bool {
			return len(c.Rates) == 2 && c.Rates[0] == 200 && c.Rates[1] == 500 && c.Duration == time.Minute &&
				c.meshedNamespace() == "mesh-cost-meshed" && c.plainNamespace() == "mesh-cost-plain"
		}},
		{name: "rates and length", args: []string{"--rates", "100,1000", "--duration", "30s", "--warmup", "5s", "--slice", "5s"}, check: func(c config) bool {
			return len(c.Rates) == 2 && c.Rates[1] == 1000 && c.Duration == 30*time.Second && c.Warmup == 5*time.Second && c.Slice == 5*time.Second
		}},
		{name: "no warm-up", args: []string{"--warmup", "0s"}, check: func(c config) bool { return c.Warmup == 0 }},
		{name: "write", args: []string{"--write", "docs/benchmarks.md"}, check: func(c config) bool {
			return c.Write == "docs/benchmarks.md" && len(c.Args) == 2
		}},
		{name: "no rate", args: []string{"--rates", ""}, wantErr: "--rates"},
		{name: "zero rate", args: []string{"--rates", "0,500"}, wantErr: "more than 0"},
		{name: "a rate twice", args: []string{"--rates", "500,500"}, wantErr: "twice"},
		{name: "too short", args: []string{"--duration", "5s"}, wantErr: "--duration 5s: want whole turns"},
		{name: "part of a turn", args: []string{"--duration", "65s"}, wantErr: "--duration 1m5s: want whole turns"},
		{name: "warm-up in part of a turn", args: []string{"--warmup", "15s"}, wantErr: "--warmup 15s: want whole turns"},
		{name: "too short a turn", args: []string{"--slice", "100ms"}, wantErr: "--slice"},
		{name: "a turn without a request", args: []string{"--rates", "0.04", "--slice", "10s"}, wantErr: "holds no request"},
		{name: "no idle window", args: []string{"--idle", "0s"}, wantErr: "--idle"},
		{name: "no connection", args: []string{"--conns", "0"}, wantErr: "--conns"},
		{name: "the control plane's namespace", args: []string{"--namespace", "mesh", "--mesh-namespace", "mesh-plain"}, wantErr: "control plane's"},
		{name: "too long a namespace", args: []string{"--namespace", strings.Repeat("n", 60)}, wantErr: "63 characters"},
		{name: "stray argument", args: []string{"now"}, wantErr: "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseFlags(%q) error %v, want one containing %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tc.args, err)
			}
			if !tc.check(c) {
				t.Errorf("parseFlags(%q) = %+v", tc.args, c)
			}
		})
	}
}

// TestNewPair checks the two sides differ only in the injection
// annotation, and that the Service selects the server alone.
func TestNewPair(t *testing.T) {
	meshed, plain := newPair("cost-meshed", "v9.9.9", true), newPair("cost-plain", "v9.9.9", false)
	if got := meshed.ns.Annotations[names.AnnotationInject]; got != names.Enabled {
		t.Errorf("meshed namespace annotation %s=%q, want %q", names.AnnotationInject, got, names.Enabled)
	}
	if _, ok := plain.ns.Annotations[names.AnnotationInject]; ok {
		t.Errorf("plain namespace annotated %v", plain.ns.Annotations)
	}
	for _, p := range []pair{meshed, plain} {
		if p.ns.Labels[namespaceLabel] != "true" {
			t.Errorf("namespace %s labels %v: want the run's label", p.ns.Name, p.ns.Labels)
		}
		for _, d := range []struct {
			app  string
			spec *corev1.PodSpec
			ns   string
			sel  map[string]string
			tmpl map[string]string
		}{
			{clientApp, &p.client.Spec.Template.Spec, p.client.Namespace, p.client.Spec.Selector.MatchLabels, p.client.Spec.Template.Labels},
			{serverApp, &p.server.Spec.Template.Spec, p.server.Namespace, p.server.Spec.Selector.MatchLabels, p.server.Spec.Template.Labels},
		} {
			c := d.spec.Containers[0]
			if d.ns != p.ns.Name || c.Name != d.app || c.Image != demoImage+":v9.9.9" {
				t.Errorf("%s/%s: container %s runs %s; want %s in %s at the run's version", d.ns, d.app, c.Name, c.Image, d.app, p.ns.Name)
			}
			if strings.Join(c.Args, " ") != "echo --admin-addr " {
				t.Errorf("%s runs %q, want demo echo without its probe server", d.app, c.Args)
			}
			if c.SecurityContext.RunAsUser == nil || *c.SecurityContext.RunAsUser == int64(names.ProxyUID) {
				t.Errorf("%s runs as %v: the proxy's UID skips interception", d.app, c.SecurityContext.RunAsUser)
			}
			if d.sel[kubelab.NameLabel] != d.app || d.tmpl[kubelab.NameLabel] != d.app {
				t.Errorf("%s: selector %v, template labels %v", d.app, d.sel, d.tmpl)
			}
		}
		svc := p.svc
		if svc.Namespace != p.ns.Name || svc.Spec.Selector[kubelab.NameLabel] != serverApp || len(svc.Spec.Selector) != 1 {
			t.Errorf("service %s/%s selects %v, want the server alone", svc.Namespace, svc.Name, svc.Spec.Selector)
		}
		if port := svc.Spec.Ports[0]; port.Port != serverPort || port.TargetPort.StrVal != p.server.Spec.Template.Spec.Containers[0].Ports[0].Name {
			t.Errorf("service port %+v does not lead to the server's port", port)
		}
	}
}
