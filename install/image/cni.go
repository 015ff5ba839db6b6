package image

// CNIName is the image of the mesh CNI plugin (cmd/mesh-cni), which
// `mesh install --cni` runs as a DaemonSet.
const CNIName = "mesh-cni"

// cniBin is where the image keeps mesh-cni. The DaemonSet runs it as
// `mesh-cni install`, which copies this very file into the node's CNI bin
// dir: it must be the static binary the runtime on the node can execute,
// with nothing beside it to load.
const cniBin = "/usr/local/bin/mesh-cni"

// CNI describes the mesh-cni image. It runs as root, the owner of the
// node's CNI directories it writes; its pod drops every capability, which
// an owner needs none of to write there.
func CNI(version, binary string) Spec {
	return staticSpec(Ref(CNIName, version), cniBin, binary, "0:0", version)
}
