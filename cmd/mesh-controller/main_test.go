package main

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/controller"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestFlagsToConfig(t *testing.T) {
	defaults := controller.DefaultConfig()
	withImage := func(mod func(*controller.Config)) controller.Config {
		c := defaults
		c.ProxyImage = "proxy:v1"
		if mod != nil {
			mod(&c)
		}
		return c
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    controller.Config
		wantErr string
	}{
		{name: "defaults", args: []string{"--proxy-image=proxy:v1"}, want: withImage(nil)},
		{
			name: "every flag",
			args: []string{
				"--proxy-image=proxy:v1", "--namespace=mesh", "--version=v9", "--kubeconfig=/k",
				"--webhook-addr=:1", "--webhook-tls-dir=/tls", "--admin-addr=:2", "--log-level=debug", "--log-format=text",
				"--default-inbound-policy=deny", "--cluster-networks=10.42.0.0/16,fd00:10::/64",
			},
			want: withImage(func(c *controller.Config) {
				c.Namespace, c.Version, c.Kubeconfig = "mesh", "v9", "/k"
				c.WebhookAddr, c.WebhookTLSDir, c.AdminAddr = ":1", "/tls", ":2"
				c.LogLevel, c.LogFormat = slog.LevelDebug, "text"
				c.DefaultInboundPolicy = "deny"
				c.ClusterNetworks = []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd00:10::/64")}
			}),
		},
		{
			name: "policy flags from the environment", args: []string{"--proxy-image=proxy:v1"},
			env: map[string]string{
				"MESH_CONTROLLER_DEFAULT_INBOUND_POLICY": "audit", "MESH_CONTROLLER_CLUSTER_NETWORKS": "192.168.0.0/16",
			},
			want: withImage(func(c *controller.Config) {
				c.DefaultInboundPolicy = "audit"
				c.ClusterNetworks = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}
			}),
		},
		{name: "bad cluster networks", args: []string{"--cluster-networks=10.0.0.1/8"}, wantErr: "cluster-networks"},
		{
			name: "POD_NAMESPACE is the default namespace", args: []string{"--proxy-image=proxy:v1"},
			env:  map[string]string{"POD_NAMESPACE": "mesh-a"},
			want: withImage(func(c *controller.Config) { c.Namespace = "mesh-a" }),
		},
		{
			name: "MESH_CONTROLLER_ variables beat POD_NAMESPACE, flags beat both", args: []string{"--admin-addr=:3"},
			env: map[string]string{
				"POD_NAMESPACE": "mesh-a", "MESH_CONTROLLER_NAMESPACE": "mesh-b",
				"MESH_CONTROLLER_PROXY_IMAGE": "proxy:v1", "MESH_CONTROLLER_ADMIN_ADDR": ":4",
			},
			want: withImage(func(c *controller.Config) { c.Namespace, c.AdminAddr = "mesh-b", ":3" }),
		},
		{name: "bad variable", env: map[string]string{"MESH_CONTROLLER_LOG_LEVEL": "loud"}, wantErr: "MESH_CONTROLLER_LOG_LEVEL"},
		{name: "bad flag", args: []string{"--log-level=loud"}, wantErr: "log-level"},
		{name: "arguments", args: []string{"serve"}, wantErr: "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got *controller.Config
			run := func(_ context.Context, c controller.Config) error { got = &c; return nil }
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			runViz := func(context.Context, controller.VizConfig) error { t.Error("viz ran"); return nil }
			cmd := newRootCmd(lookup, run, runViz)
			cmd.SetArgs(tc.args)
			cmd.SetOut(io.Discard)
			err := cmd.ExecuteContext(t.Context())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, *got, cmp.AllowUnexported(controller.Config{}),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVizFlagsToConfig(t *testing.T) {
	defaults := controller.DefaultVizConfig()
	with := func(mod func(*controller.VizConfig)) controller.VizConfig {
		c := defaults
		mod(&c)
		return c
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    controller.VizConfig
		wantErr string
	}{
		{name: "defaults", args: []string{"viz"}, want: defaults},
		{
			name: "flags", args: []string{"viz", "--namespace=mesh", "--viz-addr=127.0.0.1:9", "--tap-addr=", "--trust-domain=example.org"},
			want: with(func(c *controller.VizConfig) {
				c.Namespace, c.Addr, c.TapAddr, c.TrustDomain = "mesh", "127.0.0.1:9", "", "example.org"
			}),
		},
		{
			name: "POD_NAMESPACE and MESH_CONTROLLER_ variables", args: []string{"viz"},
			env:  map[string]string{"POD_NAMESPACE": "mesh-a", "MESH_CONTROLLER_ADMIN_ADDR": ":4"},
			want: with(func(c *controller.VizConfig) { c.Namespace, c.AdminAddr = "mesh-a", ":4" }),
		},
		// The controller's flags are not viz's.
		{name: "a controller flag", args: []string{"viz", "--proxy-image=proxy:v1"}, wantErr: "unknown flag: --proxy-image"},
		{name: "arguments", args: []string{"viz", "extra"}, wantErr: "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got *controller.VizConfig
			run := func(context.Context, controller.Config) error { t.Error("the controller ran"); return nil }
			runViz := func(_ context.Context, c controller.VizConfig) error { got = &c; return nil }
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			cmd := newRootCmd(lookup, run, runViz)
			cmd.SetArgs(tc.args)
			cmd.SetOut(io.Discard)
			err := cmd.ExecuteContext(t.Context())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, *got, cmp.AllowUnexported(controller.VizConfig{})); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}
