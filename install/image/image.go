// Package image builds container images FROM scratch around files taken from
// the host, and writes them as tarballs that `ctr -n k8s.io images import`
// (and `docker load`) read.
//
// It exists because the machines the project runs on have no Docker engine
// and no registry (see shared/notes/local-cluster.md): every image a test
// cluster runs, from the sandbox "pause" image to mesh-proxy, is built here
// and loaded into containerd directly.
package image

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"sort"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ErrLatest is returned for a reference tagged "latest" or not tagged at all:
// images the project ships carry a version tag so that pods with
// imagePullPolicy IfNotPresent run exactly what was loaded (DESIGN.md).
var ErrLatest = errors.New("image reference needs an explicit version tag, not latest")

// File is one entry copied into the image.
type File struct {
	// Path is the absolute path inside the image. Empty means the same path
	// as Src.
	Path string
	// Src is a host file or directory. Symlinks in Src itself are followed;
	// inside a directory, relative symlinks that stay within it are kept as
	// symlinks and others are followed. Empty means the entry is Data.
	Src string
	// Data is the content of the file when Src is empty.
	Data []byte
	// Mode holds the permission bits. Zero means the host file's bits, or
	// 0644 for Data.
	Mode fs.FileMode
	// Libs also copies every shared library an ELF file needs, and its
	// dynamic loader, to the paths where the host's loader finds them, so a
	// dynamically linked host program runs in a FROM-scratch image.
	// Non-ELF files are copied as they are.
	Libs bool
	// Root, when set, is a directory standing for the root of another
	// system, such as Debian packages of another architecture unpacked:
	// Src is an absolute path read under Root, Libs looks libraries up in
	// Root's loader directories, and every file lands at its path relative
	// to Root. Symlinks under Root must resolve inside it.
	Root string
}

// Symlink is a symbolic link inside the image.
type Symlink struct {
	// Path is the absolute path of the link.
	Path string
	// Target is what the link points to, usually relative to Path's directory.
	Target string
}

// Spec describes an image. The zero value of each optional field means the
// OCI default: no entrypoint, root user, no environment.
type Spec struct {
	// Ref is the full reference with a version tag, for example
	// ghcr.io/mesh-dev/mesh-proxy:v0.1.0.
	Ref string
	// Files are copied into the single layer, parents created as needed.
	Files []File
	// Symlinks are added after Files.
	Symlinks []Symlink
	// Dirs are extra empty directories, for example /tmp (made 1777).
	Dirs []string
	// Entrypoint and Cmd are the image's ENTRYPOINT and CMD.
	Entrypoint []string
	Cmd        []string
	// User is the default "uid[:gid]"; empty means root.
	User string
	// Env holds "KEY=value" pairs.
	Env []string
	// WorkingDir is the initial working directory; empty means /.
	WorkingDir string
	// Labels are the image config's labels.
	Labels map[string]string
	// Arch is the GOARCH-style architecture; empty means runtime.GOARCH.
	Arch string
}

// arch is the image's architecture: Arch, or the host's.
func (s Spec) arch() string {
	if s.Arch == "" {
		return runtime.GOARCH
	}
	return s.Arch
}

// ParseRef checks that ref is a valid reference with an explicit, non-latest
// tag.
func ParseRef(ref string) (name.Tag, error) {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	if tag.TagStr() == "latest" {
		return name.Tag{}, fmt.Errorf("image reference %q: %w", ref, ErrLatest)
	}
	return tag, nil
}

// Build assembles the image described by spec, reading host files now.
func Build(spec Spec) (v1.Image, error) {
	if _, err := ParseRef(spec.Ref); err != nil {
		return nil, err
	}
	t, err := spec.tree()
	if err != nil {
		return nil, err
	}
	data, err := t.tar()
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", spec.Ref, err)
	}
	// BestSpeed: the tarballs only travel to a local containerd, and the
	// default level triples the time of a CoreDNS-sized image.
	layer, err := tarball.LayerFromOpener(bytesOpener(data), tarball.WithCompressedCaching,
		tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", spec.Ref, err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	return withConfig(img, spec)
}

// tree collects the files of spec, reading host files now.
func (spec Spec) tree() (*tree, error) {
	t := newTree()
	for _, d := range spec.Dirs {
		if err := t.addDir(d); err != nil {
			return nil, err
		}
	}
	for _, f := range spec.Files {
		if err := t.addFile(f); err != nil {
			return nil, fmt.Errorf("image %s: %w", spec.Ref, err)
		}
	}
	for _, l := range spec.Symlinks {
		if err := t.addSymlink(l.Path, l.Target); err != nil {
			return nil, fmt.Errorf("image %s: %w", spec.Ref, err)
		}
	}
	return t, nil
}

// withConfig sets the runtime configuration on img, keeping the rootfs
// diff IDs that AppendLayers recorded.
func withConfig(img v1.Image, spec Spec) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", spec.Ref, err)
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = spec.arch()
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.Cmd = spec.Cmd
	cf.Config.User = spec.User
	cf.Config.Env = spec.Env
	cf.Config.WorkingDir = spec.WorkingDir
	cf.Config.Labels = spec.Labels
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", spec.Ref, err)
	}
	return img, nil
}

// Write builds spec and writes it to path as a docker-archive tarball
// tagged with spec.Ref, the format `ctr images import` and `docker load`
// accept.
func Write(path string, spec Spec) error {
	img, err := Build(spec)
	if err != nil {
		return err
	}
	tag, err := ParseRef(spec.Ref)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		return fmt.Errorf("image %s: write %s: %w", spec.Ref, path, err)
	}
	return nil
}

// Paths lists every path in img's layers, sorted, with a trailing "/" on
// directories and " -> target" on symlinks. Tests and `hack/images -list`
// use it to show what an image holds.
func Paths(img v1.Image) ([]string, error) {
	entries, err := readEntries(img)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.String())
	}
	sort.Strings(out)
	return out, nil
}
