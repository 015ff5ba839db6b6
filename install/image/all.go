package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// DefaultCacheDir keeps binaries built from the module proxy (CoreDNS)
// outside the checkout, so every clone on the machine reuses them.
const DefaultCacheDir = "/var/cache/mesh"

// Options says what `make images` builds and where. The zero value of each
// field means the default named on it.
type Options struct {
	// RepoRoot is the mesh checkout; empty means the working directory.
	RepoRoot string
	// OutDir receives one <name>.tar per image; empty means
	// RepoRoot/build/images.
	OutDir string
	// Version tags the project's images; required.
	Version string
	// LDFlags for the project's binaries; empty means "-s -w".
	LDFlags string
	// CacheDir keeps the CoreDNS binary; empty means DefaultCacheDir.
	CacheDir string
	// Go is the go command; empty means FindGo().
	Go string
	// Log receives one line per image; nil discards.
	Log io.Writer
}

// Built is one image tarball written by BuildAll.
type Built struct {
	Name, Ref, Path string
}

// BuildAll builds the static binaries and writes the tarballs of the
// project images (mesh-proxy, mesh-controller) and of the images the local
// cluster needs (pause, coredns). A project command that does not exist yet
// is skipped with a message rather than failing the rest.
func BuildAll(ctx context.Context, o Options) ([]Built, error) {
	if o.Version == "" {
		return nil, errors.New("images: Version is required (the content of the VERSION file)")
	}
	if o.RepoRoot == "" {
		o.RepoRoot = "."
	}
	if o.OutDir == "" {
		o.OutDir = filepath.Join(o.RepoRoot, "build", "images")
	}
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	bin, err := os.MkdirTemp("", "mesh-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(bin)
	gb := GoBuild{Go: o.Go, Dir: o.RepoRoot, LDFlags: o.LDFlags}

	project := []struct {
		name, pkg string
		spec      func(version, binary string) Spec
	}{
		{ProxyName, "./cmd/mesh-proxy", Proxy},
		{ControllerName, "./cmd/mesh-controller", Controller},
		{PauseName, "./install/cluster/pause", Pause},
		{DemoName, "./testdata/demo/cmd/demo", Demo},
	}
	var out []Built
	for _, p := range project {
		if _, err := os.Stat(filepath.Join(o.RepoRoot, p.pkg)); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(o.Log, "images: skipping %s: %s does not exist yet\n", p.name, p.pkg)
			continue
		}
		b, err := buildOne(ctx, gb, o, p.name, p.pkg, bin, p.spec)
		if err != nil {
			return out, err
		}
		out = append(out, b)
	}
	b, err := BuildCoreDNS(ctx, gb, o.CacheDir, filepath.Join(o.OutDir, CoreDNSName+".tar"), o.Log)
	if err != nil {
		return out, err
	}
	return append(out, b), nil
}

func buildOne(ctx context.Context, gb GoBuild, o Options, name, pkg, binDir string, spec func(string, string) Spec) (Built, error) {
	start := time.Now()
	binary := filepath.Join(binDir, name)
	if err := gb.Build(ctx, binary, pkg); err != nil {
		return Built{}, fmt.Errorf("images: build %s: %w", name, err)
	}
	s := spec(o.Version, binary)
	path := filepath.Join(o.OutDir, name+".tar")
	if err := Write(path, s); err != nil {
		return Built{}, err
	}
	fmt.Fprintf(o.Log, "images: %-60s %s (%.1fs)\n", s.Ref, path, time.Since(start).Seconds())
	return Built{Name: name, Ref: s.Ref, Path: path}, nil
}

// BuildCoreDNS writes the CoreDNS image to out, building the static
// coredns binary into cacheDir first if it is not cached (about 80 s).
func BuildCoreDNS(ctx context.Context, gb GoBuild, cacheDir, out string, log io.Writer) (Built, error) {
	start := time.Now()
	gb.Dir = os.TempDir() // `go install mod@version` must not see our go.mod
	gb.LDFlags = ""
	binary, built, err := gb.CachedCommand(ctx, cacheDir, "coredns", "github.com/coredns/coredns", CoreDNSVersion)
	if err != nil {
		return Built{}, fmt.Errorf("images: build coredns %s: %w", CoreDNSVersion, err)
	}
	s := CoreDNS(binary)
	if err := Write(out, s); err != nil {
		return Built{}, err
	}
	note := "cached binary"
	if built {
		note = "built binary into " + filepath.Dir(binary)
	}
	fmt.Fprintf(log, "images: %-60s %s (%.1fs, %s)\n", s.Ref, out, time.Since(start).Seconds(), note)
	return Built{Name: CoreDNSName, Ref: s.Ref, Path: out}, nil
}

// BuildPause writes the pause image for version to out. It is quick (a tiny
// binary), so callers rebuild it rather than track staleness.
func BuildPause(ctx context.Context, gb GoBuild, version, out string) (Built, error) {
	dir, err := os.MkdirTemp("", "mesh-pause-")
	if err != nil {
		return Built{}, err
	}
	defer os.RemoveAll(dir)
	binary := filepath.Join(dir, "pause")
	if err := gb.Build(ctx, binary, "./install/cluster/pause"); err != nil {
		return Built{}, fmt.Errorf("build pause: %w", err)
	}
	s := Pause(version, binary)
	if err := Write(out, s); err != nil {
		return Built{}, err
	}
	return Built{Name: PauseName, Ref: s.Ref, Path: out}, nil
}
