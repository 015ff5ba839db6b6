package image

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ErrLibraryNotFound is returned when a shared library an ELF file needs is
// in none of the directories the host's dynamic loader searches.
var ErrLibraryNotFound = errors.New("shared library not found")

// Libraries returns the host paths of the dynamic loader and every shared
// library the ELF file at path needs, transitively, sorted. It returns nil for
// a static binary or a file that is not ELF.
//
// It follows the loader's own rules closely enough for Debian's packaged
// programs: DT_RUNPATH/DT_RPATH (with $ORIGIN), then the directories of
// /etc/ld.so.conf, then the default system directories. Each library is
// reported at the path where it was found, which is the path the loader in a
// FROM-scratch image will look at too.
func Libraries(path string) ([]string, error) {
	return LibrariesIn("", path)
}

// LibrariesIn is Libraries for a program of the system whose root is the
// host directory root (empty means the host's own /): path and the results
// are absolute paths of that system, read under root. Its loader
// directories come from root/etc/ld.so.conf, or from root/etc/ld.so.conf.d
// when unpacked packages have no ld.so.conf (libc-bin ships that file, libc6
// the directory).
func LibrariesIn(root, path string) ([]string, error) {
	r := sysroot(root)
	dirs := r.searchDirs()
	seen := map[string]bool{}
	queue := []string{path}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		host, err := r.host(p)
		if err != nil {
			return nil, err
		}
		needed, interp, rpath, err := dynamicInfo(host)
		if err != nil {
			return nil, err
		}
		if interp != "" {
			if _, err := r.stat(interp); err != nil {
				return nil, fmt.Errorf("%s needs its loader %s: %w: %v", p, interp, ErrLibraryNotFound, err)
			}
			seen[interp] = true
		}
		for _, lib := range needed {
			found, err := r.findLibrary(lib, expandOrigin(rpath, p), dirs)
			if err != nil {
				return nil, fmt.Errorf("%s needs %s: %w", p, lib, err)
			}
			if !seen[found] {
				seen[found] = true
				queue = append(queue, found)
			}
		}
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// sysroot maps the absolute paths of a system to host paths: itself when
// empty (the host), else under that directory.
type sysroot string

// host returns where p of the system is on the host. Under a root, p must
// resolve (symlinks followed) inside the root: an absolute link out of
// unpacked packages would pick up the host's file of another architecture.
func (r sysroot) host(p string) (string, error) {
	if r == "" {
		return p, nil
	}
	h := filepath.Join(string(r), p)
	real, err := filepath.EvalSymlinks(h)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", h, err)
	}
	rootReal, err := filepath.EvalSymlinks(string(r))
	if err != nil {
		return "", err
	}
	if !inside(rootReal, real) {
		return "", fmt.Errorf("%s resolves to %s, outside %s", h, real, r)
	}
	return real, nil
}

func (r sysroot) stat(p string) (os.FileInfo, error) {
	h, err := r.host(p)
	if err != nil {
		return nil, err
	}
	return os.Stat(h)
}

// dynamicInfo reads an ELF file's DT_NEEDED entries, program interpreter and
// run paths. A non-ELF file has none.
func dynamicInfo(path string) (needed []string, interp string, rpath []string, err error) {
	if isELF, err := hasELFMagic(path); err != nil || !isELF {
		return nil, "", nil, err
	}
	f, err := elf.Open(path)
	if err != nil {
		return nil, "", nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return nil, "", nil, fmt.Errorf("read %s interpreter: %w", path, err)
		}
		interp = strings.TrimRight(string(b), "\x00")
	}
	if f.Section(".dynamic") == nil {
		return nil, interp, nil, nil
	}
	if needed, err = f.ImportedLibraries(); err != nil {
		return nil, "", nil, fmt.Errorf("read %s: %w", path, err)
	}
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, _ := f.DynString(tag) // absent tags are not an error worth reporting
		for _, v := range vals {
			rpath = append(rpath, filepath.SplitList(v)...)
		}
	}
	return needed, interp, rpath, nil
}

func hasELFMagic(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	magic := make([]byte, len(elf.ELFMAG))
	if _, err := io.ReadFull(f, magic); err != nil {
		return false, nil // shorter than an ELF header: not ELF
	}
	return string(magic) == elf.ELFMAG, nil
}

func expandOrigin(dirs []string, file string) []string {
	origin := filepath.Dir(file)
	out := make([]string, 0, len(dirs))
	for _, d := range dirs {
		d = strings.ReplaceAll(d, "${ORIGIN}", origin)
		out = append(out, strings.ReplaceAll(d, "$ORIGIN", origin))
	}
	return out
}

func (r sysroot) findLibrary(lib string, rpath, dirs []string) (string, error) {
	if strings.Contains(lib, "/") {
		if _, err := r.stat(lib); err != nil {
			return "", fmt.Errorf("%w: %v", ErrLibraryNotFound, err)
		}
		return lib, nil
	}
	for _, d := range append(rpath, dirs...) {
		p := filepath.Join(d, lib)
		if info, err := r.stat(p); err == nil && info.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w in %s%s", ErrLibraryNotFound, strings.Join(append(rpath, dirs...), ":"), r.under())
}

func (r sysroot) under() string {
	if r == "" {
		return ""
	}
	return " under " + string(r)
}

// searchDirs returns the loader's directories: /etc/ld.so.conf (with its
// include lines) first, then the defaults glibc always searches.
func (r sysroot) searchDirs() []string {
	dirs := r.readLdSoConf("/etc/ld.so.conf", 0)
	if _, err := r.stat("/etc/ld.so.conf"); r != "" && err != nil {
		dirs = r.include("/etc/ld.so.conf.d/*.conf", 0)
	}
	return append(dirs, "/lib", "/usr/lib", "/lib64", "/usr/lib64")
}

// include reads the files an ld.so.conf include pattern matches, in order.
func (r sysroot) include(pattern string, depth int) []string {
	matches, _ := filepath.Glob(filepath.Join(string(r), pattern)) // only ErrBadPattern, which finds nothing
	sort.Strings(matches)
	var dirs []string
	for _, m := range matches {
		rel, err := filepath.Rel(string(r), m)
		if r == "" {
			rel, err = m, nil
		}
		if err == nil {
			dirs = append(dirs, r.readLdSoConf("/"+strings.TrimPrefix(rel, "/"), depth+1)...)
		}
	}
	return dirs
}

// readLdSoConf parses one ld.so.conf file of the system; depth stops
// include loops.
func (r sysroot) readLdSoConf(path string, depth int) []string {
	if depth > 4 {
		return nil
	}
	h, err := r.host(path)
	if err != nil {
		return nil // a missing ld.so.conf means only the default directories
	}
	f, err := os.Open(h)
	if err != nil {
		return nil
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		switch {
		case line == "":
		case strings.HasPrefix(line, "include "):
			pattern := strings.TrimSpace(strings.TrimPrefix(line, "include "))
			if !filepath.IsAbs(pattern) {
				pattern = filepath.Join(filepath.Dir(path), pattern)
			}
			dirs = append(dirs, r.include(pattern, depth)...)
		case filepath.IsAbs(line):
			dirs = append(dirs, line)
		}
	}
	return dirs
}
