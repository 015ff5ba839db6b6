package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cpuTime returns the CPU time process pid has used, user and system, all
// its threads: its process CPU clock, which clock_getcpuclockid(3) names
// and any process may read. It counts nanoseconds, where /proc's utime and
// stime count 10 ms ticks: a row's share of a few percent needs the finer
// one when rows are short.
func cpuTime(pid int) (time.Duration, error) {
	// The kernel's make_process_cpuclock(pid, CPUCLOCK_SCHED): the pid's
	// complement shifted past the 3 bits of the clock type, 2.
	clock := int32(^uint32(pid)<<3 | 2)
	var ts unix.Timespec
	if err := unix.ClockGettime(clock, &ts); err != nil {
		return 0, fmt.Errorf("CPU clock of process %d: %w", pid, err)
	}
	return time.Duration(ts.Nano()), nil
}

// userHZ is the unit of /proc/stat's times (USER_HZ, sysconf
// _SC_CLK_TCK): 100 on every Linux architecture the mesh builds for.
const userHZ = 100

// busyTicks is the whole machine's busy time from /proc/stat: user, nice,
// system, irq, softirq and steal, in ticks summed over its CPUs.
func busyTicks() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += v
	}
	return busy, nil
}

// children returns the pids whose parent is pid: an nginx master's
// workers.
func children(pid int) ([]int, error) {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		if child, err := strconv.Atoi(filepath.Base(filepath.Dir(path))); err == nil {
			out = append(out, child)
		}
	}
	return out, nil
}
