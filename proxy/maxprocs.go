package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Runtime sizing. A proxy spends most of its CPU waking up: with
// GOMAXPROCS at the node's core count, idle Ps spin looking for work on
// every wake-up, and docs/benchmarks.md measured 25–30 % less CPU per
// request at GOMAXPROCS=1 (issue 13). So the proxy runs on as many Ps as
// its container may use CPUs, rounded up, and on one when it has no limit:
// a sidecar without a CPU limit is still meant to be small.
//
// Go 1.25 and later already default GOMAXPROCS to the cgroup's CPU limit,
// and follow it when it changes, but never below 2. The proxy keeps that
// default whenever it agrees, and sets GOMAXPROCS itself only to go below
// it: a limit of one CPU or less, or none at all.

// sizeRuntime sets GOMAXPROCS as chooseMaxProcs decides for maxProcs
// (Config.MaxProcs), the garbage collector's GOGC as chooseGCPercent
// decides, and logs the runtime's sizing: GOMAXPROCS, why, the CPU limit,
// GOGC and GOMEMLIMIT. It runs once, before the proxy starts anything.
func sizeRuntime(maxProcs int, log *slog.Logger) {
	limit, hasLimit, err := cgroupCPULimit(os.DirFS("/"))
	if err != nil {
		log.Warn("CPU limit unknown: the cgroup could not be read", "err", err)
	}
	_, envSet := os.LookupEnv("GOMAXPROCS")
	n, set, why := chooseMaxProcs(maxProcsInput{
		flag: maxProcs, envSet: envSet, limit: limit, hasLimit: hasLimit,
		current: runtime.GOMAXPROCS(0), numCPU: runtime.NumCPU(),
	})
	if set {
		runtime.GOMAXPROCS(n)
	}
	attrs := []any{"gomaxprocs", n, "reason", string(why)}
	if hasLimit {
		attrs = append(attrs, "cpu_limit", limit)
	}
	_, gogcSet := os.LookupEnv("GOGC")
	if pct, set := chooseGCPercent(gogcSet); set {
		debug.SetGCPercent(pct)
		attrs = append(attrs, "gogc", pct)
	}
	// SetMemoryLimit with a negative value only reads the limit.
	if m := debug.SetMemoryLimit(-1); m != math.MaxInt64 {
		attrs = append(attrs, "gomemlimit_bytes", m)
	}
	log.Info("runtime sizing", attrs...)
}

// proxyGCPercent is the proxy's GOGC. A proxy's live heap is small (about
// 2.5 MB on the local cluster: certificates, the controller's streams,
// metric series) and it allocates a few hundred bytes per request, so the
// runtime's default of 100, with its 4 MB minimum heap goal, lets the heap
// grow to twice what it holds between collections, and the pages it grew
// into stay resident until the scavenger returns them. At 50 the heap goal
// is one and a half times the live heap (2 MB at least); the collections
// this doubles cost little at that allocation rate: at 500 RPS, about one
// every few seconds, each well under a millisecond.
const proxyGCPercent = 50

// chooseGCPercent returns the GOGC the proxy sets, and false when it sets
// none because the GOGC environment variable chose one (envSet), which
// the runtime has obeyed already.
func chooseGCPercent(envSet bool) (pct int, set bool) {
	if envSet {
		return 0, false
	}
	return proxyGCPercent, true
}

// maxProcsReason says where the proxy's GOMAXPROCS came from, in its start
// log line.
type maxProcsReason string

const (
	fromFlag        maxProcsReason = "--max-procs"
	fromEnvironment maxProcsReason = "GOMAXPROCS environment variable"
	fromCgroup      maxProcsReason = "cgroup cpu.max"
	fromGoRuntime   maxProcsReason = "the Go runtime's cgroup limit"
	fromNoLimit     maxProcsReason = "no CPU limit"
)

// maxProcsInput is what choosing GOMAXPROCS depends on, gathered by the
// caller so that the choice is a pure function.
type maxProcsInput struct {
	flag int // --max-procs; 0: automatic
	// envSet is whether the GOMAXPROCS variable is set, in which case the
	// runtime already obeyed it.
	envSet bool
	// limit is the cgroup v2 CPU limit in CPUs; hasLimit false when none
	// was found.
	limit    float64
	hasLimit bool
	// current is runtime.GOMAXPROCS(0) at start, the runtime's default;
	// numCPU is runtime.NumCPU().
	current, numCPU int
}

// chooseMaxProcs returns the GOMAXPROCS the proxy should run with, whether
// it differs from the runtime's current value (so it must be set), and why.
func chooseMaxProcs(in maxProcsInput) (n int, set bool, why maxProcsReason) {
	switch {
	case in.flag > 0:
		return in.flag, in.flag != in.current, fromFlag
	case in.envSet:
		return in.current, false, fromEnvironment
	case in.hasLimit:
		n = min(max(int(math.Ceil(in.limit)), 1), in.numCPU)
		return n, n != in.current, fromCgroup
	case in.current < in.numCPU:
		// The runtime saw a limit this file does not read (cgroup v1):
		// its value is the limit, rounded up to at least 2.
		return in.current, false, fromGoRuntime
	default:
		return 1, in.current != 1, fromNoLimit
	}
}

// cgroupCPULimit returns the CPU bandwidth limit of the calling process's
// cgroup v2, in CPUs: the lowest quota/period of cpu.max in its cgroup and
// every ancestor up to the mount point, since any of them throttles it.
// fsys is the root file system (os.DirFS("/")), so that tests can give a
// directory of their own. ok is false when no level sets a limit ("max")
// or the process is in no cgroup v2 (cgroup v1 nodes, no /sys/fs/cgroup).
func cgroupCPULimit(fsys fs.FS) (limit float64, ok bool, err error) {
	cgroupPath, found, err := v2CgroupPath(fsys)
	if err != nil || !found {
		return 0, false, err
	}
	root, mountPoint, found, err := cgroup2Mount(fsys)
	if err != nil || !found {
		return 0, false, err
	}
	// The process's cgroup path is relative to the hierarchy's root; the
	// mount shows the hierarchy from root on (with a cgroup namespace
	// both are "/").
	rel, under := strings.CutPrefix(cgroupPath, root)
	if !under || (rel != "" && root != "/" && !strings.HasPrefix(rel, "/")) {
		return 0, false, fmt.Errorf("cgroup %s is outside the mounted cgroup2 hierarchy %s", cgroupPath, root)
	}
	top := strings.TrimPrefix(mountPoint, "/")
	dir := path.Join(top, rel)
	for {
		l, has, err := readCPUMax(fsys, path.Join(dir, "cpu.max"))
		if err != nil {
			return 0, false, err
		}
		if has && (!ok || l < limit) {
			limit, ok = l, true
		}
		if dir == top || dir == "." || dir == "" {
			return limit, ok, nil
		}
		dir = path.Dir(dir)
	}
}

// v2CgroupPath reads the process's cgroup v2 path from /proc/self/cgroup,
// the line "0::/path" (cgroups(7)); found is false on a host of cgroup v1
// only.
func v2CgroupPath(fsys fs.FS) (p string, found bool, err error) {
	b, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("cgroup: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if p, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "0::"); ok {
			return p, true, nil
		}
	}
	return "", false, nil
}

// cgroup2Mount finds the cgroup2 file system in /proc/self/mountinfo
// (proc(5)): the root of the hierarchy it shows (field 4) and where it is
// mounted (field 5).
func cgroup2Mount(fsys fs.FS) (root, mountPoint string, found bool, err error) {
	b, err := fs.ReadFile(fsys, "proc/self/mountinfo")
	if errors.Is(err, fs.ErrNotExist) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("cgroup: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// The optional fields end at "-"; the file system type follows.
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != "cgroup2" {
			continue
		}
		return unescapeMountinfo(fields[3]), unescapeMountinfo(fields[4]), true, nil
	}
	return "", "", false, sc.Err()
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// readCPUMax reads one cgroup's cpu.max, "$MAX $PERIOD" in microseconds
// with "max" for no limit (the kernel's cgroup-v2.rst). has is false for
// "max" and for a cgroup without the file (the root, or no cpu
// controller).
func readCPUMax(fsys fs.FS, name string) (limit float64, has bool, err error) {
	b, err := fs.ReadFile(fsys, name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("cgroup: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 0, false, fmt.Errorf("cgroup: %s: want \"quota period\", got %q", name, b)
	}
	if fields[0] == "max" {
		return 0, false, nil
	}
	quota, err1 := strconv.ParseUint(fields[0], 10, 64)
	period, err2 := strconv.ParseUint(fields[1], 10, 64)
	if err1 != nil || err2 != nil || quota == 0 || period == 0 {
		return 0, false, fmt.Errorf("cgroup: %s: want two positive numbers of microseconds, got %q", name, b)
	}
	return float64(quota) / float64(period), true, nil
}
