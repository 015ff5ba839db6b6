package inject

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/mesh-dev/mesh/internal/names"
)

// What an injected pod needs for its SPIFFE identity: a ServiceAccount
// token for the identity service's audience, the identity service's
// address and trust anchors, and a socket directory shared with the
// application containers for the SPIFFE Workload API.
const (
	// IdentityTokenVolumeName is the projected ServiceAccount token the
	// proxy proves its identity with, mounted at names.IdentityTokenDir.
	IdentityTokenVolumeName = "mesh-identity-token"
	// identityTokenTTL: kubelet rotates the token at 80 % of it.
	identityTokenTTL = 3600

	// SPIFFEVolumeName holds the Workload API socket; it is mounted at
	// names.SPIFFESocketDir in the proxy and every application container.
	SPIFFEVolumeName = "mesh-spiffe"
	// SPIFFEEndpointSocket is what go-spiffe and the other SPIFFE libraries
	// read to find the Workload API.
	SPIFFEEndpointSocket = "SPIFFE_ENDPOINT_SOCKET"

	envIdentityAddr     = "MESH_PROXY_IDENTITY_ADDR"
	envIdentityServerID = "MESH_PROXY_IDENTITY_SERVER_ID"
	envTrustDomain      = "MESH_PROXY_TRUST_DOMAIN"
	envTrustAnchors     = "MESH_PROXY_TRUST_ANCHORS"
	envServiceAccount   = "MESH_PROXY_SERVICE_ACCOUNT"
	envWorkloadSocket   = "MESH_PROXY_WORKLOAD_API_SOCKET"
	envTapClientID      = "MESH_PROXY_TAP_CLIENT_ID"
)

// identityEnabled reports whether proxies get identities: only when the
// trust anchors to check the identity service with are known.
func (c Config) identityEnabled() bool { return c.TrustAnchors != "" }

// identityEnv is the proxy's identity configuration.
func identityEnv(cfg Config) []corev1.EnvVar {
	controllerID := "spiffe://" + cfg.TrustDomain + "/ns/" + cfg.ControlPlaneNamespace + "/sa/" + names.ControllerServiceAccount
	vizID := "spiffe://" + cfg.TrustDomain + "/ns/" + cfg.ControlPlaneNamespace + "/sa/" + names.VizServiceAccount
	return []corev1.EnvVar{
		{Name: envIdentityAddr, Value: cfg.IdentityAddr},
		{Name: envIdentityServerID, Value: controllerID},
		{Name: envTrustDomain, Value: cfg.TrustDomain},
		{Name: envTrustAnchors, Value: cfg.TrustAnchors},
		{Name: envServiceAccount, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "spec.serviceAccountName"},
		}},
		{Name: envWorkloadSocket, Value: names.SPIFFESocketDir + "/" + names.SPIFFESocketFile},
		// Only mesh-viz may watch live requests; it relays them to users
		// the cluster's RBAC lets tap (the tap.mesh.dev API).
		{Name: envTapClientID, Value: vizID},
	}
}

// identityMounts are the proxy's mounts for its identity.
func identityMounts() []corev1.VolumeMount {
	return []corev1.VolumeMount{
		{Name: IdentityTokenVolumeName, MountPath: names.IdentityTokenDir, ReadOnly: true},
		{Name: SPIFFEVolumeName, MountPath: names.SPIFFESocketDir},
	}
}

// identityVolumes are the pod volumes identityMounts use.
func identityVolumes() []corev1.Volume {
	ttl := int64(identityTokenTTL)
	return []corev1.Volume{
		{Name: IdentityTokenVolumeName, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: names.IdentityTokenAudience, ExpirationSeconds: &ttl, Path: names.IdentityTokenFile,
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
			if c.Name == names.ProxyContainerName || c.Name == names.InitContainerName || hasEnv(c, SPIFFEEndpointSocket) {
				continue
			}
			c.Env = append(c.Env, corev1.EnvVar{Name: SPIFFEEndpointSocket, Value: "unix://" + names.SPIFFESocketDir + "/" + names.SPIFFESocketFile})
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: SPIFFEVolumeName, MountPath: names.SPIFFESocketDir, ReadOnly: true})
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
