package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of the policy kinds.
const GroupName = "policy.mesh.dev"

// The kinds of this group.
const (
	KindServer                   = "Server"
	KindMeshTLSAuthentication    = "MeshTLSAuthentication"
	KindNetworkAuthentication    = "NetworkAuthentication"
	KindAuthorizationPolicy      = "AuthorizationPolicy"
	KindHTTPLocalRateLimitPolicy = "HTTPLocalRateLimitPolicy"
	KindHTTPFault                = "HTTPFault"
)

// SchemeGroupVersion is policy.mesh.dev/v1alpha1.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// Resources of the kinds, for dynamic clients and informers.
var (
	ServersResource                    = SchemeGroupVersion.WithResource("servers")
	MeshTLSAuthenticationsResource     = SchemeGroupVersion.WithResource("meshtlsauthentications")
	NetworkAuthenticationsResource     = SchemeGroupVersion.WithResource("networkauthentications")
	AuthorizationPoliciesResource      = SchemeGroupVersion.WithResource("authorizationpolicies")
	HTTPLocalRateLimitPoliciesResource = SchemeGroupVersion.WithResource("httplocalratelimitpolicies")
	HTTPFaultsResource                 = SchemeGroupVersion.WithResource("httpfaults")
)

// Resources are the resources of every kind of the group: the CRDs mesh
// install applies (install/manifests/crds, generated from these types)
// and mesh check looks for.
var Resources = []schema.GroupVersionResource{
	ServersResource,
	MeshTLSAuthenticationsResource,
	NetworkAuthenticationsResource,
	AuthorizationPoliciesResource,
	HTTPLocalRateLimitPoliciesResource,
	HTTPFaultsResource,
}

var (
	// SchemeBuilder registers the kinds with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion,
		&Server{}, &ServerList{},
		&MeshTLSAuthentication{}, &MeshTLSAuthenticationList{},
		&NetworkAuthentication{}, &NetworkAuthenticationList{},
		&AuthorizationPolicy{}, &AuthorizationPolicyList{},
		&HTTPLocalRateLimitPolicy{}, &HTTPLocalRateLimitPolicyList{},
		&HTTPFault{}, &HTTPFaultList{},
	)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
