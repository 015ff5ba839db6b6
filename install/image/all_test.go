package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// elfMachines are the ELF machine types of the architectures built.
var elfMachines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// TestBuildAll runs what `make images` runs (Jaeger aside: TestJaegerImage)
// and checks every tarball: an OCI image index named for containerd, a
// variant per architecture, each variant's ELF files built for it, the
// entrypoints static, and nothing of the build machine inside: no build
// paths, no users, no /etc files but the ones an image is meant to carry,
// and mesh-proxy's arm64 files all Debian's. The first run on a machine
// fetches Debian's arm64 iptables and builds CoreDNS for arm64 (about 2
// minutes, cached in DefaultCacheDir).
func TestBuildAll(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every image (-short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var log bytes.Buffer
	built, err := BuildAll(ctx, Options{RepoRoot: root, OutDir: out, Version: "v0.0.0-test", Log: &log, SkipJaeger: true})
	t.Logf("BuildAll:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range built {
		names = append(names, b.Name)
	}
	want := []string{ProxyName, ControllerName, CNIName, PauseName, DemoName, CoreDNSName}
	if !slices.Equal(names, want) {
		t.Errorf("built %q, want %q", names, want)
	}
	leaks := buildPaths(t, root)
	for _, b := range built {
		t.Run(b.Name, func(t *testing.T) {
			idx, ann, err := ReadIndex(b.Path, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if ann[AnnotationImageName] != b.Ref {
				t.Errorf("index.json names the image %q, want %q", ann[AnnotationImageName], b.Ref)
			}
			arches, imgs, err := Platforms(idx)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(arches, DefaultArches) {
				t.Fatalf("variants %q, want %q", arches, DefaultArches)
			}
			for _, arch := range arches {
				checkVariant(t, b.Name, arch, imgs[arch], leaks)
				if b.Name == ProxyName && arch != runtime.GOARCH {
					checkFromDebian(t, ctx, arch, imgs[arch])
				}
			}
		})
	}
}

// buildPaths are strings a binary or file built on this machine could leak:
// the checkout, the toolchain's and the module cache's sources, the
// temporary and the cache directories binaries are built in.
func buildPaths(t *testing.T, root string) []string {
	t.Helper()
	// The toolchain's root as the go command that builds the images sees
	// it (runtime.GOROOT is the test binary's, and deprecated).
	out, err := exec.Command(FindGo(), "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	goroot := strings.TrimSpace(string(out))
	gomodcache := filepath.Join(os.Getenv("HOME"), "go", "pkg", "mod")
	return []string{root, goroot + "/src", gomodcache, os.TempDir() + "/mesh-images-", DefaultCacheDir}
}

// etcAllowed are the only /etc files an image may hold, by image: none come
// from the host's /etc but /etc/protocols of the host's own mesh-proxy
// variant (Debian's netbase file, as the image was built before arm64).
var etcAllowed = map[string][]string{
	ProxyName:  {"/etc/protocols"},
	JaegerName: {JaegerConfigPath},
}

func checkVariant(t *testing.T, name, arch string, img v1.Image, leaks []string) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != arch {
		t.Errorf("%s: config says %s/%s", arch, cf.OS, cf.Architecture)
	}
	if u := cf.Config.User; u == "" || strings.IndexFunc(u, func(r rune) bool { return (r < '0' || r > '9') && r != ':' }) >= 0 {
		t.Errorf("%s: user %q, want a numeric uid[:gid] (no /etc/passwd in the image)", arch, u)
	}
	entries, err := readEntries(img)
	if err != nil {
		t.Fatal(err)
	}
	entrypoint := ""
	if len(cf.Config.Entrypoint) > 0 {
		entrypoint = cf.Config.Entrypoint[0]
	}
	if e, ok := entries[entrypoint]; !ok || e.typ != tar.TypeReg {
		t.Fatalf("%s: entrypoint %q is no file in the image", arch, cf.Config.Entrypoint)
	}
	for p, e := range entries {
		if strings.HasPrefix(p, "/etc/") && e.typ == tar.TypeReg && !slices.Contains(etcAllowed[name], p) {
			t.Errorf("%s: %s in the image; only %q may be", arch, p, etcAllowed[name])
		}
		if e.typ != tar.TypeReg {
			continue
		}
		for _, l := range leaks {
			if bytes.Contains(e.data, []byte(l)) {
				t.Errorf("%s: %s holds the build machine's path %s", arch, p, l)
			}
		}
		if !bytes.HasPrefix(e.data, []byte(elf.ELFMAG)) {
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(e.data))
		if err != nil {
			t.Errorf("%s: %s: %v", arch, p, err)
			continue
		}
		if f.Machine != elfMachines[arch] || f.Class != elf.ELFCLASS64 {
			t.Errorf("%s: %s is %v %v, want %v", arch, p, f.Class, f.Machine, elfMachines[arch])
		}
		interp := ""
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				b := make([]byte, prog.Filesz)
				prog.ReadAt(b, 0)
				interp = strings.TrimRight(string(b), "\x00")
			}
		}
		switch {
		case p == entrypoint && interp != "":
			t.Errorf("%s: the entrypoint %s is dynamically linked (%s); FROM scratch needs it static", arch, p, interp)
		case interp != "":
			if _, ok := entries[interp]; !ok {
				t.Errorf("%s: %s needs the loader %s, which the image lacks", arch, p, interp)
			}
		}
	}
}

// checkFromDebian checks that every file of the mesh-proxy variant for
// another architecture but the proxy itself is, byte for byte, the file at
// the same path in Debian's packages for it: nothing comes from the host.
func checkFromDebian(t *testing.T, ctx context.Context, arch string, img v1.Image) {
	t.Helper()
	root, err := DebianRoot(ctx, DefaultCacheDir, arch, iptablesPackages, nil)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := readEntries(img)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for p, e := range entries {
		if e.typ != tar.TypeReg || p == "/usr/local/bin/mesh-proxy" {
			continue
		}
		want, err := os.ReadFile(filepath.Join(root, p))
		if err != nil || !bytes.Equal(want, e.data) {
			t.Errorf("%s: %s is not Debian's %s file (%v)", arch, p, arch, err)
		}
		n++
	}
	if n < 20 {
		t.Errorf("%s: only %d files from Debian's packages; iptables, its extensions and libraries are more", arch, n)
	}
}
