package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// entry is one node of the image's file tree.
type entry struct {
	name   string // clean absolute path in the image
	typ    byte   // tar.TypeDir, tar.TypeReg or tar.TypeSymlink
	mode   fs.FileMode
	src    string // host file to read for a regular file with nil data
	data   []byte
	target string // symlink target
}

func (e entry) String() string {
	switch e.typ {
	case tar.TypeDir:
		return e.name + "/"
	case tar.TypeSymlink:
		return e.name + " -> " + e.target
	}
	return e.name
}

// same reports whether two entries for one path describe the same thing, so
// that adding a shared library twice (two binaries need libc) is no conflict.
func (e entry) same(o entry) bool {
	return e.typ == o.typ && e.target == o.target && e.src == o.src &&
		bytes.Equal(e.data, o.data) && e.mode == o.mode
}

// tree collects entries by path. It is used from one goroutine.
type tree struct {
	entries map[string]entry
}

func newTree() *tree { return &tree{entries: map[string]entry{}} }

// cleanPath makes p an absolute, clean image path.
func cleanPath(p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("path %q in the image must be absolute", p)
	}
	return path.Clean(p), nil
}

func (t *tree) add(e entry) error {
	if e.name == "/" {
		return nil
	}
	if err := t.addDir(path.Dir(e.name)); err != nil {
		return err
	}
	if old, ok := t.entries[e.name]; ok {
		if old.same(e) || (old.typ == tar.TypeDir && e.typ == tar.TypeDir) {
			return nil
		}
		return fmt.Errorf("%s: added twice, as %s and as %s", e.name, old, e)
	}
	t.entries[e.name] = e
	return nil
}

// addDir adds p and its parents as 0755 directories; /tmp gets 1777 so that
// non-root programs can make temporary files.
func (t *tree) addDir(p string) error {
	p, err := cleanPath(p)
	if err != nil {
		return err
	}
	if p == "/" {
		return nil
	}
	if old, ok := t.entries[p]; ok {
		if old.typ != tar.TypeDir {
			return fmt.Errorf("%s: needed as a directory but added as %s", p, old)
		}
		return nil
	}
	mode := fs.FileMode(0o755)
	if p == "/tmp" {
		mode = 0o777 | fs.ModeSticky
	}
	return t.add(entry{name: p, typ: tar.TypeDir, mode: mode})
}

func (t *tree) addSymlink(p, target string) error {
	p, err := cleanPath(p)
	if err != nil {
		return err
	}
	if target == "" {
		return fmt.Errorf("symlink %s: empty target", p)
	}
	return t.add(entry{name: p, typ: tar.TypeSymlink, mode: 0o777, target: target})
}

// addFile adds f: data, a host file, or a host directory tree.
func (t *tree) addFile(f File) error {
	dst := f.Path
	if dst == "" {
		dst = f.Src
	}
	dst, err := cleanPath(dst)
	if err != nil {
		return err
	}
	if f.Src == "" {
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		return t.add(entry{name: dst, typ: tar.TypeReg, mode: mode, data: f.Data})
	}
	r := sysroot(f.Root)
	if r != "" && !path.IsAbs(f.Src) {
		return fmt.Errorf("copy %s: a path under %s must be absolute", f.Src, r)
	}
	info, err := r.stat(f.Src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", f.Src, err)
	}
	if info.IsDir() {
		return t.addHostDir(dst, f)
	}
	return t.addHostFile(dst, f.Src, f.Mode, f.Libs, r)
}

// addHostFile copies the file src of the system r (following symlinks) to
// dst and, with libs, the shared libraries it needs.
func (t *tree) addHostFile(dst, src string, mode fs.FileMode, libs bool, r sysroot) error {
	host, err := r.host(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	info, err := os.Stat(host)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("copy %s: not a regular file", src)
	}
	if mode == 0 {
		mode = info.Mode().Perm()
	}
	if err := t.add(entry{name: dst, typ: tar.TypeReg, mode: mode, src: host}); err != nil {
		return err
	}
	if !libs {
		return nil
	}
	deps, err := LibrariesIn(string(r), src)
	if err != nil {
		return err
	}
	for _, d := range deps {
		if err := t.addHostFile(d, d, 0, false, r); err != nil {
			return err
		}
	}
	return nil
}

// addHostDir copies the directory f.Src (under f.Root) to dst. Relative
// symlinks that stay inside the directory are kept (iptables' extension
// directory links libxt_state.so to libxt_conntrack.so); any other symlink
// is followed.
func (t *tree) addHostDir(dst string, f File) error {
	r := sysroot(f.Root)
	root, err := r.host(filepath.Clean(f.Src))
	if err != nil {
		return err
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		target := path.Join(dst, filepath.ToSlash(rel))
		switch {
		case d.IsDir():
			return t.addDir(target)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if inside(root, filepath.Join(filepath.Dir(p), link)) && !filepath.IsAbs(link) {
				return t.addSymlink(target, filepath.ToSlash(link))
			}
		}
		// The file's path in its system, for its libraries' $ORIGIN.
		return t.addHostFile(target, filepath.Join(filepath.Clean(f.Src), rel), 0, f.Libs, r)
	})
}

// inside reports whether p is root or below it.
func inside(root, p string) bool {
	rel, err := filepath.Rel(root, filepath.Clean(p))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// tar writes the tree as an uncompressed, reproducible tar stream: sorted
// paths, owner root, fixed times.
func (t *tree) tar() ([]byte, error) {
	names := make([]string, 0, len(t.entries))
	for n := range t.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		if err := writeEntry(tw, t.entries[n]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeEntry(tw *tar.Writer, e entry) error {
	hdr := &tar.Header{
		Typeflag: e.typ,
		Name:     strings.TrimPrefix(e.name, "/"),
		Mode:     int64(e.mode.Perm()),
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatPAX,
	}
	if e.mode&fs.ModeSticky != 0 {
		hdr.Mode |= 0o1000
	}
	data := e.data
	switch e.typ {
	case tar.TypeDir:
		hdr.Name += "/"
	case tar.TypeSymlink:
		hdr.Linkname = e.target
	case tar.TypeReg:
		if e.src != "" {
			var err error
			if data, err = os.ReadFile(e.src); err != nil {
				return fmt.Errorf("copy %s: %w", e.src, err)
			}
		}
		hdr.Size = int64(len(data))
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", e.name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("%s: %w", e.name, err)
	}
	return nil
}

func bytesOpener(b []byte) tarball.Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// readEntries lists the entries of every layer of img, later layers
// overriding earlier ones (no whiteouts: images built here have one layer).
func readEntries(img v1.Image) (map[string]entry, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	out := map[string]entry{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, err
		}
		err = readLayer(rc, out)
		rc.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func readLayer(r io.Reader, out map[string]entry) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean("/" + hdr.Name)
		e := entry{name: name, typ: hdr.Typeflag, mode: fs.FileMode(hdr.Mode).Perm(), target: hdr.Linkname}
		if hdr.Typeflag == tar.TypeReg {
			if e.data, err = io.ReadAll(tr); err != nil {
				return err
			}
		}
		out[name] = e
	}
}

// ReadFile returns the content of the regular file p in img.
func ReadFile(img v1.Image, p string) ([]byte, error) {
	entries, err := readEntries(img)
	if err != nil {
		return nil, err
	}
	e, ok := entries[path.Clean(p)]
	if !ok || e.typ != tar.TypeReg {
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	return e.data, nil
}
