package manifests

import (
	"fmt"
	"path"
)

// The mesh CNI plugin's objects (55-cni.yaml), rendered when CNI.Enabled.
const (
	// CNIName names the DaemonSet, its ServiceAccount, the ClusterRole and
	// its binding, and the image.
	CNIName = "mesh-cni"
	// CNINamespace holds the DaemonSet: its hostPath volumes are not
	// allowed in the control-plane namespace, which enforces the
	// restricted Pod Security Standard.
	CNINamespace = "mesh-cni"
	CNIImageName = "mesh-cni"
	// DefaultCNIBinDir and DefaultCNIConfDir are where containerd and
	// CRI-O look for CNI plugins and network configurations by default.
	DefaultCNIBinDir  = "/opt/cni/bin"
	DefaultCNIConfDir = "/etc/cni/net.d"
)

// CNI is the install's CNI mode (`mesh install --cni`). The zero value is
// off: injected pods get the mesh-init container, and nothing of
// 55-cni.yaml is rendered.
type CNI struct {
	Enabled bool
	// BinDir and ConfDir are the nodes' CNI bin dir and network
	// configuration dir (containerd's bin_dir and conf_dir); "" means
	// DefaultCNIBinDir and DefaultCNIConfDir.
	BinDir, ConfDir string
}

// Namespace is CNINamespace, for the template.
func (CNI) Namespace() string { return CNINamespace }

func (c CNI) withDefaults() CNI {
	if c.BinDir == "" {
		c.BinDir = DefaultCNIBinDir
	}
	if c.ConfDir == "" {
		c.ConfDir = DefaultCNIConfDir
	}
	return c
}

// validate refuses directories a hostPath volume cannot name: the
// DaemonSet would be rejected, or mount somewhere else than meant.
func (c CNI) validate() error {
	for _, d := range []struct{ flag, dir string }{{"bin", c.BinDir}, {"conf", c.ConfDir}} {
		if d.dir == "" {
			continue
		}
		if !path.IsAbs(d.dir) || path.Clean(d.dir) != d.dir || d.dir == "/" {
			return fmt.Errorf("CNI %s dir %q: want a clean absolute path on the node, like %s", d.flag, d.dir, map[string]string{"bin": DefaultCNIBinDir, "conf": DefaultCNIConfDir}[d.flag])
		}
	}
	return nil
}

// CNIError is what Validate says about the CNI directories, for `mesh
// install` to name its flags; nil when they are fine.
func (v Values) CNIError() error { return v.CNI.validate() }

// CNIImage is the mesh-cni image reference.
func (v Values) CNIImage() string { return v.Registry + "/" + CNIImageName + ":" + v.Version }
