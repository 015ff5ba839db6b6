package image

import (
	"archive/tar"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// writeAndRead builds spec into a temporary tarball and reads it back the
// way a consumer would: by tag, from the file.
func writeAndRead(t *testing.T, spec Spec) (string, []string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "img.tar")
	if err := Write(out, spec); err != nil {
		t.Fatalf("Write: %v", err)
	}
	tag, err := name.NewTag(spec.Ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("read back %s: %v", out, err)
	}
	paths, err := Paths(img)
	if err != nil {
		t.Fatal(err)
	}
	return out, paths
}

func TestWriteReadBack(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "server")
	if err := os.WriteFile(bin, []byte("#!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	ext := filepath.Join(dir, "ext")
	if err := os.MkdirAll(ext, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ext, "a.so"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.so", filepath.Join(ext, "b.so")); err != nil {
		t.Fatal(err)
	}
	spec := Spec{
		Ref: "ghcr.io/mesh-dev/test:v1.2.3",
		Files: []File{
			{Path: "/usr/local/bin/server", Src: bin},
			{Path: "/usr/lib/ext", Src: ext},
			{Path: "/etc/motd", Data: []byte("hello\n")},
		},
		Symlinks:   []Symlink{{Path: "/bin/srv", Target: "../usr/local/bin/server"}},
		Dirs:       []string{"/tmp"},
		Entrypoint: []string{"/usr/local/bin/server"},
		Cmd:        []string{"-v"},
		User:       "2102:2102",
		Env:        []string{"A=b"},
		Labels:     map[string]string{"k": "v"},
	}
	out, paths := writeAndRead(t, spec)
	want := []string{
		"/bin/", "/bin/srv -> ../usr/local/bin/server", "/etc/", "/etc/motd",
		"/tmp/", "/usr/", "/usr/lib/", "/usr/lib/ext/", "/usr/lib/ext/a.so",
		"/usr/lib/ext/b.so -> a.so", "/usr/local/", "/usr/local/bin/", "/usr/local/bin/server",
	}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}

	tag, _ := name.NewTag(spec.Ref)
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(spec.Entrypoint, cf.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(spec.Cmd, cf.Config.Cmd); diff != "" {
		t.Errorf("cmd (-want +got):\n%s", diff)
	}
	if cf.Config.User != "2102:2102" || cf.OS != "linux" || cf.Architecture == "" {
		t.Errorf("config user=%q os=%q arch=%q", cf.Config.User, cf.OS, cf.Architecture)
	}
	if !slices.Equal(cf.Config.Env, spec.Env) || cf.Config.Labels["k"] != "v" {
		t.Errorf("env %v labels %v", cf.Config.Env, cf.Config.Labels)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v; want 1", len(layers), err)
	}
	if len(cf.RootFS.DiffIDs) != 1 {
		t.Errorf("rootfs diff IDs = %v", cf.RootFS.DiffIDs)
	}
	got, err := ReadFile(img, "/usr/local/bin/server")
	if err != nil || string(got) != "#!binary" {
		t.Errorf("server = %q, %v", got, err)
	}
	entries, _ := readEntries(img)
	if m := entries["/usr/local/bin/server"].mode; m != 0o755 {
		t.Errorf("server mode = %v, want 0755 from the host file", m)
	}
	if m := entries["/etc/motd"].mode; m != 0o644 {
		t.Errorf("motd mode = %v, want 0644", m)
	}
}

func TestBuildIsReproducible(t *testing.T) {
	spec := Spec{Ref: "example.com/a:v1", Files: []File{{Path: "/x", Data: []byte("x")}}}
	digests := map[string]bool{}
	for range 2 {
		img, err := Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests[d.String()] = true
	}
	if len(digests) != 1 {
		t.Errorf("two builds of one spec gave digests %v", digests)
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name    string
		spec    Spec
		wantErr error
		wantMsg string
	}{
		{name: "latest", spec: Spec{Ref: "ghcr.io/mesh-dev/x:latest"}, wantErr: ErrLatest},
		{name: "untagged", spec: Spec{Ref: "ghcr.io/mesh-dev/x"}, wantMsg: "tag"},
		{name: "relative path", spec: Spec{Ref: "example.com/b:v1", Files: []File{{Path: "etc/x", Data: nil}}}, wantMsg: "absolute"},
		{name: "missing host file", spec: Spec{Ref: "example.com/b:v1", Files: []File{{Src: "/nonexistent/file"}}}, wantErr: os.ErrNotExist},
		{
			name: "conflict",
			spec: Spec{Ref: "example.com/b:v1", Files: []File{
				{Path: "/x", Data: []byte("1")}, {Path: "/x", Data: []byte("2")},
			}},
			wantMsg: "added twice",
		},
		{
			name: "file under a file",
			spec: Spec{Ref: "example.com/b:v1", Files: []File{
				{Path: "/x", Data: []byte("1")}, {Path: "/x/y", Data: []byte("2")},
			}},
			wantMsg: "needed as a directory",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.spec)
			if err == nil {
				t.Fatal("Build succeeded, want an error")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantMsg != "" && !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %v, want it to mention %q", err, tc.wantMsg)
			}
		})
	}
}

func TestSharedFileAddedTwiceIsFine(t *testing.T) {
	spec := Spec{Ref: "example.com/b:v1", Files: []File{
		{Path: "/x", Data: []byte("1")}, {Path: "/x", Data: []byte("1")},
	}}
	if _, err := Build(spec); err != nil {
		t.Fatal(err)
	}
}

// TestLibraries resolves a dynamically linked program every Debian machine
// has; ls links libc, so the result must hold libc and the loader.
func TestLibraries(t *testing.T) {
	libs, err := Libraries("/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	var libc, loader bool
	for _, l := range libs {
		libc = libc || filepath.Base(l) == "libc.so.6"
		loader = loader || strings.HasPrefix(filepath.Base(l), "ld-linux")
	}
	if !libc || !loader {
		t.Errorf("Libraries(/bin/ls) = %v, want libc.so.6 and the ld-linux loader", libs)
	}
}

func TestLibrariesOfStaticAndNonELF(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(text, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{text, self} {
		libs, err := Libraries(p)
		if err != nil {
			t.Errorf("Libraries(%s): %v", p, err)
		}
		// The test binary may be dynamically linked (-race links libc);
		// either way nothing outside the loader's directories is reported.
		for _, l := range libs {
			if !filepath.IsAbs(l) {
				t.Errorf("Libraries(%s) reported relative path %q", p, l)
			}
		}
	}
	if libs, _ := Libraries(text); len(libs) != 0 {
		t.Errorf("Libraries(script) = %v, want none", libs)
	}
}

func TestProxyImageCarriesIptables(t *testing.T) {
	if _, err := os.Stat(xtablesMulti); err != nil {
		t.Fatalf("%s is missing: install Debian's iptables package (make deps)", xtablesMulti)
	}
	bin := filepath.Join(t.TempDir(), "mesh-proxy")
	if err := os.WriteFile(bin, []byte("proxy"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := Proxy("v9.9.9", bin)
	if spec.Ref != "ghcr.io/mesh-dev/mesh-proxy:v9.9.9" {
		t.Errorf("ref = %q", spec.Ref)
	}
	// The file tree is what matters here; TestWriteReadBack covers turning
	// a tree into an image, which is slow for 17 MB under the race detector.
	tr, err := spec.tree()
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range tr.entries {
		paths = append(paths, e.String())
	}
	for _, want := range []string{
		"/usr/local/bin/mesh-proxy",
		"/usr/sbin/xtables-nft-multi",
		"/usr/sbin/iptables -> xtables-nft-multi",
		"/usr/sbin/ip6tables-restore -> xtables-nft-multi",
		"/usr/lib/x86_64-linux-gnu/xtables/libxt_owner.so",
		"/usr/lib/x86_64-linux-gnu/xtables/libxt_REDIRECT.so -> libxt_NAT.so",
		"/usr/lib/x86_64-linux-gnu/xtables/libxt_NAT.so",
		"/lib64/ld-linux-x86-64.so.2",
	} {
		if !slices.Contains(paths, want) {
			t.Errorf("image lacks %q", want)
		}
	}
	for _, lib := range []string{"libc.so.6", "libxtables.so.12", "libnftnl.so.11", "libmnl.so.0"} {
		if !slices.ContainsFunc(paths, func(p string) bool { return filepath.Base(p) == lib }) {
			t.Errorf("image lacks library %s", lib)
		}
	}
}

// TestProxyImageRunsIptables unpacks the mesh-proxy image and runs its
// iptables, chrooted into the image in a fresh network namespace, with the
// extensions `mesh-proxy init` uses: proof that the libraries and extension
// modules resolved from the host are complete. It needs root (chroot,
// unshare).
func TestProxyImageRunsIptables(t *testing.T) {
	if os.Geteuid() != 0 {
		msg := "chroot and unshare need root"
		if os.Getenv("MESH_REQUIRE_ROOT_TESTS") == "1" {
			t.Fatal(msg + "; MESH_REQUIRE_ROOT_TESTS=1 forbids skipping it")
		}
		t.Skip(msg)
	}
	bin := filepath.Join(t.TempDir(), "mesh-proxy")
	if err := os.WriteFile(bin, []byte("proxy"), 0o755); err != nil {
		t.Fatal(err)
	}
	tr, err := Proxy("v9.9.9", bin).tree()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := unpack(tr, root); err != nil {
		t.Fatal(err)
	}
	script := `set -e
chroot "$1" /usr/sbin/iptables -t nat -N MESH_TEST
chroot "$1" /usr/sbin/iptables -t nat -A MESH_TEST -p tcp -m owner --uid-owner 2102 -j RETURN
chroot "$1" /usr/sbin/iptables -t nat -A MESH_TEST -p tcp -j REDIRECT --to-ports 4140
chroot "$1" /usr/sbin/ip6tables -t nat -N MESH_TEST
chroot "$1" /usr/sbin/iptables-save -t nat`
	out, err := exec.Command("unshare", "--net", "sh", "-c", script, "sh", root).CombinedOutput()
	if err != nil {
		t.Fatalf("iptables in the image: %v\n%s", err, out)
	}
	for _, want := range []string{"--uid-owner 2102 -j RETURN", "-j REDIRECT --to-ports 4140"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("iptables-save in the image lacks %q:\n%s", want, out)
		}
	}
}

// unpack writes the files of tr under dir (regular files, directories and
// symlinks: all that images built here hold).
func unpack(tr *tree, dir string) error {
	entries := tr.entries
	var err error
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names) // parents before children
	for _, n := range names {
		e := entries[n]
		p := filepath.Join(dir, n)
		switch e.typ {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			err = os.Symlink(e.target, p)
		case tar.TypeReg:
			data := e.data
			if e.src != "" {
				if data, err = os.ReadFile(e.src); err != nil {
					return err
				}
			}
			err = os.WriteFile(p, data, e.mode)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
