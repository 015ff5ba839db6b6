package cluster

import (
	"path/filepath"
)

// Access is how a client reaches a cluster: the files Up writes and the
// kubectl it built. Tests and `make demo` use it instead of hard-coding
// the defaults.
type Access struct {
	// Kubeconfig is the admin kubeconfig Up writes.
	Kubeconfig string
	// Kubectl is the kubectl binary of the cluster's Kubernetes version.
	Kubectl string
	// Running reports whether every component of the cluster runs (not
	// whether the node is Ready: Up waits for that).
	Running bool
}

// Inspect says where cfg's cluster is and whether it runs. It needs root,
// like everything else here, because the state is root's.
func Inspect(cfg Config) (Access, error) {
	c, p, err := prepare(cfg)
	if err != nil {
		return Access{}, err
	}
	version, err := K8sVersion(c.RepoRoot)
	if err != nil {
		return Access{}, err
	}
	k8sBin := k8sBinDir(c, version)
	return Access{
		Kubeconfig: p.kubeconfig,
		Kubectl:    filepath.Join(k8sBin, "kubectl"),
		Running:    state(p, components(p, k8sBin)).allRunning(),
	}, nil
}
