package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mesh-dev/mesh/bench/internal/benchdoc"
)

// userHZ is the unit of the CPU times in /proc (USER_HZ, sysconf
// _SC_CLK_TCK): 100 on every Linux architecture the mesh builds for.
const userHZ = 100

// cpuTicks returns the user and system time pids have used, summed, in
// USER_HZ ticks.
func cpuTicks(pids ...int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// The fields after "(comm)", which may hold spaces: utime and
		// stime are fields 14 and 15 of the line, 12 and 13 after it.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command", pid, len(f))
		}
		for _, s := range f[11:13] {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
			}
			sum += v
		}
	}
	return sum, nil
}

// machineTicks is the whole machine's CPU time from /proc/stat, in ticks
// summed over its CPUs.
type machineTicks struct {
	// busy is user, nice, system, irq, softirq and steal time.
	busy int64
	// softirq is the part of busy spent in softirqs: mostly the network
	// stack's receive path (veth, bridge, netfilter, loopback), which the
	// kernel charges to no process.
	softirq int64
}

func readMachineTicks() (machineTicks, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineTicks{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return machineTicks{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var t machineTicks
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return machineTicks{}, fmt.Errorf("/proc/stat: %w", err)
		}
		t.busy += v
		if i == 7 {
			t.softirq = v
		}
	}
	return t, nil
}

// resetPeakRSS makes each process's VmHWM its current RSS (clear_refs 5),
// so that the peak read after a row is that row's.
func resetPeakRSS(pids ...int) error {
	for _, pid := range pids {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			return err
		}
	}
	return nil
}

// peakRSS is the sum of the processes' VmHWM, in bytes. For nginx's
// workers the pages they share are counted once per worker.
func peakRSS(pids ...int) (float64, error) {
	var sum float64
	for _, pid := range pids {
		st, err := benchdoc.ProcStatus(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, err
		}
		sum += st["VmHWM"]
	}
	return sum, nil
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
