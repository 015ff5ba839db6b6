// Package kubelab is what the benchmarks that run on the local Kubernetes
// (the cluster of `make cluster-up`) share: connecting to it with the
// images of `make images` imported, installing the mesh when none runs,
// namespaces a run owns by a label, pods and their network namespaces, and
// a pod's /metrics read through the API server.
//
// Everything here needs root, as the cluster does: the images are imported
// with the node's containerd, and a pod's network namespace is entered
// through /proc.
package kubelab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mesh-dev/mesh/install/cluster"
)

// Config is what Connect needs.
type Config struct {
	// Mesh is the mesh CLI that installs the mesh; "" builds one from the
	// checkout into TempDir.
	Mesh    string
	TempDir string
	// Target is the make target that runs the benchmark, for the errors
	// that say how to run it: "make soak".
	Target string
	// Log receives progress and the output of the commands run; Logf
	// writes one line of progress. Neither may be nil.
	Log  io.Writer
	Logf func(format string, args ...any)
}

// Lab is the local cluster, connected. Its methods are called from one
// goroutine.
type Lab struct {
	Root, Version string // of the checkout: its top directory and VERSION
	Kubeconfig    string // the cluster's admin kubeconfig
	Client        kubernetes.Interface
	K8sVersion    string // the API server's GitVersion; "" when unknown
	// MeshCLI is the mesh binary that installs and uninstalls the mesh.
	MeshCLI string

	log  io.Writer
	logf func(format string, args ...any)
}

// Connect checks that a benchmark can work here (root, the local cluster
// up), builds the mesh CLI unless cfg names one, imports the images of
// `make images` and returns a client of the cluster. It never starts or
// stops the cluster.
func Connect(ctx context.Context, cfg Config) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("needs root: it imports images into the local cluster and opens its sockets in a pod's network namespace (sudo %s)", cfg.Target)
	}
	root, err := cluster.FindRepoRoot()
	if err != nil {
		return nil, err
	}
	version, err := cluster.Version(root)
	if err != nil {
		return nil, err
	}
	ccfg := cluster.Config{RepoRoot: root, Log: cfg.Log}
	access, err := cluster.Inspect(ccfg)
	if err != nil {
		return nil, err
	}
	if !access.Running {
		return nil, errors.New("the local cluster does not run: start it with make cluster-up (this benchmark never starts or stops it)")
	}
	l := &Lab{Root: root, Version: version, Kubeconfig: access.Kubeconfig, MeshCLI: cfg.Mesh, log: cfg.Log, logf: cfg.Logf}
	if l.MeshCLI == "" {
		if l.MeshCLI, err = buildMesh(ctx, root, cfg.TempDir, version); err != nil {
			return nil, err
		}
	}
	l.logf("importing the images of make images into the cluster")
	if err := cluster.LoadImages(ctx, ccfg); err != nil {
		return nil, err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", access.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = 50, 100
	if l.Client, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, err
	}
	if v, err := l.Client.Discovery().ServerVersion(); err == nil {
		l.K8sVersion = v.GitVersion
	}
	return l, nil
}

// buildMesh builds the mesh CLI of the checkout at root into dir.
func buildMesh(ctx context.Context, root, dir, version string) (string, error) {
	bin := filepath.Join(dir, "mesh")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin,
		"-ldflags", "-s -w -X github.com/mesh-dev/mesh/internal/version.Version="+version, "./cmd/mesh")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/mesh: %w\n%s", err, out)
	}
	return bin, nil
}

// Poll calls cond every interval until it reports done, fails, or timeout
// passes; the error then carries cond's last reason. cond gets ctx itself,
// not one that ends with the timeout: client-go's rate limiter fails a
// call at once when it could not finish before its context's deadline.
func Poll(ctx context.Context, timeout, interval time.Duration, what string, cond func(ctx context.Context) (done bool, why string, err error)) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(interval)
	defer t.Stop()
	var why string
	for {
		done, w, err := cond(ctx)
		switch {
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case err != nil:
			return fmt.Errorf("%s: %w", what, err)
		case done:
			return nil
		case w != "":
			why = w
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not done after %v: %s", what, timeout, why)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
	}
}

// Sleep waits d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
