package inject

import (
	corev1 "k8s.io/api/core/v1"
)

// What an injected pod needs for its SPIFFE identity: a ServiceAccount
// token for the identity service's audience, the identity service's
// address and trust anchors, and a socket directory shared with the
// application containers for the SPIFFE Workload API.
const (
	// IdentityTokenVolumeName is the projected ServiceAccount token the
	// proxy proves its identity with.
	IdentityTokenVolumeName = "mesh-identity-token"
	// IdentityTokenDir is where it is mounted in the proxy.
	IdentityTokenDir = "/var/run/secrets/mesh.dev/identity"
	// IdentityTokenAudience is the audience the identity service accepts,
	// so the token is useless to the API server or anyone else.
	IdentityTokenAudience = "identity.mesh.dev"
	// identityTokenTTL: kubelet rotates the token at 80 % of it.
	identityTokenTTL = 3600

	// SPIFFEVolumeName holds the Workload API socket.
	SPIFFEVolumeName = "mesh-spiffe"
	// SPIFFESocketDir is where the socket directory is mounted in the proxy
	// and in every application container.
	SPIFFESocketDir = "/var/run/mesh/spiffe"
	// SPIFFEEndpointSocket is what go-spiffe and the other SPIFFE libraries
	// read to find the Workload API.
	SPIFFEEndpointSocket = "SPIFFE_ENDPOINT_SOCKET"

	// ControllerServiceAccount is mesh-controller's: the identity service
	// presents the SPIFFE ID of it, which proxies require.
	ControllerServiceAccount = "mesh-controller"

	envIdentityAddr     = "MESH_PROXY_IDENTITY_ADDR"
	envIdentityServerID = "MESH_PROXY_IDENTITY_SERVER_ID"
	envTrustDomain      = "MESH_PROXY_TRUST_DOMAIN"
	envTrustAnchors     = "MESH_PROXY_TRUST_ANCHORS"
	envServiceAccount   = "MESH_PROXY_SERVICE_ACCOUNT"
	envWorkloadSocket   = "MESH_PROXY_WORKLOAD_API_SOCKET"
	envTapClientID      = "MESH_PROXY_TAP_CLIENT_ID"
)

// DefaultIdentityAddr is the identity service of a control plane in
// namespace ns: the headless Service of `mesh install`.
func DefaultIdentityAddr(ns string) string {
	return "mesh-identity." + ns + ".svc.cluster.local.:8080"
}

// identityEnabled reports whether proxies get identities: only when the
// trust anchors to check the identity service with are known.
func (c Config) identityEnabled() bool { return c.TrustAnchors != "" }

// identityEnv is the proxy's identity configuration.
func identityEnv(cfg Config) []corev1.EnvVar {
	controllerID := "spiffe://" + cfg.TrustDomain + "/ns/" + cfg.ControlPlaneNamespace + "/sa/" + ControllerServiceAccount
	return []corev1.EnvVar{
		{Name: envIdentityAddr, Value: cfg.IdentityAddr},
		{Name: envIdentityServerID, Value: controllerID},
		{Name: envTrustDomain, Value: cfg.TrustDomain},
		{Name: envTrustAnchors, Value: cfg.TrustAnchors},
		{Name: envServiceAccount, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "spec.serviceAccountName"},
		}},
		{Name: envWorkloadSocket, Value: SPIFFESocketDir + "/socket"},
		// Only the controller's viz component may watch live requests.
		{Name: envTapClientID, Value: controllerID},
	}
}

// identityMounts are the proxy's mounts for its identity.
func identityMounts() []corev1.VolumeMount {
	return []corev1.VolumeMount{
		{Name: IdentityTokenVolumeName, MountPath: IdentityTokenDir, ReadOnly: true},
		{Name: SPIFFEVolumeName, MountPath: SPIFFESocketDir},
	}
}

// identityVolumes are the pod volumes identityMounts use.
func identityVolumes() []corev1.Volume {
	ttl := int64(identityTokenTTL)
	return []corev1.Volume{
		{Name: IdentityTokenVolumeName, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: IdentityTokenAudience, ExpirationSeconds: &ttl, Path: "token",
			}}},
		}}},
		{Name: SPIFFEVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory,
		}}},
	}
}

// offerWorkloadAPI points every application container at the proxy's
// Workload API, unless it already names a socket of its own (a SPIRE
// agent, say).
func offerWorkloadAPI(spec *corev1.PodSpec) {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			c := &cs[i]
			if c.Name == ProxyContainerName || c.Name == InitContainerName || hasEnv(c, SPIFFEEndpointSocket) {
				continue
			}
			c.Env = append(c.Env, corev1.EnvVar{Name: SPIFFEEndpointSocket, Value: "unix://" + SPIFFESocketDir + "/socket"})
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: SPIFFEVolumeName, MountPath: SPIFFESocketDir, ReadOnly: true})
		}
	}
}

func hasEnv(c *corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name {
			return true
		}
	}
	return false
}
