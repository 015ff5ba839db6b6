package policy

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/internal/names"
)

// Builders of the objects the tests use. Policy objects are in testNS
// unless an option moves them; creation times are the epoch plus age
// seconds, so tests can order them.

const testNS = "shop"

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func meta(name string, age int) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: testNS, Name: name, CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Second))}
}

func server(name string, age int, port intstr.IntOrString, proto policyv1alpha1.ProxyProtocol, match map[string]string) *policyv1alpha1.Server {
	return &policyv1alpha1.Server{
		TypeMeta:   metav1.TypeMeta{APIVersion: policyv1alpha1.SchemeGroupVersion.String(), Kind: policyv1alpha1.KindServer},
		ObjectMeta: meta(name, age),
		Spec: policyv1alpha1.ServerSpec{
			PodSelector:   metav1.LabelSelector{MatchLabels: match},
			Port:          port,
			ProxyProtocol: proto,
		},
	}
}

func toServer(name string) policyv1alpha1.TargetRef {
	return policyv1alpha1.TargetRef{Group: policyv1alpha1.GroupName, Kind: policyv1alpha1.KindServer, Name: name}
}

func toNamespace(name string) policyv1alpha1.TargetRef {
	return policyv1alpha1.TargetRef{Kind: "Namespace", Name: name}
}

func authzPolicy(name string, target policyv1alpha1.TargetRef, refs ...policyv1alpha1.AuthenticationRef) *policyv1alpha1.AuthorizationPolicy {
	return &policyv1alpha1.AuthorizationPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: policyv1alpha1.SchemeGroupVersion.String(), Kind: policyv1alpha1.KindAuthorizationPolicy},
		ObjectMeta: meta(name, 0),
		Spec:       policyv1alpha1.AuthorizationPolicySpec{TargetRef: target, RequiredAuthenticationRefs: refs},
	}
}

func meshTLSRef(name string) policyv1alpha1.AuthenticationRef {
	return policyv1alpha1.AuthenticationRef{Group: policyv1alpha1.GroupName, Kind: policyv1alpha1.KindMeshTLSAuthentication, Name: name}
}

func networkRef(name string) policyv1alpha1.AuthenticationRef {
	return policyv1alpha1.AuthenticationRef{Group: policyv1alpha1.GroupName, Kind: policyv1alpha1.KindNetworkAuthentication, Name: name}
}

func serviceAccountRef(ns, name string) policyv1alpha1.AuthenticationRef {
	return policyv1alpha1.AuthenticationRef{Kind: "ServiceAccount", Name: name, Namespace: ns}
}

func meshTLSAuthn(name string, identities []string, refs ...policyv1alpha1.IdentityRef) *policyv1alpha1.MeshTLSAuthentication {
	return &policyv1alpha1.MeshTLSAuthentication{
		TypeMeta:   metav1.TypeMeta{APIVersion: policyv1alpha1.SchemeGroupVersion.String(), Kind: policyv1alpha1.KindMeshTLSAuthentication},
		ObjectMeta: meta(name, 0),
		Spec:       policyv1alpha1.MeshTLSAuthenticationSpec{Identities: identities, IdentityRefs: refs},
	}
}

func saIdentity(ns, name string) policyv1alpha1.IdentityRef {
	return policyv1alpha1.IdentityRef{Kind: "ServiceAccount", Name: name, Namespace: ns}
}

func networkAuthn(name string, nets ...policyv1alpha1.Network) *policyv1alpha1.NetworkAuthentication {
	return &policyv1alpha1.NetworkAuthentication{
		TypeMeta:   metav1.TypeMeta{APIVersion: policyv1alpha1.SchemeGroupVersion.String(), Kind: policyv1alpha1.KindNetworkAuthentication},
		ObjectMeta: meta(name, 0),
		Spec:       policyv1alpha1.NetworkAuthenticationSpec{Networks: nets},
	}
}

type podOption func(*corev1.Pod)

// pod is a meshed pod of testNS labelled app=web, with one container "web"
// whose port 8080 is named http; mesh-proxy and mesh-init are there as the
// injector adds them, with ports and probes of their own.
func pod(name string, opts ...podOption) *corev1.Pod {
	always := corev1.ContainerRestartPolicyAlways
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   testNS,
			Name:        name,
			Labels:      map[string]string{"app": "web"},
			Annotations: map[string]string{names.AnnotationProxyVersion: "v0.1.0"},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web",
			InitContainers: []corev1.Container{
				{Name: names.InitContainerName, Image: "mesh-proxy"},
				{
					Name: names.ProxyContainerName, Image: "mesh-proxy", RestartPolicy: &always,
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 4143}, {Name: "admin", ContainerPort: 4191}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
						HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("admin")},
					}},
				},
			},
			Containers: []corev1.Container{{
				Name:  "web",
				Image: "nginx",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func labelled(k, v string) podOption {
	return func(p *corev1.Pod) { p.Labels[k] = v }
}

func annotated(k, v string) podOption {
	return func(p *corev1.Pod) { p.Annotations[k] = v }
}

func withContainer(c corev1.Container) podOption {
	return func(p *corev1.Pod) { p.Spec.Containers = append(p.Spec.Containers, c) }
}

func withSidecar(c corev1.Container) podOption {
	always := corev1.ContainerRestartPolicyAlways
	c.RestartPolicy = &always
	return func(p *corev1.Pod) { p.Spec.InitContainers = append(p.Spec.InitContainers, c) }
}

func namespace(name string, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
}

// Expected messages.

func allowAll(name string) *inboundv1.Authorization {
	return &inboundv1.Authorization{Name: name}
}

func meshTLS(name string, patterns ...string) *inboundv1.Authentication {
	return &inboundv1.Authentication{Name: name, Kind: &inboundv1.Authentication_MeshTls{MeshTls: &inboundv1.Identities{Patterns: patterns}}}
}

func nets(name string, networks ...*inboundv1.Network) *inboundv1.Authentication {
	return &inboundv1.Authentication{Name: name, Kind: &inboundv1.Authentication_Networks{Networks: &inboundv1.Networks{Networks: networks}}}
}

func cidr(c string, except ...string) *inboundv1.Network {
	return &inboundv1.Network{Cidr: c, Except: except}
}

func authorization(name string, required ...*inboundv1.Authentication) *inboundv1.Authorization {
	return &inboundv1.Authorization{Name: name, Required: required}
}

func port(n uint32, server string, proto inboundv1.ProxyProtocol, authz ...*inboundv1.Authorization) *inboundv1.PortPolicy {
	return &inboundv1.PortPolicy{Port: n, Server: server, Protocol: proto, Authorizations: authz}
}

const (
	detect = inboundv1.ProxyProtocol_PROXY_PROTOCOL_UNKNOWN
	http1  = inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP1
	grpcP  = inboundv1.ProxyProtocol_PROXY_PROTOCOL_GRPC
	opaque = inboundv1.ProxyProtocol_PROXY_PROTOCOL_OPAQUE
)

// rateLimitPolicy targets Server server; total and identity of 0 are
// left out.
func rateLimitPolicy(name string, age int, server string, total, identity int32, overrides ...policyv1alpha1.RateLimitOverride) *policyv1alpha1.HTTPLocalRateLimitPolicy {
	p := &policyv1alpha1.HTTPLocalRateLimitPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: policyv1alpha1.SchemeGroupVersion.String(), Kind: policyv1alpha1.KindHTTPLocalRateLimitPolicy},
		ObjectMeta: meta(name, age),
		Spec: policyv1alpha1.HTTPLocalRateLimitPolicySpec{
			TargetRef: policyv1alpha1.ServerRef{Group: policyv1alpha1.GroupName, Kind: policyv1alpha1.KindServer, Name: server},
			Overrides: overrides,
		},
	}
	if total != 0 {
		p.Spec.Total = &policyv1alpha1.RateLimit{RequestsPerSecond: total}
	}
	if identity != 0 {
		p.Spec.Identity = &policyv1alpha1.RateLimit{RequestsPerSecond: identity}
	}
	return p
}
