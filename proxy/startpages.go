package proxy

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Start-up pages. Most of an idle proxy's RSS is its own executable, not
// its memory: the runtime and every package's init touch code, type data
// and the pcln table all over the binary at start, and the kernel maps
// each page touched together with its neighbours (fault-around, 64 KiB),
// so a proxy with an identity and a controller that just started has 15 MB
// of its 17 MB binary resident, of an RSS of 18 MB. Once started, what it
// runs (probes, scrapes, renewals, the garbage collector's stack scans)
// keeps about 7 MB of it mapped (issue 13's measurements). Those pages
// are clean and backed by the file: dropping them from the proxy's page
// tables once it is ready costs a minor fault for each page it touches
// again, and leaves RSS at what the proxy uses. The page cache keeps them,
// shared with every other process running the same executable on the
// node, so nothing is read from disk again.

// releaseStartupPages drops the resident pages of the executable's
// read-only private mappings (code, read-only data, the pcln table) from
// the process's page tables with MADV_DONTNEED. Writable mappings (data,
// bss) are left alone: their private copies hold what the program wrote.
// It returns how much of the executable was resident before and after, in
// bytes.
func releaseStartupPages() (before, after int64, err error) {
	exe, err := executableMappings()
	if err != nil {
		return 0, 0, err
	}
	if before, err = residentBytes(exe); err != nil {
		return 0, 0, err
	}
	for _, m := range exe {
		if !m.readOnly {
			continue
		}
		// No unsafe.Pointer: the range is only an address to the kernel.
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); e != 0 {
			return before, 0, fmt.Errorf("madvise %#x-%#x: %w", m.start, m.end, e)
		}
	}
	after, err = residentBytes(exe)
	return before, after, err
}

// mapping is one line of /proc/self/maps (proc(5)) that maps the
// executable.
type mapping struct {
	start, end uintptr
	readOnly   bool // not writable, and private: safe to drop
}

// executableMappings returns the mappings of /proc/self/exe's file, found
// by device and inode, so a renamed or deleted executable is found too.
func executableMappings() ([]mapping, error) {
	fi, err := os.Stat("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("executable: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("executable: no device and inode in %T", fi.Sys())
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, fmt.Errorf("executable mappings: %w", err)
	}
	defer f.Close()
	var out []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// address perms offset dev inode [path]
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if ino, err := strconv.ParseUint(fields[4], 10, 64); err != nil || ino != st.Ino {
			continue
		}
		if dev, ok := parseDev(fields[3]); !ok || dev != st.Dev {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("executable mappings: bad address range %q", fields[0])
		}
		perms := fields[1]
		out = append(out, mapping{
			start: uintptr(start), end: uintptr(end),
			readOnly: len(perms) == 4 && perms[1] == '-' && perms[3] == 'p',
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("executable mappings: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("executable mappings: none of device %d inode %d in /proc/self/maps", st.Dev, st.Ino)
	}
	return out, nil
}

// parseDev reads maps' "major:minor" in hex as a dev_t.
func parseDev(s string) (uint64, bool) {
	maj, min, ok := strings.Cut(s, ":")
	a, err1 := strconv.ParseUint(maj, 16, 32)
	b, err2 := strconv.ParseUint(min, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, false
	}
	return unix.Mkdev(uint32(a), uint32(b)), true
}

// residentBytes sums the Rss of the mappings in /proc/self/smaps.
func residentBytes(ms []mapping) (int64, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("resident pages: %w", err)
	}
	defer f.Close()
	starts := make(map[uintptr]bool, len(ms))
	for _, m := range ms {
		starts[m.start] = true
	}
	var total int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		// A mapping's header is its address range; its fields follow.
		if lo, _, ok := strings.Cut(line, "-"); ok && !strings.Contains(lo, ":") {
			if start, err := strconv.ParseUint(lo, 16, 64); err == nil {
				in = starts[uintptr(start)]
				continue
			}
		}
		if v, ok := strings.CutPrefix(line, "Rss:"); ok && in {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("resident pages: %q: %w", line, err)
			}
			total += kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("resident pages: %w", err)
	}
	return total, nil
}
