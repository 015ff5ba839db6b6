package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ProxyProtocol is how the proxy treats a Server's port.
// +kubebuilder:validation:Enum=unknown;HTTP/1;HTTP/2;gRPC;opaque;TLS
type ProxyProtocol string

// The protocols a Server may declare.
const (
	ProtocolUnknown ProxyProtocol = "unknown" // detect, as on any port
	ProtocolHTTP1   ProxyProtocol = "HTTP/1"
	ProtocolHTTP2   ProxyProtocol = "HTTP/2"
	ProtocolGRPC    ProxyProtocol = "gRPC"
	ProtocolOpaque  ProxyProtocol = "opaque" // bytes as they come, no detection
	ProtocolTLS     ProxyProtocol = "TLS"    // the application's own TLS, passed through
)

// Server selects one port of a set of pods in its namespace, so that
// AuthorizationPolicies can name it. A port a Server selects is denied to
// everyone no AuthorizationPolicy allows.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=mesh;policy,shortName=srv
// +kubebuilder:printcolumn:name="Port",type=string,JSONPath=`.spec.port`
// +kubebuilder:printcolumn:name="Protocol",type=string,JSONPath=`.spec.proxyProtocol`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Server struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ServerSpec `json:"spec"`
}

// ServerSpec is what a Server selects.
type ServerSpec struct {
	// PodSelector selects the pods, in the Server's namespace, whose port
	// this is. An empty selector selects every pod of the namespace.
	PodSelector metav1.LabelSelector `json:"podSelector"`
	// Port is a container port number (1-65535) or the name of a
	// container port (an IANA service name, at most 15 characters).
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self >= 1 && self <= 65535) : self.matches('^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$')",message="port must be a number from 1 to 65535 or a container port name (lower-case letters, digits and '-', at most 15 characters)"
	Port intstr.IntOrString `json:"port"`
	// ProxyProtocol is what the port speaks; unknown means detect it.
	// +kubebuilder:default=unknown
	// +optional
	ProxyProtocol ProxyProtocol `json:"proxyProtocol,omitempty"`
}

// ServerList is a list of Servers.
// +kubebuilder:object:root=true
type ServerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Server `json:"items"`
}

// MeshTLSAuthentication matches clients that proved, over mesh TLS, one of
// the identities it lists.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=mesh;policy,shortName=meshtlsauthn
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshTLSAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec MeshTLSAuthenticationSpec `json:"spec"`
}

// MeshTLSAuthenticationSpec lists identities; a client matches when it
// proved any of them.
// +kubebuilder:validation:XValidation:rule="(has(self.identities) && size(self.identities) > 0) || (has(self.identityRefs) && size(self.identityRefs) > 0)",message="at least one of identities and identityRefs must be given"
type MeshTLSAuthenticationSpec struct {
	// Identities are SPIFFE IDs (spiffe://<trust-domain>/ns/<ns>/sa/<sa>);
	// "*" matches any identity of the mesh's trust domain, and an ID
	// ending in "/*" matches every ID under that path.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:items:XValidation:rule="self == '*' || self.matches('^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*(/[*])?$')",message="must be \"*\" or a SPIFFE ID such as spiffe://cluster.local/ns/shop/sa/web, optionally ending in /*"
	Identities []string `json:"identities,omitempty"`
	// IdentityRefs name ServiceAccounts (kind ServiceAccount, a name or "*"
	// for every ServiceAccount of the namespace, and a namespace, default
	// this object's) whose identities match.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	IdentityRefs []IdentityRef `json:"identityRefs,omitempty"`
}

// IdentityRef names a ServiceAccount, or all of a namespace's.
type IdentityRef struct {
	// Group is "" (core).
	// +optional
	// +kubebuilder:validation:Enum=""
	Group string `json:"group,omitempty"`
	// Kind is ServiceAccount.
	// +kubebuilder:validation:Enum=ServiceAccount
	Kind string `json:"kind"`
	// Name of the ServiceAccount, or "*" for every one of the namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == '*' || self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",message="must be a ServiceAccount name or \"*\""
	Name string `json:"name"`
	// Namespace of the ServiceAccount; default the referring object's.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`
}

// MeshTLSAuthenticationList is a list of MeshTLSAuthentications.
// +kubebuilder:object:root=true
type MeshTLSAuthenticationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshTLSAuthentication `json:"items"`
}

// NetworkAuthentication matches clients by the source address of their
// connection.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=mesh;policy,shortName=netauthn
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NetworkAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec NetworkAuthenticationSpec `json:"spec"`
}

// NetworkAuthenticationSpec lists networks; a client matches when its
// address is in any of them.
type NetworkAuthenticationSpec struct {
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	Networks []Network `json:"networks"`
}

// Network is a CIDR with holes.
// +kubebuilder:validation:XValidation:rule="!has(self.except) || self.except.all(e, cidr(e).ip().family() == cidr(self.cidr).ip().family())",message="except must be of the same address family as cidr"
type Network struct {
	// CIDR is an IPv4 or IPv6 prefix, like 10.0.0.0/8 or fd00::/8; a bare
	// address means just it.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) || isIP(self)",message="must be a CIDR such as 10.0.0.0/8 or an IP address"
	CIDR string `json:"cidr"`
	// Except are prefixes inside CIDR that do not match.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="must be a CIDR such as 10.1.0.0/16"
	Except []string `json:"except,omitempty"`
}

// NetworkAuthenticationList is a list of NetworkAuthentications.
// +kubebuilder:object:root=true
type NetworkAuthenticationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NetworkAuthentication `json:"items"`
}

// AuthorizationPolicy allows traffic to its target from clients that match
// every authentication it requires.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=mesh;policy,shortName=authzpolicy
// +kubebuilder:printcolumn:name="Target Kind",type=string,JSONPath=`.spec.targetRef.kind`
// +kubebuilder:printcolumn:name="Target Name",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AuthorizationPolicySpec `json:"spec"`
}

// AuthorizationPolicySpec names what is allowed, and for whom.
type AuthorizationPolicySpec struct {
	// TargetRef is a Server of this namespace, or this Namespace itself,
	// meaning every Server in it, or an HTTPRoute or GRPCRoute of this
	// namespace attached to a Server (an inbound route), meaning the
	// requests that match it.
	TargetRef TargetRef `json:"targetRef"`
	// RequiredAuthenticationRefs must all match a client for it to be
	// allowed: MeshTLSAuthentications and NetworkAuthentications (group
	// policy.mesh.dev) of this namespace, or ServiceAccounts (group "",
	// with a namespace, default this one). Empty allows every client.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	RequiredAuthenticationRefs []AuthenticationRef `json:"requiredAuthenticationRefs"`
}

// TargetRef names what a policy applies to.
// +kubebuilder:validation:XValidation:rule="(self.kind == 'Server' && (!has(self.group) || self.group == 'policy.mesh.dev')) || (self.kind == 'Namespace' && (!has(self.group) || size(self.group) == 0)) || ((self.kind == 'HTTPRoute' || self.kind == 'GRPCRoute') && (!has(self.group) || self.group == 'gateway.networking.k8s.io'))",message="targetRef must be a Server (group policy.mesh.dev), a Namespace (group \"\" or none), or an HTTPRoute or GRPCRoute (group gateway.networking.k8s.io)"
type TargetRef struct {
	// Group is policy.mesh.dev for a Server, "" for a Namespace,
	// gateway.networking.k8s.io for an HTTPRoute or GRPCRoute. It may be
	// left out (as Linkerd's manifests do): the kind says which.
	// +optional
	Group string `json:"group,omitempty"`
	// Kind is Server, Namespace, HTTPRoute or GRPCRoute.
	// +kubebuilder:validation:Enum=Server;Namespace;HTTPRoute;GRPCRoute
	Kind string `json:"kind"`
	// Name of the Server, of the policy's own Namespace, or of the route.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// AuthenticationRef names an authentication a policy requires.
// +kubebuilder:validation:XValidation:rule="((!has(self.group) || self.group == 'policy.mesh.dev') && (self.kind == 'MeshTLSAuthentication' || self.kind == 'NetworkAuthentication')) || ((!has(self.group) || size(self.group) == 0) && self.kind == 'ServiceAccount')",message="must be a MeshTLSAuthentication or NetworkAuthentication (group policy.mesh.dev) or a ServiceAccount (group \"\")"
// +kubebuilder:validation:XValidation:rule="!has(self.namespace) || self.kind == 'ServiceAccount'",message="namespace may only be given for a ServiceAccount"
type AuthenticationRef struct {
	// Group is policy.mesh.dev, or "" for a ServiceAccount. It may be
	// left out: the kind says which.
	// +optional
	Group string `json:"group,omitempty"`
	// Kind is MeshTLSAuthentication, NetworkAuthentication or ServiceAccount.
	// +kubebuilder:validation:Enum=MeshTLSAuthentication;NetworkAuthentication;ServiceAccount
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Namespace of a ServiceAccount; default the policy's.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`
}

// AuthorizationPolicyList is a list of AuthorizationPolicies.
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthorizationPolicy `json:"items"`
}
