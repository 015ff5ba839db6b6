package policy

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/internal/names"
)

var testTD = spiffeid.RequireTrustDomainFromString("cluster.local")

// testDefaults are the install's: all-unauthenticated, with two cluster
// networks.
func testDefaults(policy string) *defaults {
	if policy == "" {
		policy = names.PolicyAllUnauthenticated
	}
	return &defaults{
		policy:          policy,
		clusterNetworks: networks([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}),
	}
}

// inputs sorts objs into the namespaceInputs of testNS; a Namespace among
// them gives its annotations.
func inputs(t testing.TB, objs []runtime.Object) namespaceInputs {
	t.Helper()
	in := namespaceInputs{name: testNS}
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Namespace:
			in.annotations = o.Annotations
		case *policyv1alpha1.Server:
			in.servers = append(in.servers, o)
		case *policyv1alpha1.AuthorizationPolicy:
			in.policies = append(in.policies, o)
		case *policyv1alpha1.MeshTLSAuthentication:
			in.meshTLS = append(in.meshTLS, o)
		case *policyv1alpha1.NetworkAuthentication:
			in.networks = append(in.networks, o)
		case *policyv1alpha1.HTTPLocalRateLimitPolicy:
			in.rateLimits = append(in.rateLimits, o)
		case *gatewayv1.HTTPRoute:
			in.httpRoutes = append(in.httpRoutes, o)
		case *gatewayv1.GRPCRoute:
			in.grpcRoutes = append(in.grpcRoutes, o)
		default:
			t.Fatalf("inputs: unexpected %T", o)
		}
	}
	return in
}

// resolve computes p's policy from objs, as the server does.
func resolve(t testing.TB, d *defaults, p *corev1.Pod, objs []runtime.Object) (*inboundv1.PodPolicy, []string) {
	t.Helper()
	np, nsWarnings := buildNamespace(inputs(t, objs), testTD)
	pp, podWarnings := d.podPolicy(p, np)
	if pp == nil {
		t.Fatalf("no policy: %v", podWarnings)
	}
	return pp, append(nsWarnings, podWarnings...)
}

// unauthenticated is the policy of a pod under the install default with
// the given ports.
func unauthenticated(ports ...*inboundv1.PortPolicy) *inboundv1.PodPolicy {
	return &inboundv1.PodPolicy{
		Ports:                 ports,
		DefaultPolicy:         names.PolicyAllUnauthenticated,
		DefaultAuthorizations: []*inboundv1.Authorization{allowAll("default:all-unauthenticated")},
	}
}

var ignoreRevision = protocmp.IgnoreFields(&inboundv1.PodPolicy{}, "revision")

// checkWarnings fails unless every one of want is part of some warning,
// and there are no more warnings than want.
func checkWarnings(t *testing.T, got, want []string) {
	t.Helper()
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.Contains(g, w) }) {
			t.Errorf("no warning contains %q; warnings: %q", w, got)
		}
	}
	if len(got) > len(want) {
		t.Errorf("warnings %q, want only %q", got, want)
	}
}

func TestDefaultPolicy(t *testing.T) {
	networks := nets("default:cluster-authenticated", cidr("10.0.0.0/8"), cidr("fd00::/8"))
	tests := []struct {
		name         string
		install      string
		namespace    map[string]string
		pod          []podOption
		want         *inboundv1.PodPolicy
		wantWarnings []string
	}{
		{
			name: "install default",
			want: unauthenticated(),
		},
		{
			name: "all-authenticated", install: names.PolicyAllAuthenticated,
			want: &inboundv1.PodPolicy{DefaultPolicy: "all-authenticated", DefaultAuthorizations: []*inboundv1.Authorization{
				authorization("default:all-authenticated", meshTLS("default:all-authenticated", "*")),
			}},
		},
		{
			name: "cluster-authenticated", install: names.PolicyClusterAuthenticated,
			want: &inboundv1.PodPolicy{DefaultPolicy: "cluster-authenticated", DefaultAuthorizations: []*inboundv1.Authorization{
				authorization("default:cluster-authenticated", networks, meshTLS("default:cluster-authenticated", "*")),
			}},
		},
		{
			name: "cluster-unauthenticated", install: names.PolicyClusterUnauthenticated,
			want: &inboundv1.PodPolicy{DefaultPolicy: "cluster-unauthenticated", DefaultAuthorizations: []*inboundv1.Authorization{
				authorization("default:cluster-unauthenticated", nets("default:cluster-unauthenticated", cidr("10.0.0.0/8"), cidr("fd00::/8"))),
			}},
		},
		{
			name: "deny", install: names.PolicyDeny,
			want: &inboundv1.PodPolicy{DefaultPolicy: "deny"},
		},
		{
			name: "audit", install: names.PolicyAudit,
			want: &inboundv1.PodPolicy{DefaultPolicy: "audit", Audit: true},
		},
		{
			name:      "the namespace's beats the install's",
			install:   names.PolicyAllAuthenticated,
			namespace: map[string]string{names.AnnotationDefaultInboundPolicy: "deny"},
			want:      &inboundv1.PodPolicy{DefaultPolicy: "deny"},
		},
		{
			name:      "the pod's beats the namespace's",
			namespace: map[string]string{names.AnnotationDefaultInboundPolicy: "deny"},
			pod:       []podOption{annotated(names.AnnotationDefaultInboundPolicy, "audit")},
			want:      &inboundv1.PodPolicy{DefaultPolicy: "audit", Audit: true},
		},
		{
			name:         "an invalid pod annotation falls back to the namespace's",
			namespace:    map[string]string{names.AnnotationDefaultInboundPolicy: " deny "},
			pod:          []podOption{annotated(names.AnnotationDefaultInboundPolicy, "allow-all")},
			want:         &inboundv1.PodPolicy{DefaultPolicy: "deny"},
			wantWarnings: []string{`annotation config.mesh.dev/default-inbound-policy is ignored, the default deny applies`},
		},
		{
			name:         "an invalid namespace annotation falls back to the install's",
			install:      names.PolicyDeny,
			namespace:    map[string]string{names.AnnotationDefaultInboundPolicy: "Deny"},
			want:         &inboundv1.PodPolicy{DefaultPolicy: "deny"},
			wantWarnings: []string{"namespace shop: annotation config.mesh.dev/default-inbound-policy is ignored"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, warnings := resolve(t, testDefaults(tc.install), pod("web-0", tc.pod...),
				[]runtime.Object{namespace(testNS, tc.namespace)})
			if diff := cmp.Diff(tc.want, got, protocmp.Transform(), ignoreRevision); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
			checkWarnings(t, warnings, tc.wantWarnings)
		})
	}
}

func TestServers(t *testing.T) {
	web := map[string]string{"app": "web"}
	ns := namespace(testNS, nil)
	allowed := authzPolicy("everyone", toServer("web-http"))
	tests := []struct {
		name         string
		pod          *corev1.Pod
		objs         []runtime.Object
		want         *inboundv1.PodPolicy
		wantWarnings []string
	}{
		{
			name: "a port number, with no policy: denied to all",
			pod:  pod("web-0"),
			objs: []runtime.Object{ns, server("web-http", 0, intstr.FromInt32(8080), policyv1alpha1.ProtocolHTTP1, web)},
			want: unauthenticated(port(8080, "web-http", http1)),
		},
		{
			name: "a port number the pod does not declare still applies",
			pod:  pod("web-0"),
			objs: []runtime.Object{ns, server("redis", 0, intstr.FromInt32(6379), policyv1alpha1.ProtocolOpaque, web)},
			want: unauthenticated(port(6379, "redis", opaque)),
		},
		{
			name: "a port name resolves against the application's containers, not mesh-proxy's",
			pod:  pod("web-0"),
			objs: []runtime.Object{ns, server("web-http", 0, intstr.FromString("http"), "", web), allowed},
			want: unauthenticated(port(8080, "web-http", detect, allowAll("everyone"))),
		},
		{
			name: "a port name of a native sidecar counts",
			pod:  pod("web-0", withSidecar(corev1.Container{Name: "log", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9100}}})),
			objs: []runtime.Object{ns, server("metrics", 0, intstr.FromString("metrics"), policyv1alpha1.ProtocolHTTP1, nil)},
			want: unauthenticated(port(9100, "metrics", http1)),
		},
		{
			name: "a port name no container declares: the Server does not apply",
			pod:  pod("web-0"),
			objs: []runtime.Object{ns, server("admin", 0, intstr.FromString("admin"), "", web)},
			want: unauthenticated(),
		},
		{
			name: "a UDP port of the name does not count",
			pod:  pod("web-0", withContainer(corev1.Container{Name: "dns", Ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}})),
			objs: []runtime.Object{ns, server("dns", 0, intstr.FromString("dns"), "", web)},
			want: unauthenticated(),
		},
		{
			name: "a selector that does not match",
			pod:  pod("web-0"),
			objs: []runtime.Object{ns, server("api", 0, intstr.FromInt32(8080), "", map[string]string{"app": "api"})},
			want: unauthenticated(),
		},
		{
			name: "an empty selector selects every pod; ports are sorted",
			pod:  pod("web-0"),
			objs: []runtime.Object{ns,
				server("b", 0, intstr.FromInt32(9000), policyv1alpha1.ProtocolGRPC, nil),
				server("a", 0, intstr.FromInt32(8080), "", nil),
			},
			want: unauthenticated(port(8080, "a", detect), port(9000, "b", grpcP)),
		},
		{
			name: "a matchExpressions selector",
			pod:  pod("web-0", labelled("tier", "front")),
			objs: []runtime.Object{ns, &policyv1alpha1.Server{ObjectMeta: meta("front", 0), Spec: policyv1alpha1.ServerSpec{
				PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
					Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"front", "edge"},
				}}},
				Port: intstr.FromInt32(8080),
			}}},
			want: unauthenticated(port(8080, "front", detect)),
		},
		{
			name: "two Servers on one port: the older wins, whatever the names",
			pod:  pod("web-0"),
			objs: []runtime.Object{ns,
				server("a-newer", 20, intstr.FromInt32(8080), policyv1alpha1.ProtocolOpaque, web),
				server("z-older", 10, intstr.FromString("http"), policyv1alpha1.ProtocolHTTP1, web),
			},
			want:         unauthenticated(port(8080, "z-older", http1)),
			wantWarnings: []string{"Servers z-older and a-newer both select port 8080; the older, z-older, applies"},
		},
		{
			name: "two Servers of the same age on one port: the first name wins",
			pod:  pod("web-0"),
			objs: []runtime.Object{ns,
				server("b", 10, intstr.FromInt32(8080), policyv1alpha1.ProtocolOpaque, web),
				server("a", 10, intstr.FromInt32(8080), policyv1alpha1.ProtocolHTTP1, web),
			},
			want:         unauthenticated(port(8080, "a", http1)),
			wantWarnings: []string{"Servers a and b both select port 8080"},
		},
		{
			name: "a Server with an invalid selector is ignored",
			pod:  pod("web-0"),
			objs: []runtime.Object{ns, &policyv1alpha1.Server{ObjectMeta: meta("bad", 0), Spec: policyv1alpha1.ServerSpec{
				PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}},
				Port:        intstr.FromInt32(8080),
			}}},
			want:         unauthenticated(),
			wantWarnings: []string{"Server shop/bad is ignored: spec.podSelector"},
		},
		{
			name:         "an unknown protocol is detected",
			pod:          pod("web-0"),
			objs:         []runtime.Object{ns, server("odd", 0, intstr.FromInt32(8080), "SPDY", web)},
			want:         unauthenticated(port(8080, "odd", detect)),
			wantWarnings: []string{`spec.proxyProtocol "SPDY" is unknown`},
		},
		{
			name: "an out-of-range port number selects nothing",
			pod:  pod("web-0"),
			objs: []runtime.Object{ns, server("huge", 0, intstr.FromInt32(70000), "", web)},
			want: unauthenticated(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, warnings := resolve(t, testDefaults(""), tc.pod, tc.objs)
			if diff := cmp.Diff(tc.want, got, protocmp.Transform(), ignoreRevision); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
			checkWarnings(t, warnings, tc.wantWarnings)
		})
	}
}

func TestAuthorizations(t *testing.T) {
	srv := server("web-http", 0, intstr.FromInt32(8080), policyv1alpha1.ProtocolHTTP1, nil)
	ns := namespace(testNS, nil)
	// on is the expected policy of port 8080 with authz.
	on := func(authz ...*inboundv1.Authorization) *inboundv1.PodPolicy {
		return unauthenticated(port(8080, "web-http", http1, authz...))
	}
	tests := []struct {
		name         string
		objs         []runtime.Object
		want         *inboundv1.PodPolicy
		wantWarnings []string
	}{
		{
			name: "no required authentication allows everyone",
			objs: []runtime.Object{authzPolicy("open", toServer("web-http"))},
			want: on(allowAll("open")),
		},
		{
			name: "a policy for another Server does not apply",
			objs: []runtime.Object{authzPolicy("other", toServer("api"))},
			want: on(),
		},
		{
			name: "MeshTLSAuthentication: identities and identityRefs, sorted",
			objs: []runtime.Object{
				authzPolicy("clients", toServer("web-http"), meshTLSRef("clients")),
				meshTLSAuthn("clients",
					[]string{"spiffe://cluster.local/ns/shop/sa/web", "spiffe://other.org/ns/a/*", "*"},
					saIdentity("", "api"), saIdentity("billing", "payments"), saIdentity("ops", "*")),
			},
			want: on(authorization("clients", meshTLS("MeshTLSAuthentication/clients",
				"*",
				"spiffe://cluster.local/ns/billing/sa/payments",
				"spiffe://cluster.local/ns/ops/sa/*",
				"spiffe://cluster.local/ns/shop/sa/api",
				"spiffe://cluster.local/ns/shop/sa/web",
				"spiffe://other.org/ns/a/*",
			))),
		},
		{
			name: "invalid identities are dropped, the rest kept",
			objs: []runtime.Object{
				authzPolicy("clients", toServer("web-http"), meshTLSRef("clients")),
				meshTLSAuthn("clients",
					[]string{"spiffe://cluster.local/ns/shop/sa/web", "http://cluster.local/x", "spiffe://Cluster.local/x", "spiffe://cluster.local/a/**"},
					saIdentity("", "Bad_Name"), policyv1alpha1.IdentityRef{Kind: "User", Name: "bob"}),
			},
			want: on(authorization("clients", meshTLS("MeshTLSAuthentication/clients", "spiffe://cluster.local/ns/shop/sa/web"))),
			wantWarnings: []string{
				`identity "http://cluster.local/x" is ignored`, `identity "spiffe://Cluster.local/x" is ignored`,
				`identity "spiffe://cluster.local/a/**" is ignored`,
				"identityRef ServiceAccount Bad_Name is ignored", "identityRef User bob is ignored",
			},
		},
		{
			name: "a MeshTLSAuthentication without a valid identity makes its policy deny",
			objs: []runtime.Object{
				authzPolicy("clients", toServer("web-http"), meshTLSRef("clients")),
				authzPolicy("open", toServer("web-http")),
				meshTLSAuthn("clients", []string{"not an id"}),
			},
			want:         on(allowAll("open")),
			wantWarnings: []string{`identity "not an id" is ignored`, "AuthorizationPolicy shop/clients is left out and allows nobody: MeshTLSAuthentication shop/clients has no valid identity"},
		},
		{
			name:         "a missing MeshTLSAuthentication makes its policy deny",
			objs:         []runtime.Object{authzPolicy("clients", toServer("web-http"), meshTLSRef("gone"))},
			want:         on(),
			wantWarnings: []string{"AuthorizationPolicy shop/clients is left out and allows nobody: MeshTLSAuthentication shop/gone does not exist"},
		},
		{
			name: "NetworkAuthentication: CIDRs, bare addresses and holes, canonical and sorted",
			objs: []runtime.Object{
				authzPolicy("office", toServer("web-http"), networkRef("office")),
				networkAuthn("office",
					policyv1alpha1.Network{CIDR: "192.168.1.7/16", Except: []string{"192.168.9.0/24", "192.168.2.0/24"}},
					policyv1alpha1.Network{CIDR: "2001:db8::1"},
					policyv1alpha1.Network{CIDR: "10.1.2.3"},
					policyv1alpha1.Network{CIDR: "::ffff:10.9.0.0/112"},
				),
			},
			want: on(authorization("office", nets("NetworkAuthentication/office",
				cidr("10.1.2.3/32"), cidr("10.9.0.0/16"), cidr("192.168.0.0/16", "192.168.2.0/24", "192.168.9.0/24"), cidr("2001:db8::1/128"),
			))),
		},
		{
			name: "a network with a bad except is dropped whole",
			objs: []runtime.Object{
				authzPolicy("office", toServer("web-http"), networkRef("office")),
				networkAuthn("office",
					policyv1alpha1.Network{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16", "fd00::/8"}},
					policyv1alpha1.Network{CIDR: "172.16.0.0/12", Except: []string{"172.16.0.0/33"}},
					policyv1alpha1.Network{CIDR: "192.168.0.0/16"},
				),
			},
			want: on(authorization("office", nets("NetworkAuthentication/office", cidr("192.168.0.0/16")))),
			wantWarnings: []string{
				`network "10.0.0.0/8" is ignored: except fd00::/8 is not of the address family`,
				`network "172.16.0.0/12" is ignored: except:`,
			},
		},
		{
			name: "a NetworkAuthentication without a valid network makes its policy deny",
			objs: []runtime.Object{
				authzPolicy("office", toServer("web-http"), networkRef("office")),
				networkAuthn("office", policyv1alpha1.Network{CIDR: "10.0.0.300/8"}),
			},
			want:         on(),
			wantWarnings: []string{`network "10.0.0.300/8" is ignored`, "NetworkAuthentication shop/office has no valid network"},
		},
		{
			name: "a ServiceAccount, in the policy's namespace by default",
			objs: []runtime.Object{
				authzPolicy("sa", toServer("web-http"), serviceAccountRef("", "api"), serviceAccountRef("billing", "payments")),
			},
			want: on(authorization("sa",
				meshTLS("ServiceAccount/billing/payments", "spiffe://cluster.local/ns/billing/sa/payments"),
				meshTLS("ServiceAccount/shop/api", "spiffe://cluster.local/ns/shop/sa/api"),
			)),
		},
		{
			name:         "a ServiceAccount named * is not a ServiceAccount",
			objs:         []runtime.Object{authzPolicy("sa", toServer("web-http"), serviceAccountRef("", "*"))},
			want:         on(),
			wantWarnings: []string{"AuthorizationPolicy shop/sa is left out and allows nobody: requiredAuthenticationRefs: ServiceAccount shop/*"},
		},
		{
			name: "every required authentication, networks and mesh TLS, and a duplicate once",
			objs: []runtime.Object{
				authzPolicy("both", toServer("web-http"), networkRef("office"), meshTLSRef("clients"), networkRef("office")),
				networkAuthn("office", policyv1alpha1.Network{CIDR: "10.0.0.0/8"}),
				meshTLSAuthn("clients", []string{"*"}),
			},
			want: on(authorization("both",
				meshTLS("MeshTLSAuthentication/clients", "*"),
				nets("NetworkAuthentication/office", cidr("10.0.0.0/8")),
			)),
		},
		{
			name: "an unknown kind of authentication makes its policy deny",
			objs: []runtime.Object{authzPolicy("jwt", toServer("web-http"),
				policyv1alpha1.AuthenticationRef{Group: policyv1alpha1.GroupName, Kind: "JWTAuthentication", Name: "x"})},
			want:         on(),
			wantWarnings: []string{"AuthorizationPolicy shop/jwt is left out and allows nobody: requiredAuthenticationRefs: JWTAuthentication.policy.mesh.dev x is not"},
		},
		{
			name: "the wrong group makes its policy deny",
			objs: []runtime.Object{authzPolicy("wrong", toServer("web-http"),
				policyv1alpha1.AuthenticationRef{Group: "policy.linkerd.io", Kind: policyv1alpha1.KindMeshTLSAuthentication, Name: "x"})},
			want:         on(),
			wantWarnings: []string{"AuthorizationPolicy shop/wrong is left out"},
		},
		{
			name: "a namespace on a MeshTLSAuthentication ref makes its policy deny",
			objs: []runtime.Object{
				authzPolicy("cross", toServer("web-http"), policyv1alpha1.AuthenticationRef{
					Group: policyv1alpha1.GroupName, Kind: policyv1alpha1.KindMeshTLSAuthentication, Name: "clients", Namespace: "other",
				}),
				meshTLSAuthn("clients", []string{"*"}),
			},
			want:         on(),
			wantWarnings: []string{"requiredAuthenticationRefs: MeshTLSAuthentication.policy.mesh.dev clients has a namespace, which only a ServiceAccount may have"},
		},
		{
			name: "a namespace target applies to every Server; all sorted by name",
			objs: []runtime.Object{
				authzPolicy("z-server", toServer("web-http")),
				authzPolicy("a-namespace", toNamespace(testNS)),
			},
			want: on(allowAll("a-namespace"), allowAll("z-server")),
		},
		{
			name:         "another namespace as target is ignored",
			objs:         []runtime.Object{authzPolicy("other", toNamespace("billing"))},
			want:         on(),
			wantWarnings: []string{"AuthorizationPolicy shop/other is ignored: its targetRef is Namespace billing"},
		},
		{
			name:         "a target of another kind is ignored",
			objs:         []runtime.Object{authzPolicy("svc", policyv1alpha1.TargetRef{Kind: "Service", Name: "web"})},
			want:         on(),
			wantWarnings: []string{"AuthorizationPolicy shop/svc is ignored: its targetRef Service is neither"},
		},
		{
			name:         "a route that is attached to no Server allows nothing",
			objs:         []runtime.Object{authzPolicy("route", policyv1alpha1.TargetRef{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Name: "web"})},
			want:         on(),
			wantWarnings: []string{"AuthorizationPolicy shop/route allows nothing: HTTPRoute web is attached to no Server"},
		},
		{
			name: "groups may be left out, as in Linkerd's manifests",
			objs: []runtime.Object{
				authzPolicy("nogroup", policyv1alpha1.TargetRef{Kind: policyv1alpha1.KindServer, Name: "web-http"},
					policyv1alpha1.AuthenticationRef{Kind: policyv1alpha1.KindMeshTLSAuthentication, Name: "clients"},
					policyv1alpha1.AuthenticationRef{Kind: policyv1alpha1.KindNetworkAuthentication, Name: "office"}),
				meshTLSAuthn("clients", []string{"*"}),
				networkAuthn("office", policyv1alpha1.Network{CIDR: "10.0.0.0/8"}),
			},
			want: on(authorization("nogroup",
				meshTLS("MeshTLSAuthentication/clients", "*"),
				nets("NetworkAuthentication/office", cidr("10.0.0.0/8")),
			)),
		},
		{
			name:         "a Server of another group is not ours",
			objs:         []runtime.Object{authzPolicy("linkerd", policyv1alpha1.TargetRef{Group: "policy.linkerd.io", Kind: policyv1alpha1.KindServer, Name: "web-http"})},
			want:         on(),
			wantWarnings: []string{"AuthorizationPolicy shop/linkerd is ignored: its targetRef Server.policy.linkerd.io is neither"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, warnings := resolve(t, testDefaults(""), pod("web-0"), append([]runtime.Object{ns, srv}, tc.objs...))
			if diff := cmp.Diff(tc.want, got, protocmp.Transform(), ignoreRevision); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
			checkWarnings(t, warnings, tc.wantWarnings)
		})
	}
}

func TestProbes(t *testing.T) {
	probe := func(h corev1.ProbeHandler) *corev1.Probe { return &corev1.Probe{ProbeHandler: h} }
	httpGet := func(path string, port intstr.IntOrString) corev1.ProbeHandler {
		return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: port}}
	}
	app := corev1.Container{
		Name:           "app",
		Ports:          []corev1.ContainerPort{{Name: "web", ContainerPort: 8080}, {Name: "grpc", ContainerPort: 9090}},
		ReadinessProbe: probe(httpGet("/ready", intstr.FromString("web"))),
		LivenessProbe:  probe(httpGet("", intstr.FromInt32(8080))),
		StartupProbe:   probe(corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9090}}),
	}
	other := corev1.Container{
		Name: "other",
		// Another container's port of the same name is not this one's.
		Ports:          []corev1.ContainerPort{{Name: "web", ContainerPort: 7070}},
		ReadinessProbe: probe(httpGet("/ready", intstr.FromString("web"))),
		// The same probe as app's, once in the list.
		LivenessProbe: probe(httpGet("/", intstr.FromInt32(8080))),
		StartupProbe:  probe(httpGet("healthz?full=1", intstr.FromString("8081"))),
	}
	ignored := corev1.Container{
		Name:           "ignored",
		ReadinessProbe: probe(corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(5432)}}),
		LivenessProbe:  probe(corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}),
		StartupProbe:   probe(httpGet("/x", intstr.FromString("nope"))),
	}
	sidecar := corev1.Container{Name: "envoy", ReadinessProbe: probe(httpGet("/ready", intstr.FromInt32(15021)))}
	p := pod("web-0", func(p *corev1.Pod) { p.Spec.Containers = []corev1.Container{app, other, ignored} }, withSidecar(sidecar))
	got, _ := resolve(t, testDefaults(""), p, nil)
	// mesh-proxy's own readiness probe (admin port 4191) is not listed.
	want := []*inboundv1.Probe{
		{Port: 7070, Path: "/ready"},
		{Port: 8080, Path: "/"},
		{Port: 8080, Path: "/ready"},
		{Port: 8081, Path: "/healthz?full=1"},
		{Port: 9090, Path: GRPCHealthCheckPath},
		{Port: 15021, Path: "/ready"},
	}
	if diff := cmp.Diff(want, got.GetProbes(), protocmp.Transform()); diff != "" {
		t.Errorf("probes (-want +got):\n%s", diff)
	}
}

// TestRevision: the revision depends on the policy only, not on the order
// the caches list objects in, and changes with it.
func TestRevision(t *testing.T) {
	objs := []runtime.Object{
		namespace(testNS, nil),
		server("a", 1, intstr.FromInt32(8080), "", nil),
		server("b", 2, intstr.FromInt32(9090), policyv1alpha1.ProtocolGRPC, nil),
		authzPolicy("p1", toServer("a"), meshTLSRef("m"), networkRef("n")),
		authzPolicy("p2", toNamespace(testNS), serviceAccountRef("", "api")),
		authzPolicy("p3", toServer("b")),
		meshTLSAuthn("m", []string{"spiffe://cluster.local/ns/x/sa/y", "*"}, saIdentity("", "api")),
		networkAuthn("n", policyv1alpha1.Network{CIDR: "10.0.0.0/8"}, policyv1alpha1.Network{CIDR: "192.168.0.0/16"}),
	}
	first, _ := resolve(t, testDefaults(""), pod("web-0"), objs)
	if len(first.GetRevision()) != 16 {
		t.Errorf("revision %q, want 16 hex digits", first.GetRevision())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		shuffled := slices.Clone(objs)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got, _ := resolve(t, testDefaults(""), pod("web-0"), shuffled)
		if got.GetRevision() != first.GetRevision() {
			t.Fatalf("revision %s of a shuffled input, want %s", got.GetRevision(), first.GetRevision())
		}
	}
	changed, _ := resolve(t, testDefaults(names.PolicyDeny), pod("web-0"), objs)
	if changed.GetRevision() == first.GetRevision() {
		t.Errorf("revision %s unchanged with another default policy", changed.GetRevision())
	}
}

func FuzzIdentityPattern(f *testing.F) {
	for _, s := range []string{
		"*",                                     // any identity of the trust domain
		"spiffe://cluster.local/ns/shop/sa/web", // an exact ID
		"spiffe://cluster.local/ns/shop/sa/*",   // a path prefix
		"spiffe://cluster.local",                // a trust domain's own ID
		"spiffe://cluster.local/*",              // everything in it
		"spiffe://cluster.local//x",             // an empty segment
		"spiffe://Cluster.local/x",              // upper case trust domain
		"spiffe://cluster.local/a/**",           // not a wildcard
		"spiffe://cluster.local/a/%41",          // percent encoding
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := identityPattern(s)
		if err != nil {
			return
		}
		// What is accepted is canonical: accepted again unchanged.
		again, err := identityPattern(p)
		if err != nil || again != p {
			t.Fatalf("identityPattern(%q) = %q, whose own pattern is %q, %v", s, p, again, err)
		}
		if p != "*" {
			if _, err := spiffeid.FromString(strings.TrimSuffix(p, "/*")); err != nil {
				t.Fatalf("identityPattern(%q) = %q, not a SPIFFE ID: %v", s, p, err)
			}
		}
	})
}

func FuzzNetwork(f *testing.F) {
	for _, s := range [][2]string{
		{"10.0.0.0/8", "10.1.0.0/16"}, // a hole
		{"10.1.2.3", ""},              // a bare address
		{"::ffff:10.0.0.0/104", ""},   // IPv4-mapped
		{"fd00::/8", "10.0.0.0/8"},    // families differ
		{"10.0.0.0/33", ""},           // too long
		{"fe80::1%eth0", ""},          // a zone
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, c, except string) {
		w := policyv1alpha1.Network{CIDR: c}
		if except != "" {
			w.Except = []string{except}
		}
		n, err := network(w)
		if err != nil {
			return
		}
		// Every prefix handed to a proxy is canonical and of one family.
		p, err := netip.ParsePrefix(n.GetCidr())
		if err != nil || p != p.Masked() || p.String() != n.GetCidr() {
			t.Fatalf("network(%q) cidr %q is not canonical", c, n.GetCidr())
		}
		for _, e := range n.GetExcept() {
			q, err := netip.ParsePrefix(e)
			if err != nil || q != q.Masked() || q.String() != e || q.Addr().Is4() != p.Addr().Is4() {
				t.Fatalf("network(%q, %q) except %q is not canonical or of another family", c, except, e)
			}
		}
	})
}
