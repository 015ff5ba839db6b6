package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// HTTPLocalRateLimitPolicy limits the HTTP requests a Server's pods accept,
// each pod's proxy on its own (local: the limits are per pod, not shared
// across replicas). Requests past a limit get 429 Too Many Requests with
// Retry-After (gRPC: RESOURCE_EXHAUSTED) and never reach the application.
// The limits apply after authorization, to the requests the policy
// allows; kubelet probes are never limited.
//
// A Server takes one HTTPLocalRateLimitPolicy: of several that target it,
// the oldest applies and the others are not accepted (Conflicted).
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=mesh;policy
// +kubebuilder:printcolumn:name="Server",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Total RPS",type=integer,JSONPath=`.spec.total.requestsPerSecond`
// +kubebuilder:printcolumn:name="Identity RPS",type=integer,JSONPath=`.spec.identity.requestsPerSecond`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type HTTPLocalRateLimitPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec HTTPLocalRateLimitPolicySpec `json:"spec"`
	// +optional
	Status HTTPLocalRateLimitPolicyStatus `json:"status,omitempty"`
}

// HTTPLocalRateLimitPolicySpec is what is limited, and how much. A request
// must pass every limit that applies to its client: total, and either the
// first override that names the client or, failing one, identity. One
// refused by any limit counts against none.
// +kubebuilder:validation:XValidation:rule="has(self.total) || has(self.identity) || (has(self.overrides) && size(self.overrides) > 0)",message="at least one of total, identity and overrides must be given"
// +kubebuilder:validation:XValidation:rule="!has(self.total) || !has(self.identity) || self.identity.requestsPerSecond <= self.total.requestsPerSecond",message="identity.requestsPerSecond may not exceed total.requestsPerSecond"
// +kubebuilder:validation:XValidation:rule="!has(self.total) || !has(self.overrides) || self.overrides.all(o, o.requestsPerSecond <= self.total.requestsPerSecond)",message="an override's requestsPerSecond may not exceed total.requestsPerSecond"
type HTTPLocalRateLimitPolicySpec struct {
	// TargetRef is the Server, in this namespace, whose requests are
	// limited.
	TargetRef ServerRef `json:"targetRef"`
	// Total limits all the Server's requests together, whoever sends them.
	// +optional
	Total *RateLimit `json:"total,omitempty"`
	// Identity limits the requests of each client identity apart: each
	// SPIFFE ID proven over mesh TLS has this limit of its own, and all
	// clients without one (plain text) share one.
	// +optional
	Identity *RateLimit `json:"identity,omitempty"`
	// Overrides replace Identity for the clients they name; a client
	// named by several gets the first.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Overrides []RateLimitOverride `json:"overrides,omitempty"`
}

// RateLimit is a rate of requests. Up to a second's worth may come at
// once, after a second without any: the limit is a generic cell rate
// algorithm (GCRA) with a burst of RequestsPerSecond.
type RateLimit struct {
	// RequestsPerSecond is the sustained rate allowed, at least 1.
	// +kubebuilder:validation:Minimum=1
	RequestsPerSecond int32 `json:"requestsPerSecond"`
}

// RateLimitOverride is the limit of some named clients, which they share:
// the requests of all the clients an override names count against one
// limit.
// +kubebuilder:validation:XValidation:rule="(has(self.clientRefs) && size(self.clientRefs) > 0) || (has(self.identities) && size(self.identities) > 0)",message="at least one of clientRefs and identities must be given"
type RateLimitOverride struct {
	// RequestsPerSecond is the sustained rate allowed, at least 1.
	// +kubebuilder:validation:Minimum=1
	RequestsPerSecond int32 `json:"requestsPerSecond"`
	// ClientRefs name ServiceAccounts (kind ServiceAccount, a name or "*"
	// for every ServiceAccount of the namespace, and a namespace, default
	// this object's) whose identities the override applies to.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	ClientRefs []IdentityRef `json:"clientRefs,omitempty"`
	// Identities are SPIFFE IDs the override applies to, as in a
	// MeshTLSAuthentication: an exact ID, "*" for every identity of the
	// mesh's trust domain, or an ID ending in "/*" for every ID under it.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:items:XValidation:rule="self == '*' || self.matches('^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*(/[*])?$')",message="must be \"*\" or a SPIFFE ID such as spiffe://cluster.local/ns/shop/sa/web, optionally ending in /*"
	Identities []string `json:"identities,omitempty"`
}

// ServerRef names a Server of the referring object's namespace.
type ServerRef struct {
	// Group is policy.mesh.dev; it may be left out.
	// +optional
	// +kubebuilder:validation:Enum="";policy.mesh.dev
	Group string `json:"group,omitempty"`
	// Kind is Server.
	// +kubebuilder:validation:Enum=Server
	Kind string `json:"kind"`
	// Name of the Server.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// HTTPLocalRateLimitPolicyStatus is what mesh-controller made of the
// policy.
type HTTPLocalRateLimitPolicyStatus struct {
	// Conditions: Accepted, True when the policy applies to its Server,
	// False with the reason it does not (RateLimitReason...).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// The Accepted condition of an HTTPLocalRateLimitPolicy and its reasons,
// named as the Gateway API names a policy's (GEP-713).
const (
	RateLimitConditionAccepted = "Accepted"

	// RateLimitReasonAccepted: the policy applies to its Server.
	RateLimitReasonAccepted = "Accepted"
	// RateLimitReasonTargetNotFound: no Server of targetRef's name exists
	// in the policy's namespace.
	RateLimitReasonTargetNotFound = "TargetNotFound"
	// RateLimitReasonConflicted: an older HTTPLocalRateLimitPolicy
	// targets the same Server and applies instead.
	RateLimitReasonConflicted = "Conflicted"
	// RateLimitReasonInvalid: the policy cannot be applied as written
	// (a value the CRD's rules should have refused).
	RateLimitReasonInvalid = "Invalid"
)

// HTTPLocalRateLimitPolicyList is a list of HTTPLocalRateLimitPolicies.
// +kubebuilder:object:root=true
type HTTPLocalRateLimitPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HTTPLocalRateLimitPolicy `json:"items"`
}
