package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/mesh-dev/mesh/install/image"
)

// k8sCommands are the Kubernetes programs the node runs (and kubectl).
var k8sCommands = []string{
	"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl",
}

// wrapperDir is the module that builds them: k8s.io/kubernetes cannot be
// `go install`ed because its go.mod replaces its staging modules with local
// paths (local-cluster.md, binaries).
const wrapperDir = "hack/cluster/k8s"

var requireRE = regexp.MustCompile(`(?m)^require k8s\.io/kubernetes (v\S+)$`)

// K8sVersion returns the Kubernetes version the wrapper module pins; it keys
// the binary cache.
func K8sVersion(repoRoot string) (string, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot, wrapperDir, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("read the Kubernetes wrapper module: %w", err)
	}
	m := requireRE.FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("%s/go.mod has no 'require k8s.io/kubernetes vX.Y.Z' line", wrapperDir)
	}
	return string(m[1]), nil
}

// k8sBinDir is where the binaries of one version are cached.
func k8sBinDir(c Config, version string) string {
	return filepath.Join(c.CacheDir, "k8s", version)
}

// k8sCached reports whether every binary of version is in the cache.
func k8sCached(c Config, version string) bool {
	for _, cmd := range k8sCommands {
		if _, err := os.Stat(filepath.Join(k8sBinDir(c, version), cmd)); err != nil {
			return false
		}
	}
	return true
}

// buildK8s builds the binaries into a temporary directory beside the cache
// and renames it into place, so an interrupted build (about 11 minutes cold
// on 2 cores) never leaves a half-filled cache. It reports its progress to
// pr as it goes.
func buildK8s(ctx context.Context, c Config, pr *progress, version string) error {
	dir := k8sBinDir(c, version)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), version+".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	gb := image.GoBuild{Go: c.Go, Dir: filepath.Join(c.RepoRoot, wrapperDir), LDFlags: k8sLDFlags(version)}
	pkgs := make([]string, len(k8sCommands))
	for i, cmd := range k8sCommands {
		pkgs[i] = "k8s.io/kubernetes/cmd/" + cmd
	}
	// One go build for all six lets the go command compile and link them in
	// parallel.
	if err := runBuildWithProgress(ctx, gb, pr, "building Kubernetes "+version, gb.BuildIntoArgs(tmp, pkgs...), 0); err != nil {
		return err
	}
	os.RemoveAll(dir) // a partial directory from an older layout
	return os.Rename(tmp, dir)
}

// k8sLDFlags stamps the version the way Kubernetes' own build does
// (hack/lib/version.sh), so nodes report v1.37.2 instead of v0.0.0-master.
func k8sLDFlags(version string) string {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	flags := []string{"-s", "-w"}
	for _, pkg := range []string{"k8s.io/client-go/pkg/version", "k8s.io/component-base/version"} {
		flags = append(flags, "-X", pkg+".gitVersion="+version, "-X", pkg+".gitTreeState=clean")
		if len(parts) >= 2 {
			flags = append(flags, "-X", pkg+".gitMajor="+parts[0], "-X", pkg+".gitMinor="+parts[1])
		}
	}
	return strings.Join(flags, " ")
}

// infraImages are the references of the images the cluster itself runs.
type infraImages struct {
	pause, coredns string
	tarballs       []string // to import before kubelet starts
}

// buildInfraImages writes the pause and CoreDNS images into the state dir.
// pause is rebuilt every time (a second); the CoreDNS binary comes from the
// cache after its first build.
func buildInfraImages(ctx context.Context, c Config, p paths, version string) (infraImages, error) {
	dir := filepath.Join(p.state, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return infraImages{}, err
	}
	gb := image.GoBuild{Go: c.Go, Dir: c.RepoRoot}
	pause, err := image.BuildPause(ctx, gb, version, filepath.Join(dir, "pause.tar"))
	if err != nil {
		return infraImages{}, err
	}
	dns, err := image.BuildCoreDNS(ctx, gb, c.CacheDir, filepath.Join(dir, "coredns.tar"), io.Discard)
	if err != nil {
		return infraImages{}, err
	}
	return infraImages{pause: pause.Ref, coredns: dns.Ref, tarballs: []string{pause.Path, dns.Path}}, nil
}
