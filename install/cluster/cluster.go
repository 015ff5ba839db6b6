// Package cluster brings up and tears down a real single-node Kubernetes on
// this machine, without Docker: etcd, containerd, the Kubernetes binaries
// built from the Go module proxy, and CoreDNS, all inside one network
// namespace made for the node. It follows shared/notes/local-cluster.md.
//
// Everything it makes lives under Config.StateDir, in the node namespace,
// or in cgroups under Config.Name; Down removes all of it. Up on a running
// cluster changes nothing.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mesh-dev/mesh/install/image"
)

// Defaults. The addresses are test-host addresses inside the node's own
// namespace (never loopback, never the machine's interface), as the notes
// require.
const (
	DefaultStateDir   = "/var/lib/mesh-cluster"
	DefaultCacheDir   = "/var/cache/mesh"
	DefaultName       = "mesh-cluster"
	DefaultKubeconfig = DefaultStateDir + "/kubeconfig"

	// The node namespace's veth: host side .1, node side .2.
	HostIP = "10.250.0.1"
	NodeIP = "10.250.0.2"

	PodCIDR     = "10.244.0.0/24"
	ServiceCIDR = "10.96.0.0/16"
	APIServerIP = "10.96.0.1" // first address of ServiceCIDR: the kubernetes Service
	DNSIP       = "10.96.0.10"
	Domain      = "cluster.local"
	NodeName    = "mesh-node"
)

// ErrNotRoot is returned when the caller cannot create namespaces, mounts and
// cgroups.
var ErrNotRoot = errors.New("the local cluster needs root (network namespaces, mounts, cgroups): run it with sudo")

// Config says where the cluster keeps its files and what it runs. The zero
// value of every field means the default named on it.
type Config struct {
	// RepoRoot is the mesh checkout: VERSION, hack/cluster/k8s and
	// build/images are read from it. Empty means found from the working
	// directory.
	RepoRoot string
	// StateDir holds every file of a running cluster; Down removes it.
	// Empty means DefaultStateDir.
	StateDir string
	// CacheDir keeps built binaries and images across clusters and clones,
	// keyed by version. Empty means DefaultCacheDir.
	CacheDir string
	// Name names the node network namespace, the cgroup parent and the
	// CNI network. Empty means DefaultName.
	Name string
	// Go is the go command used for builds. Empty means $GO, then "go" on
	// PATH, then /usr/local/go/bin/go.
	Go string
	// Log receives one line per step. Nil means os.Stderr.
	Log io.Writer
	// Timeout bounds waiting for each component to become ready. Zero
	// means 2 minutes.
	Timeout time.Duration
}

// withDefaults fills the zero fields of c.
func (c Config) withDefaults() (Config, error) {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.CacheDir == "" {
		c.CacheDir = DefaultCacheDir
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Log == nil {
		c.Log = os.Stderr
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Minute
	}
	if c.Go == "" {
		c.Go = image.FindGo()
	}
	if c.RepoRoot == "" {
		root, err := FindRepoRoot()
		if err != nil {
			return c, err
		}
		c.RepoRoot = root
	}
	return c, nil
}

// FindRepoRoot walks up from the working directory to the directory whose
// go.mod declares the mesh module.
func FindRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/mesh-dev/mesh\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the mesh repository (a go.mod of module github.com/mesh-dev/mesh) above the working directory")
		}
		dir = parent
	}
}

// Version returns the repo's VERSION, the tag of the images it builds.
func Version(repoRoot string) (string, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "VERSION"))
	if err != nil {
		return "", fmt.Errorf("read VERSION: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", errors.New("VERSION is empty")
	}
	return v, nil
}

// paths are the files and directories of one cluster, all derived from
// Config so that Up, Down and Status agree.
type paths struct {
	state, cache, name string
	netns              string // /var/run/netns/<name>
	hostVeth           string
	kubeconfig         string
	pki                string
	logs               string
	run                string // pid files
	containerd         string
	containerdSock     string
	kubelet            string
	cniConf            string
	cniData            string
	manifests          string
	images             string // build/images of the repo
}

// prepare does what every entry point needs first: the config with its
// defaults, the root check, and the paths the cluster lives in.
func prepare(cfg Config) (Config, paths, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return Config{}, paths{}, err
	}
	if err := requireRoot(); err != nil {
		return Config{}, paths{}, err
	}
	return c, newPaths(c), nil
}

func newPaths(c Config) paths {
	s := c.StateDir
	return paths{
		state: s, cache: c.CacheDir, name: c.Name,
		netns:          "/var/run/netns/" + c.Name,
		hostVeth:       hostVethName(c.Name),
		kubeconfig:     filepath.Join(s, "kubeconfig"),
		pki:            filepath.Join(s, "pki"),
		logs:           filepath.Join(s, "logs"),
		run:            filepath.Join(s, "run"),
		containerd:     filepath.Join(s, "containerd"),
		containerdSock: filepath.Join(s, "containerd", "containerd.sock"),
		kubelet:        filepath.Join(s, "kubelet"),
		cniConf:        filepath.Join(s, "cni", "net.d"),
		cniData:        filepath.Join(s, "cni", "data"),
		manifests:      filepath.Join(s, "manifests"),
		images:         filepath.Join(c.RepoRoot, "build", "images"),
	}
}

// hostVethName fits the 15-byte interface name limit.
func hostVethName(name string) string {
	n := "veth-" + name
	if len(n) > 15 {
		n = n[:15]
	}
	return n
}

// progress prints one line per step with its duration.
type progress struct {
	w     io.Writer
	start time.Time
}

func (p *progress) step(name string, fn func() error) error {
	t := time.Now()
	err := fn()
	status := "ok"
	if err != nil {
		status = "FAILED"
	}
	fmt.Fprintf(p.w, "[%5.1fs] %-58s %s (%.1fs)\n", time.Since(p.start).Seconds(), name, status, time.Since(t).Seconds())
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (p *progress) say(format string, args ...any) {
	fmt.Fprintf(p.w, "[%5.1fs] "+format+"\n", append([]any{time.Since(p.start).Seconds()}, args...)...)
}

func requireRoot() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	return nil
}

// lock serializes Up, Down and Status runs on this machine: make targets and
// tests may race for the same cluster.
func lock(ctx context.Context, name string) (release func(), err error) {
	f, err := os.OpenFile("/run/"+name+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			return func() { f.Close() }, nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for another cluster command to finish (lock /run/%s.lock): %w", name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
