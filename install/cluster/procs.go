package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is a component started by this run: exited is closed when it
// ends, so readiness waits fail at once instead of timing out.
type process struct {
	comp   component
	pid    int
	exited chan struct{}
	err    error // set before exited is closed
}

// hostEnv is the environment of every component: containerd finds runc and
// its shim, kube-proxy finds iptables, kubelet finds mount on this PATH.
var hostEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}

func pidFile(p paths, name string) string { return filepath.Join(p.run, name+".pid") }
func logFile(p paths, name string) string { return filepath.Join(p.logs, name+".log") }

// start runs c inside the node namespace in its own session, so it outlives
// the command that started it, with its output in the state dir's log.
// nsenter execs the program, so the pid is the component's own.
func start(p paths, c component) (*process, error) {
	closeInheritedOnExec.Do(func() { markInheritedCloseOnExec("/proc/self/fd") })
	log, err := os.OpenFile(logFile(p, c.name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close() // the child holds its own copy
	cmd := exec.Command("nsenter", append([]string{"--net=" + p.netns, "--", c.bin}, c.args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Dir = p.state
	cmd.Env = hostEnv
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", c.name, err)
	}
	proc := &process{comp: c, pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		proc.err = cmd.Wait()
		close(proc.exited)
	}()
	if err := os.WriteFile(pidFile(p, c.name), []byte(strconv.Itoa(proc.pid)+"\n"), 0o644); err != nil {
		return nil, err
	}
	return proc, nil
}

// closeInheritedOnExec makes sure the descriptors this program inherited
// are not passed on to the components, which outlive it. Go opens its own
// files close-on-exec, but not what its parent left open: run under
// `flock /tmp/mesh-e2e.lock`, every component would hold the lock until
// the cluster went down, and every later flock user, the e2e suite
// included, would wait for ever.
var closeInheritedOnExec sync.Once

// markInheritedCloseOnExec sets close-on-exec on every descriptor above
// stderr listed in dir (/proc/self/fd).
func markInheritedCloseOnExec(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return // no /proc: nothing to learn the descriptors from
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// exitError describes an early exit with the end of the component's log.
func (proc *process) exitError(p paths) error {
	return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", proc.comp.name, proc.err,
		logFile(p, proc.comp.name), tail(logFile(p, proc.comp.name), 15))
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// runningPid returns the pid recorded for a component if that process still
// runs the component's binary; a recycled pid or a zombie does not count.
func runningPid(p paths, c component) (int, bool) {
	b, err := os.ReadFile(pidFile(p, c.name))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !alive(pid) {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.HasPrefix(cmdline, []byte(c.bin+"\x00")) {
		return 0, false
	}
	return pid, true
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// stopPids sends SIGTERM, waits up to grace for the processes to end, then
// sends SIGKILL to those left and waits for them to go.
func stopPids(ctx context.Context, pids []int, grace time.Duration) error {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM) // already gone is fine
	}
	if waitGone(ctx, pids, grace) {
		return nil
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if waitGone(ctx, pids, 10*time.Second) {
		return nil
	}
	var left []string
	for _, pid := range pids {
		if alive(pid) {
			left = append(left, strconv.Itoa(pid))
		}
	}
	return fmt.Errorf("processes %s survive SIGKILL (stuck in the kernel?)", strings.Join(left, ", "))
}

func waitGone(ctx context.Context, pids []int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		gone := true
		for _, pid := range pids {
			if alive(pid) {
				gone = false
				break
			}
		}
		if gone {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clusterPids finds every process that belongs to the cluster: those in the
// node namespace or in one of the pod namespaces (containers, shims, the
// control plane), and all their descendants. It reads /proc, so it also
// finds processes whose pid files were lost.
func clusterPids(netnsInodes map[uint64]bool) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	parent := map[int]int{}
	var seeds []int
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if ino, err := netnsInode(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && netnsInodes[ino] {
			seeds = append(seeds, pid)
		}
		if pp, ok := ppid(pid); ok {
			parent[pid] = pp
		}
	}
	in := map[int]bool{}
	for _, s := range seeds {
		in[s] = true
	}
	// Add descendants until nothing changes; the process tree is shallow.
	for changed := true; changed; {
		changed = false
		for pid, pp := range parent {
			if !in[pid] && in[pp] {
				in[pid] = true
				changed = true
			}
		}
	}
	out := make([]int, 0, len(in))
	for pid := range in {
		out = append(out, pid)
	}
	return out, nil
}

func ppid(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(fields[1])
	return pp, err == nil
}
