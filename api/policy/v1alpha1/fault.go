package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// HTTPFault injects faults into the requests of an HTTPRoute rule that
// names it in a filter of type ExtensionRef (group policy.mesh.dev, kind
// HTTPFault): a share of them is answered at once with an error status,
// and a share delayed before it is sent on. The client's proxy applies it
// (docs/traffic.md 3.7), so the delay and the errors show in its metrics
// as they would for a slow or failing server.
//
// It has no status of its own: it applies to nothing by itself, and the
// routes that name it say in theirs whether the reference resolved.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=mesh;policy
// +kubebuilder:printcolumn:name="Abort %",type=integer,JSONPath=`.spec.abort.percent`
// +kubebuilder:printcolumn:name="Abort Status",type=integer,JSONPath=`.spec.abort.httpStatus`
// +kubebuilder:printcolumn:name="Delay %",type=integer,JSONPath=`.spec.delay.percent`
// +kubebuilder:printcolumn:name="Delay",type=string,JSONPath=`.spec.delay.duration`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type HTTPFault struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec HTTPFaultSpec `json:"spec"`
}

// HTTPFaultSpec is the faults to inject: an abort, a delay, or both.
// +kubebuilder:validation:XValidation:rule="has(self.abort) || has(self.delay)",message="at least one of abort and delay must be given"
type HTTPFaultSpec struct {
	// Abort answers a share of the requests at once with an error status,
	// without sending them to any backend.
	// +optional
	Abort *HTTPFaultAbort `json:"abort,omitempty"`
	// Delay holds a share of the requests for a while before they are
	// sent on.
	// +optional
	Delay *HTTPFaultDelay `json:"delay,omitempty"`
}

// HTTPFaultAbort answers requests with HTTPStatus; a gRPC request gets the
// gRPC status that HTTP status maps to (gRPC's HTTP-to-gRPC mapping: 503
// is UNAVAILABLE).
type HTTPFaultAbort struct {
	// Percent of the requests aborted, each drawn at random: 0 aborts none,
	// 100 every one.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percent int32 `json:"percent"`
	// HTTPStatus is the status code of the answer, 200 to 599.
	// +kubebuilder:validation:Minimum=200
	// +kubebuilder:validation:Maximum=599
	HTTPStatus int32 `json:"httpStatus"`
}

// HTTPFaultDelay holds requests for Duration.
type HTTPFaultDelay struct {
	// Percent of the requests delayed, each drawn at random: 0 delays none,
	// 100 every one.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percent int32 `json:"percent"`
	// Duration is how long a delayed request waits before it is sent, in
	// the Gateway API's format (GEP-2257): "200ms", "1s", "1m30s".
	Duration gatewayv1.Duration `json:"duration"`
}

// HTTPFaultList is a list of HTTPFaults.
// +kubebuilder:object:root=true
type HTTPFaultList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HTTPFault `json:"items"`
}
