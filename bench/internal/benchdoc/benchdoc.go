// Package benchdoc is what the side-by-side benchmarks share to report a
// run: the machine it ran on, /proc readings, and the generated block of
// docs/benchmarks.md they rewrite with --write.
package benchdoc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Host describes the machine for a report.
type Host struct {
	CPUs             int
	CPUModel, Kernel string
	MemTotal         float64 // bytes
	GoVersion        string
	Commit           string // of the checkout the benchmark runs from
}

// DescribeHost reads the machine's CPU, kernel and memory, and the commit
// of the checkout, noting uncommitted changes under any of watched: the
// paths whose code the benchmark measures.
func DescribeHost(ctx context.Context, watched ...string) Host {
	h := Host{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), CPUModel: "unknown CPU", Kernel: "unknown kernel"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if st, err := ProcStatus("/proc/meminfo"); err == nil {
		h.MemTotal = st["MemTotal"]
	}
	h.Commit = "unknown commit"
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		h.Commit = "commit " + strings.TrimSpace(string(out))
		dirty, err := exec.CommandContext(ctx, "git", append([]string{"status", "--porcelain", "--"}, watched...)...).Output()
		if err == nil && len(strings.TrimSpace(string(dirty))) > 0 {
			h.Commit += " + uncommitted changes in " + strings.Join(watched, ", ")
		}
	}
	return h
}

// ProcStatus reads the kB fields of a file like /proc/PID/status or
// /proc/meminfo, in bytes.
func ProcStatus(path string) (map[string]float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		name, rest, ok := strings.Cut(line, ":")
		f := strings.Fields(rest)
		if !ok || len(f) != 2 || f[1] != "kB" {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			out[name] = v * 1024
		}
	}
	return out, nil
}

// Block is a generated block of a markdown file: what lies between its
// markers belongs to the benchmark that writes it.
type Block struct {
	Begin, End string
	// Heading starts the section the block is appended under when the
	// file has none; "" appends the block alone.
	Heading string
}

// marker returns the index of m in doc where it is a whole marker, or -1:
// one block's marker may begin another's ("<!-- BEGIN bench-mesh" and
// "<!-- BEGIN bench-meshpath"), so a match followed by a character that
// could continue the name does not count.
func marker(doc, m string) int {
	for at := 0; ; {
		i := strings.Index(doc[at:], m)
		if i < 0 {
			return -1
		}
		i += at
		if end := i + len(m); end == len(doc) || !continuesName(doc[end]) {
			return i
		}
		at = i + 1
	}
}

func continuesName(c byte) bool {
	return c == '-' || c == '_' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// Update replaces b in the file at path with block, which must start with
// b.Begin and end with b.End, or appends it when the file has none. The
// file is replaced atomically, keeping its mode.
func (b Block) Update(path, block string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	doc := string(raw)
	i, j := marker(doc, b.Begin), marker(doc, b.End)
	switch {
	case i >= 0 && j > i:
		doc = doc[:i] + block + doc[j+len(b.End):]
	case i < 0 && j < 0 && b.Heading != "":
		doc = strings.TrimRight(doc, "\n") + "\n\n" + b.Heading + "\n\n" + block + "\n"
	case i < 0 && j < 0:
		doc = strings.TrimRight(doc, "\n") + "\n\n" + block + "\n"
	default:
		return fmt.Errorf("%s: the %q and %q markers are out of order", path, b.Begin, b.End)
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".benchmarks-*.md")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(doc); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(st.Mode().Perm()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
