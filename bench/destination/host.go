package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sampler reads the controller's memory every interval and keeps the
// largest values of each phase. Its methods are safe for concurrent use.
type sampler struct {
	ctrl *controller

	mu    sync.Mutex
	phase string               // guarded by mu
	peaks map[string]memSample // guarded by mu
}

func newSampler(ctrl *controller) *sampler {
	return &sampler{ctrl: ctrl, peaks: map[string]memSample{}}
}

// run samples until ctx ends. Scraping /metrics costs the controller a
// little CPU, so the interval stays coarse.
func (s *sampler) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.sampleNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sampleNow takes a sample for the current phase, so that a phase shorter
// than the interval has one too.
func (s *sampler) sampleNow(ctx context.Context) {
	m, err := s.ctrl.sample(ctx)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peaks[s.phase] = s.peaks[s.phase].max(m)
}

// setPhase makes the next samples count towards phase.
func (s *sampler) setPhase(phase string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase = phase
}

// peak returns the largest values sampled during phase.
func (s *sampler) peak(phase string) memSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peaks[phase]
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
// every Linux architecture Go runs on.
const clockTick = 10 * time.Millisecond

// procCPU returns the user plus system CPU time of process pid.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// pidsNamed returns the processes whose command name is one of names.
func pidsNamed(names ...string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		for _, n := range names {
			if strings.TrimSpace(string(comm)) == n {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// machineBusy returns the CPU time all CPUs spent on anything but idle and
// I/O wait, from /proc/stat.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected format")
	}
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is already counted in user.
		if i != 3 && i != 4 && i < 8 {
			busy += n
		}
	}
	return time.Duration(busy) * clockTick, nil
}

// cpuMark is a reading of the CPU times the report compares.
type cpuMark struct {
	at                               time.Time
	controller, cluster, self, total time.Duration
}

// cpuUse is CPU used between two marks, in cores (1 = one CPU all along).
type cpuUse struct {
	Controller, Cluster, Self, Total float64
}

// clusterProcs are the API server and etcd: the path every change takes
// before the controller sees it.
var clusterProcs = []string{"kube-apiserver", "etcd"}

func markCPU(controllerPID int) cpuMark {
	m := cpuMark{at: time.Now()}
	m.controller, _ = procCPU(controllerPID)
	m.self, _ = procCPU(os.Getpid())
	for _, pid := range pidsNamed(clusterProcs...) {
		d, _ := procCPU(pid)
		m.cluster += d
	}
	m.total, _ = machineBusy()
	return m
}

func (m cpuMark) since(o cpuMark) cpuUse {
	wall := m.at.Sub(o.at).Seconds()
	if wall <= 0 {
		return cpuUse{}
	}
	cores := func(a, b time.Duration) float64 { return (a - b).Seconds() / wall }
	return cpuUse{
		Controller: cores(m.controller, o.controller), Cluster: cores(m.cluster, o.cluster),
		Self: cores(m.self, o.self), Total: cores(m.total, o.total),
	}
}

// runtimeEnv returns the Go runtime settings in the environment, which the
// controller inherits.
func runtimeEnv() string {
	var set []string
	for _, k := range []string{"GOGC", "GOMAXPROCS", "GOMEMLIMIT", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			set = append(set, k+"="+v)
		}
	}
	if len(set) == 0 {
		return "Go runtime defaults (no GOGC, GOMAXPROCS, GOMEMLIMIT or GODEBUG set)"
	}
	return strings.Join(set, " ")
}

// loadAvg returns the 1, 5 and 15 minute load averages as /proc/loadavg
// writes them.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
