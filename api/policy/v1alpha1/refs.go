package v1alpha1

import gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

// The group of a reference may be left out, as Linkerd's manifests do;
// these say what a reference names with that taken into account, so no
// caller compares groups itself.

// TargetsServer reports whether r names a Server.
func (r TargetRef) TargetsServer() bool {
	return r.Kind == KindServer && (r.Group == "" || r.Group == GroupName)
}

// TargetsNamespace reports whether r names a Namespace.
func (r TargetRef) TargetsNamespace() bool {
	return r.Kind == "Namespace" && r.Group == ""
}

// TargetsRoute reports whether r names an HTTPRoute or a GRPCRoute of the
// Gateway API, and which kind.
func (r TargetRef) TargetsRoute() (kind string, ok bool) {
	if (r.Kind == "HTTPRoute" || r.Kind == "GRPCRoute") && (r.Group == "" || r.Group == gatewayv1.GroupName) {
		return r.Kind, true
	}
	return "", false
}

// IsMeshTLSAuthentication reports whether r names a MeshTLSAuthentication.
func (r AuthenticationRef) IsMeshTLSAuthentication() bool {
	return r.Kind == KindMeshTLSAuthentication && (r.Group == "" || r.Group == GroupName)
}

// IsNetworkAuthentication reports whether r names a NetworkAuthentication.
func (r AuthenticationRef) IsNetworkAuthentication() bool {
	return r.Kind == KindNetworkAuthentication && (r.Group == "" || r.Group == GroupName)
}

// IsServiceAccount reports whether r names a ServiceAccount.
func (r AuthenticationRef) IsServiceAccount() bool {
	return r.Kind == "ServiceAccount" && r.Group == ""
}

// IsServiceAccount reports whether r names a ServiceAccount.
func (r IdentityRef) IsServiceAccount() bool {
	return r.Kind == "ServiceAccount" && r.Group == ""
}

// TargetsServer reports whether r names a Server.
func (r ServerRef) TargetsServer() bool {
	return r.Kind == KindServer && (r.Group == "" || r.Group == GroupName)
}
