// Package e2e is the end-to-end suite on a real Kubernetes: the local
// single-node cluster of install/cluster (a kube-apiserver, kubelet,
// containerd and CoreDNS built on this machine). It installs the mesh with
// the real `mesh` binary, deploys the demo shop with the real kubectl, and
// asserts on the pods, the proxies' own metrics, events and what uninstall
// leaves behind.
//
// TestMain brings the cluster up unless one is running (and takes down
// only what it brought up), then imports the images of `make images`. It
// needs root; `make test` sets MESH_REQUIRE_ROOT_TESTS=1, which turns a
// would-be skip into a failure.
//
// Each test works in namespaces of its own. Those that change the mesh for
// everyone run one after another, first: TestMesh (install, uninstall),
// TestBalancing, TestPolicy and TestTrafficControllerDown (the controller
// scaled to zero), TestRotation (a new trust anchor) and TestCNI (an install
// in CNI mode); so do the two that load the shared
// machine or measure rates that its load disturbs: TestHardening (a port
// sweep and 2,000 churned endpoints keep the controller busy past the
// proxies' 1s wait for a new destination), TestViz (the load pod's own
// rate) and TestTrafficUnderLoad (retries, rate limits and a scale-down,
// counted to the request). The others call t.Parallel and then run together, sharing one
// install (ensureInstalled); `make test-e2e` lets up to eight run at once
// (-parallel), as most of their time is spent waiting for pods.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mesh-dev/mesh/install/cluster"
)

// env is what TestMain set up for the tests.
type env struct {
	root, version string
	mesh          string // the mesh CLI built from this tree
	kubectl       string
	kubeconfig    string
	rest          *rest.Config
	client        kubernetes.Interface
}

var (
	e2e env
	// setupErr is why the suite cannot run; every test reports it.
	setupErr error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		setupErr = fmt.Errorf("the end-to-end suite needs root (it runs a local Kubernetes: namespaces, mounts, cgroups)")
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "mesh-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	started, err := setup(ctx, tmp)
	if started {
		defer func() {
			fmt.Fprintln(os.Stderr, "e2e: taking down the cluster this suite brought up")
			if err := cluster.Down(context.Background(), cluster.Config{}); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: cluster down: %v\n", err)
			}
		}()
	}
	if err != nil {
		// Every test fails with this rather than the suite dying without
		// a test line in the log.
		setupErr = err
	}
	return m.Run()
}

// setup builds the CLI, brings the cluster up when none runs, imports the
// images and connects a client. started reports whether it started the
// cluster, so that TestMain takes it down again.
func setup(ctx context.Context, tmp string) (started bool, err error) {
	root, err := cluster.FindRepoRoot()
	if err != nil {
		return false, err
	}
	version, err := cluster.Version(root)
	if err != nil {
		return false, err
	}
	e2e.root, e2e.version = root, version
	for _, img := range []string{"mesh-proxy", "mesh-controller", "mesh-demo"} {
		if _, err := os.Stat(filepath.Join(root, "build", "images", img+".tar")); err != nil {
			return false, fmt.Errorf("image %s not built: run `make images` first (`make test-e2e` does)", img)
		}
	}
	e2e.mesh = filepath.Join(tmp, "mesh")
	build := exec.CommandContext(ctx, "go", "build", "-o", e2e.mesh,
		"-ldflags", "-X github.com/mesh-dev/mesh/internal/version.Version="+version, "./cmd/mesh")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return false, fmt.Errorf("build the mesh CLI: %v\n%s", err, out)
	}

	cfg := cluster.Config{RepoRoot: root, Log: prefixed{"cluster: "}}
	access, err := cluster.Inspect(cfg)
	if err != nil {
		return false, err
	}
	if !access.Running {
		fmt.Fprintln(os.Stderr, "e2e: no local cluster runs; bringing one up")
		started = true
		if err := cluster.Up(ctx, cfg); err != nil {
			return started, fmt.Errorf("cluster up: %w", err)
		}
	}
	if err := cluster.LoadImages(ctx, cfg); err != nil {
		return started, err
	}
	e2e.kubectl, e2e.kubeconfig = access.Kubectl, access.Kubeconfig
	e2e.rest, err = clientcmd.BuildConfigFromFlags("", access.Kubeconfig)
	if err != nil {
		return started, fmt.Errorf("kubeconfig: %w", err)
	}
	e2e.client, err = kubernetes.NewForConfig(e2e.rest)
	return started, err
}

// needEnv fails (or, when MESH_REQUIRE_ROOT_TESTS is not 1, skips) a test
// that cannot run because setup did not.
func needEnv(t *testing.T) {
	t.Helper()
	if setupErr == nil {
		return
	}
	if os.Getenv("MESH_REQUIRE_ROOT_TESTS") == "1" || os.Geteuid() == 0 {
		t.Fatalf("end-to-end setup: %v", setupErr)
	}
	t.Skipf("end-to-end setup: %v", setupErr)
}

// prefixed writes each line to stderr with a prefix, so the cluster's
// progress shows in the test output.
type prefixed struct{ prefix string }

func (p prefixed) Write(b []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		fmt.Fprintln(os.Stderr, p.prefix+line)
	}
	return len(b), nil
}
