// Package v1alpha1 holds the Go types of the policy.mesh.dev/v1alpha1 API:
// the authorization kinds a Linkerd user knows (Server,
// MeshTLSAuthentication, NetworkAuthentication, AuthorizationPolicy,
// HTTPLocalRateLimitPolicy) in our own group, so manifests move over by
// changing the group; and HTTPFault, the fault injection filter HTTPRoutes
// name as an ExtensionRef.
//
// The CRD manifests and the deepcopy functions are generated from these
// types by controller-tools and code-generator (`make generate`) and
// committed; `make test` fails when they drift.
//
// +kubebuilder:object:generate=true
// +groupName=policy.mesh.dev
package v1alpha1
