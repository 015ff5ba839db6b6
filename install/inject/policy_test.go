package inject

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/proxy"
)

func TestParseDefaultInboundPolicy(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "all-unauthenticated", want: PolicyAllUnauthenticated},
		{in: "all-authenticated", want: PolicyAllAuthenticated},
		{in: "cluster-authenticated", want: PolicyClusterAuthenticated},
		{in: "cluster-unauthenticated", want: PolicyClusterUnauthenticated},
		{in: "deny", want: PolicyDeny},
		{in: "audit", want: PolicyAudit},
		{in: " deny\n", want: PolicyDeny},
		{in: "", wantErr: true},
		{in: "Deny", wantErr: true},
		{in: "allow", wantErr: true},
		{in: "all-unauthenticated,deny", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDefaultInboundPolicy(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrDefaultInboundPolicy) {
					t.Fatalf("ParseDefaultInboundPolicy(%q) = %q, %v; want ErrDefaultInboundPolicy", tc.in, got, err)
				}
				// The error is the whole help: every valid name is in it.
				for _, name := range DefaultInboundPolicies {
					if !strings.Contains(err.Error(), name) {
						t.Errorf("error %q does not list %s", err, name)
					}
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseDefaultInboundPolicy(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
	if DefaultInboundPolicies[0] != DefaultInboundPolicy || len(DefaultInboundPolicies) != 6 {
		t.Errorf("DefaultInboundPolicies = %q: want the six of DESIGN.md, the default first", DefaultInboundPolicies)
	}
}

func TestParseClusterNetworks(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string // formatted back; "" for an error
		wantErr string
	}{
		{name: "default", in: "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fd00::/8", want: "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fd00::/8"},
		{name: "spaces and empty fields", in: " 10.0.0.0/8 ,, fd00::/8,", want: "10.0.0.0/8,fd00::/8"},
		{name: "duplicates once", in: "10.0.0.0/8,10.0.0.0/8", want: "10.0.0.0/8"},
		{name: "one address", in: "192.0.2.1/32", want: "192.0.2.1/32"},
		{name: "host bits", in: "10.1.2.3/8", wantErr: "did you mean 10.0.0.0/8?"},
		{name: "bare address", in: "10.0.0.1", wantErr: `"10.0.0.1" is not a CIDR`},
		{name: "bad length", in: "10.0.0.0/33", wantErr: "not a CIDR"},
		{name: "zone", in: "fe80::%eth0/64", wantErr: "not a CIDR"},
		{name: "empty", in: "", wantErr: "at least one CIDR"},
		{name: "only commas", in: " , ", wantErr: "at least one CIDR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseClusterNetworks(tc.in)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrClusterNetworks) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseClusterNetworks(%q) = %v, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := FormatClusterNetworks(got); s != tc.want {
				t.Errorf("ParseClusterNetworks(%q) formats as %q, want %q", tc.in, s, tc.want)
			}
		})
	}
}

// TestDefaultClusterNetworksAreTheProxys keeps install's default equal to
// what mesh-proxy assumes with no --cluster-networks: a pod injected by a
// controller that passes none must behave as one that passes the default.
func TestDefaultClusterNetworksAreTheProxys(t *testing.T) {
	if diff := cmp.Diff(proxy.DefaultConfig().ClusterNetworks, DefaultClusterNetworks(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("install and proxy defaults differ (-proxy +install):\n%s", diff)
	}
}

// TestProxyPolicyEnv checks what the proxy needs to enforce inbound
// policy: its pod's name from the downward API, and the cluster networks
// of the install, which mesh-proxy parses back to the same list.
func TestProxyPolicyEnv(t *testing.T) {
	tests := []struct {
		name     string
		networks []netip.Prefix
		want     string // MESH_PROXY_CLUSTER_NETWORKS; "" for unset
	}{
		{name: "proxy default", networks: nil},
		{name: "install's", networks: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd12:3456::/32")}, want: "10.42.0.0/16,fd12:3456::/32"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig
			cfg.ClusterNetworks = tc.networks
			pod := newPod(map[string]string{AnnotationInject: Enabled})
			if res, err := Pod(pod, nil, cfg); err != nil || !res.Injected {
				t.Fatalf("Pod: %v, %+v", err, res)
			}
			env := map[string]corev1.EnvVar{}
			for _, e := range pod.Spec.InitContainers[1].Env {
				env[e.Name] = e
			}
			podName := env[envPodName]
			if podName.ValueFrom == nil || podName.ValueFrom.FieldRef == nil || podName.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				t.Errorf("%s = %+v, want the downward API's metadata.name", envPodName, podName)
			}
			got, ok := env[envClusterNetworks]
			if (tc.want != "") != ok || got.Value != tc.want {
				t.Errorf("%s = %q (set: %v), want %q", envClusterNetworks, got.Value, ok, tc.want)
			}
			checkProxyAccepts(t, pod)
		})
	}
}

// TestDefaultInboundPolicyWarnings: a malformed policy on the pod or its
// namespace is a warning naming it, never a blocked pod; a valid one says
// nothing. The annotation stays on the pod for the controller to read.
func TestDefaultInboundPolicyWarnings(t *testing.T) {
	tests := []struct {
		name        string
		pod, ns     string // the annotation's value; "" for none
		wantWarning []string
	}{
		{name: "none"},
		{name: "pod", pod: PolicyDeny},
		{name: "namespace", ns: PolicyAudit},
		{name: "bad on the pod", pod: "deny-all", wantWarning: []string{`config.mesh.dev/default-inbound-policy="deny-all" is ignored`}},
		{name: "bad on the namespace", ns: "Audit", wantWarning: []string{`config.mesh.dev/default-inbound-policy="Audit" on namespace shop is ignored`}},
		{
			name: "bad on both", pod: "open", ns: "closed",
			wantWarning: []string{`default-inbound-policy="open" is ignored`, `default-inbound-policy="closed" on namespace shop`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ann := map[string]string{AnnotationInject: Enabled}
			if tc.pod != "" {
				ann[AnnotationDefaultInboundPolicy] = tc.pod
			}
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
			if tc.ns != "" {
				ns.Annotations = map[string]string{AnnotationDefaultInboundPolicy: tc.ns}
			}
			pod := newPod(ann)
			res, err := Pod(pod, ns, testConfig)
			if err != nil || !res.Injected {
				t.Fatalf("Pod: %v, %+v", err, res)
			}
			if len(res.Details) != len(tc.wantWarning) {
				t.Fatalf("warnings %q, want %d", res.Warnings, len(tc.wantWarning))
			}
			for i, d := range res.Details {
				if d.Annotation != AnnotationDefaultInboundPolicy || !strings.Contains(d.Message, tc.wantWarning[i]) {
					t.Errorf("warning %d about %s: %q, want one containing %q", i, d.Annotation, d.Message, tc.wantWarning[i])
				}
				for _, name := range DefaultInboundPolicies {
					if !strings.Contains(d.Message, name) {
						t.Errorf("warning %q does not list %s", d.Message, name)
					}
				}
			}
			if got := pod.Annotations[AnnotationDefaultInboundPolicy]; got != tc.pod {
				t.Errorf("the pod's annotation became %q, want %q kept", got, tc.pod)
			}
		})
	}
}
