package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
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
	// Arches are the GOARCHes of every image's variants; empty means
	// DefaultArches. Each tarball is an OCI image index with one image per
	// architecture.
	Arches []string
	// JaegerArches are those of the Jaeger image; empty means the host's
	// only (see BuildJaeger).
	JaegerArches []string
	// SkipJaeger leaves the Jaeger image out: its first build takes
	// minutes, which tests of the other images need not wait for.
	SkipJaeger bool
}

// DefaultArches are the architectures `make images` builds: the nodes the
// mesh runs on.
var DefaultArches = []string{"amd64", "arm64"}

// Built is one image tarball written by BuildAll.
type Built struct {
	Name, Ref, Path string
}

// BuildAll builds the static binaries and writes the tarballs of the
// project images (mesh-proxy, mesh-controller, mesh-cni, mesh-demo) and of the images
// the local cluster and its extensions need (pause, coredns, jaeger), each
// an OCI image index with a variant per architecture. A project command that
// does not exist yet is skipped with a message rather than failing the rest.
func BuildAll(ctx context.Context, o Options) ([]Built, error) {
	if o.Version == "" {
		return nil, errors.New("images: Version is required (the content of the VERSION file)")
	}
	o = o.withDefaults()
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	bin, err := os.MkdirTemp("", "mesh-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(bin)

	project := []struct {
		name, pkg string
		spec      func(version, binary, arch string) (Spec, error)
	}{
		{ProxyName, "./cmd/mesh-proxy", func(version, binary, arch string) (Spec, error) {
			return o.proxySpec(ctx, version, binary, arch)
		}},
		{ControllerName, "./cmd/mesh-controller", forArch(Controller)},
		{CNIName, "./cmd/mesh-cni", forArch(CNI)},
		{PauseName, "./install/cluster/pause", forArch(Pause)},
		{DemoName, "./testdata/demo/cmd/demo", forArch(Demo)},
	}
	var out []Built
	for _, p := range project {
		if _, err := os.Stat(filepath.Join(o.RepoRoot, p.pkg)); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(o.Log, "images: skipping %s: %s does not exist yet\n", p.name, p.pkg)
			continue
		}
		b, err := BuildMultiArch(ctx, o, p.name, o.RepoRoot, p.pkg, bin, p.spec)
		if err != nil {
			return out, err
		}
		out = append(out, b)
	}
	b, err := BuildCoreDNS(ctx, GoBuild{Go: o.Go}, o.CacheDir, filepath.Join(o.OutDir, CoreDNSName+".tar"), o.Log, o.Arches...)
	if err != nil {
		return out, err
	}
	out = append(out, b)
	if o.SkipJaeger {
		return out, nil
	}
	b, err = BuildJaeger(ctx, GoBuild{Go: o.Go}, o.CacheDir, filepath.Join(o.OutDir, JaegerName+".tar"), o.Log, o.JaegerArches...)
	if err != nil {
		return out, err
	}
	return append(out, b), nil
}

func (o Options) withDefaults() Options {
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
	if len(o.Arches) == 0 {
		o.Arches = DefaultArches
	}
	return o
}

// proxySpec is ProxyFor with the host's iptables for the host's
// architecture and Debian's packages, fetched into the cache, for others.
func (o Options) proxySpec(ctx context.Context, version, binary, arch string) (Spec, error) {
	if arch == runtime.GOARCH {
		return ProxyFor(version, binary, arch, ""), nil
	}
	if _, ok := multiarch[arch]; !ok {
		return Spec{}, fmt.Errorf("images: mesh-proxy for %s: no Debian multiarch directory known for it", arch)
	}
	root, err := DebianRoot(ctx, o.CacheDir, arch, iptablesPackages, o.Log)
	if err != nil {
		return Spec{}, fmt.Errorf("images: Debian's iptables for %s: %w", arch, err)
	}
	return ProxyFor(version, binary, arch, root), nil
}

// forArch turns a spec of the host's architecture into one for arch.
func forArch(spec func(version, binary string) Spec) func(version, binary, arch string) (Spec, error) {
	return func(version, binary, arch string) (Spec, error) {
		s := spec(version, binary)
		s.Arch = arch
		return s, nil
	}
}

// BuildMultiArch builds the main package pkg of the module in dir once per
// architecture of o.Arches (into binDir) and writes the image index of name
// to o.OutDir/<name>.tar, the variants described by spec. o's empty fields
// mean what they mean for BuildAll.
func BuildMultiArch(ctx context.Context, o Options, name, dir, pkg, binDir string, spec func(version, binary, arch string) (Spec, error)) (Built, error) {
	o = o.withDefaults()
	start := time.Now()
	// The architectures build at once: each go command spends much of a
	// warm build linking, on one core.
	binaries := make([]string, len(o.Arches))
	errs := make([]error, len(o.Arches))
	var wg sync.WaitGroup
	for i, arch := range o.Arches {
		binaries[i] = filepath.Join(binDir, name+"-linux-"+arch)
		gb := GoBuild{Go: o.Go, Dir: dir, LDFlags: o.LDFlags, Arch: arch}
		wg.Go(func() {
			// A first build for an architecture compiles every dependency
			// for it (minutes for mesh-controller's Kubernetes client): say so.
			t := time.Now()
			stop := reportEvery(o.Log, 10*time.Second, func() string {
				return fmt.Sprintf("images: still building %s for %s (%.0fs; a first build for an architecture compiles its dependencies)", name, arch, time.Since(t).Seconds())
			})
			defer stop()
			if err := gb.Build(ctx, binaries[i], pkg); err != nil {
				errs[i] = fmt.Errorf("images: build %s for %s: %w", name, arch, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Built{}, err
	}
	var specs []Spec
	for i, arch := range o.Arches {
		s, err := spec(o.Version, binaries[i], arch)
		if err != nil {
			return Built{}, err
		}
		specs = append(specs, s)
	}
	path := filepath.Join(o.OutDir, name+".tar")
	if err := WriteIndex(path, specs...); err != nil {
		return Built{}, err
	}
	fmt.Fprintf(o.Log, "images: %-52s %s (%s, %.1fs)\n", specs[0].Ref, path, strings.Join(o.Arches, ", "), time.Since(start).Seconds())
	return Built{Name: name, Ref: specs[0].Ref, Path: path}, nil
}

// BuildCoreDNS writes the CoreDNS image to out, building the static
// coredns binary into cacheDir first if it is not cached (about 80 s per
// architecture). With no arches it writes the host's alone as a
// docker-archive tarball, as the local cluster imports it; with arches, an
// image index with one variant each.
func BuildCoreDNS(ctx context.Context, gb GoBuild, cacheDir, out string, log io.Writer, arches ...string) (Built, error) {
	start := time.Now()
	gb.Dir = os.TempDir() // `go install mod@version` must not see our go.mod
	gb.LDFlags = ""
	var specs []Spec
	var notes []string
	for _, arch := range archesOrHost(arches) {
		var binary string
		var built bool
		var err error
		if arch == runtime.GOARCH {
			// The host's binary stays where earlier versions cached it.
			binary, built, err = gb.CachedCommand(ctx, cacheDir, "coredns", "github.com/coredns/coredns", CoreDNSVersion)
		} else {
			cross := gb
			cross.Arch = arch
			binary, built, err = cross.CachedTool(ctx, cacheDir, "coredns", "github.com/coredns/coredns", CoreDNSVersion, log)
		}
		if err != nil {
			return Built{}, fmt.Errorf("images: build coredns %s for %s: %w", CoreDNSVersion, arch, err)
		}
		s := CoreDNS(binary)
		s.Arch = arch
		specs = append(specs, s)
		notes = append(notes, cacheNote(arch, binary, built))
	}
	if err := writeSpecs(out, arches, specs); err != nil {
		return Built{}, err
	}
	fmt.Fprintf(log, "images: %-52s %s (%.1fs, %s)\n", specs[0].Ref, out, time.Since(start).Seconds(), strings.Join(notes, "; "))
	return Built{Name: CoreDNSName, Ref: specs[0].Ref, Path: out}, nil
}

// BuildJaeger writes the Jaeger image (an index with a variant per arch;
// none means the host's) to out, first building the static jaeger binary
// of each into cacheDir if it is not cached: about 7 minutes each on 2
// cores, which is why `make images` builds the host's alone.
func BuildJaeger(ctx context.Context, gb GoBuild, cacheDir, out string, log io.Writer, arches ...string) (Built, error) {
	start := time.Now()
	gb.LDFlags = jaegerLDFlags
	var specs []Spec
	var notes []string
	for _, arch := range archesOrHost(arches) {
		b := gb
		b.Arch = arch
		path := filepath.Join(cacheDir, JaegerName, "v"+JaegerVersion, "linux-"+arch, JaegerName)
		if _, err := os.Stat(path); err != nil {
			fmt.Fprintf(log, "images: building Jaeger v%s for %s into %s (once per machine, minutes)\n", JaegerVersion, arch, filepath.Dir(path))
		}
		binary, built, err := b.CachedTool(ctx, cacheDir, JaegerName, jaegerPkg, "v"+JaegerVersion, log)
		if err != nil {
			return Built{}, fmt.Errorf("images: build jaeger v%s for %s: %w", JaegerVersion, arch, err)
		}
		specs = append(specs, Jaeger(binary, arch))
		notes = append(notes, cacheNote(arch, binary, built))
	}
	if err := WriteIndex(out, specs...); err != nil {
		return Built{}, err
	}
	fmt.Fprintf(log, "images: %-52s %s (%.1fs, %s)\n", specs[0].Ref, out, time.Since(start).Seconds(), strings.Join(notes, "; "))
	return Built{Name: JaegerName, Ref: specs[0].Ref, Path: out}, nil
}

func archesOrHost(arches []string) []string {
	if len(arches) == 0 {
		return []string{runtime.GOARCH}
	}
	return arches
}

// writeSpecs writes one host image as before (docker archive) when no
// arches were asked for, else an image index.
func writeSpecs(out string, arches []string, specs []Spec) error {
	if len(arches) == 0 {
		return Write(out, specs[0])
	}
	return WriteIndex(out, specs...)
}

func cacheNote(arch, binary string, built bool) string {
	if built {
		return arch + ": built binary into " + filepath.Dir(binary)
	}
	return arch + ": cached binary"
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
