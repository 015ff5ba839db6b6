package image

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestWriteIndex writes a two-variant archive twice and reads it back: the
// bytes repeat, the variants keep their platforms and files, and each
// variant is the image Build makes of its spec (so a variant's digest is the
// one a single-architecture tarball of the same spec had).
func TestWriteIndex(t *testing.T) {
	specs := []Spec{
		{Ref: "ghcr.io/mesh-dev/t:v1", Arch: "amd64", Files: []File{{Path: "/a", Data: []byte("amd64")}}, User: "1:1"},
		{Ref: "ghcr.io/mesh-dev/t:v1", Arch: "arm64", Files: []File{{Path: "/a", Data: []byte("arm64")}}, User: "1:1"},
	}
	dir := t.TempDir()
	var tars [][]byte
	for _, n := range []string{"1.tar", "2.tar"} {
		p := filepath.Join(dir, n)
		if err := WriteIndex(p, specs...); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		tars = append(tars, b)
	}
	if !bytes.Equal(tars[0], tars[1]) {
		t.Error("two writes of one index differ")
	}
	idx, ann, err := ReadIndex(filepath.Join(dir, "1.tar"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if ann[AnnotationImageName] != "ghcr.io/mesh-dev/t:v1" || ann[AnnotationRefName] != "v1" {
		t.Errorf("annotations %v", ann)
	}
	arches, imgs, err := Platforms(idx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(arches, []string{"amd64", "arm64"}) {
		t.Fatalf("variants %q", arches)
	}
	for i, s := range specs {
		img := imgs[s.Arch]
		got, err := ReadFile(img, "/a")
		if err != nil || string(got) != s.Arch {
			t.Errorf("%s: /a = %q, %v", s.Arch, got, err)
		}
		alone, err := Build(specs[i])
		if err != nil {
			t.Fatal(err)
		}
		d1, _ := alone.Digest()
		d2, _ := img.Digest()
		if d1 != d2 {
			t.Errorf("%s: variant %s, but Build of its spec is %s", s.Arch, d2, d1)
		}
	}
}

func TestIndexErrors(t *testing.T) {
	a := Spec{Ref: "ghcr.io/mesh-dev/t:v1", Arch: "amd64"}
	for _, tc := range []struct {
		name  string
		specs []Spec
		want  string
	}{
		{"none", nil, "no images"},
		{"two refs", []Spec{a, {Ref: "ghcr.io/mesh-dev/u:v1", Arch: "arm64"}}, "one index is one reference"},
		{"one arch twice", []Spec{a, a}, "two images for amd64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Index(tc.specs...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

// TestLibrariesInRoot resolves a program of a fake system unpacked in a
// directory, as Debian's packages of another architecture are: libraries
// come from the root's ld.so.conf.d, paths are the system's, and a symlink
// out of the root is refused.
func TestLibrariesInRoot(t *testing.T) {
	self, err := os.ReadFile("/bin/ls") // any dynamically linked host program
	if err != nil {
		t.Fatal(err)
	}
	hostLibs, err := Libraries("/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	write := func(p string, b []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("/usr/bin/ls", self)
	write("/etc/ld.so.conf.d/x.conf", []byte("# the fake system's own directory\n/opt/libs\n"))
	for _, l := range hostLibs {
		b, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(filepath.Base(l), "ld-linux") {
			write(l, b) // the loader stays at its absolute path
		} else {
			write("/opt/libs/"+filepath.Base(l), b)
		}
	}
	got, err := LibrariesIn(root, "/usr/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	base := func(ps []string) []string {
		var out []string
		for _, p := range ps {
			if b := filepath.Base(p); !slices.Contains(out, b) {
				out = append(out, b)
			}
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(base(got), base(hostLibs)) {
		t.Errorf("LibrariesIn = %q, want the libraries of the host's %q", got, hostLibs)
	}
	for _, l := range got {
		if !strings.HasPrefix(l, "/opt/libs/") && !strings.Contains(l, "ld-linux") {
			t.Errorf("library %s not from the root's ld.so.conf.d directory", l)
		}
	}

	// A library linking out of the root must not pick up the host's file.
	for _, l := range got {
		if strings.HasPrefix(l, "/opt/libs/libc.so") {
			os.Remove(filepath.Join(root, l))
			if err := os.Symlink("/usr/lib/x86_64-linux-gnu/libc.so.6", filepath.Join(root, l)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := LibrariesIn(root, "/usr/bin/ls"); err == nil {
		t.Error("LibrariesIn followed a symlink out of the root")
	}
}
