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
	dirs := searchDirs()
	seen := map[string]bool{}
	queue := []string{path}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		needed, interp, rpath, err := dynamicInfo(p)
		if err != nil {
			return nil, err
		}
		if interp != "" {
			seen[interp] = true
		}
		for _, lib := range needed {
			found, err := findLibrary(lib, expandOrigin(rpath, p), dirs)
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

func findLibrary(lib string, rpath, dirs []string) (string, error) {
	if strings.Contains(lib, "/") {
		if _, err := os.Stat(lib); err != nil {
			return "", fmt.Errorf("%w: %v", ErrLibraryNotFound, err)
		}
		return lib, nil
	}
	for _, d := range append(rpath, dirs...) {
		p := filepath.Join(d, lib)
		if info, err := os.Stat(p); err == nil && info.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w in %s", ErrLibraryNotFound, strings.Join(append(rpath, dirs...), ":"))
}

// searchDirs returns the loader's directories: /etc/ld.so.conf (with its
// include lines) first, then the defaults glibc always searches.
func searchDirs() []string {
	dirs := readLdSoConf("/etc/ld.so.conf", 0)
	return append(dirs, "/lib", "/usr/lib", "/lib64", "/usr/lib64")
}

// readLdSoConf parses one ld.so.conf file; depth stops include loops.
func readLdSoConf(path string, depth int) []string {
	if depth > 4 {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil // a missing ld.so.conf means only the default directories
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
			matches, _ := filepath.Glob(pattern) // only ErrBadPattern, which finds nothing
			sort.Strings(matches)
			for _, m := range matches {
				dirs = append(dirs, readLdSoConf(m, depth+1)...)
			}
		case filepath.IsAbs(line):
			dirs = append(dirs, line)
		}
	}
	return dirs
}
