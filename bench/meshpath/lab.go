package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// lab is the run's network, laid out as test/netnstest lays out the
// integration suite's: pods are network namespaces, each with one veth
// interface on a bridge that lives in a switch namespace of its own, so
// nothing touches the machine's root namespace and nothing sent can leave
// the machine. close removes everything it made: the processes (and any
// other process left in its namespaces), then the namespaces, which take
// their interfaces and iptables rules along.
type lab struct {
	prefix string       // of every namespace and interface name
	subnet netip.Prefix // the pods' addresses
	sw     string       // the switch namespace, holding the bridge
	dir    string       // where the processes' logs go
	stderr io.Writer

	mu    sync.Mutex
	pods  []*pod     // guarded by mu
	procs []*process // guarded by mu, in start order
}

// labSubnet holds the pods' addresses; the switch namespace's bridge is
// the only thing on it, so no other network can see it.
var labSubnet = netip.MustParsePrefix("10.252.0.0/24")

// newLab makes the switch namespace. The lab is returned even when that
// fails, so that close removes whatever was made.
func newLab(ctx context.Context, dir string, stderr io.Writer) (*lab, error) {
	// The pid keeps two runs apart, and says whose leftovers they are.
	prefix := "mpath" + strconv.Itoa(os.Getpid())
	l := &lab{prefix: prefix, subnet: labSubnet, sw: prefix + "-sw", dir: dir, stderr: stderr}
	for _, args := range [][]string{
		{"netns", "add", l.sw},
		{"-n", l.sw, "link", "add", "br0", "type", "bridge"},
		{"-n", l.sw, "link", "set", "br0", "up"},
	} {
		if err := ipCmd(ctx, args...); err != nil {
			return l, err
		}
	}
	return l, nil
}

// pod is a network namespace with lo and eth0 up and an address on the
// lab's bridge.
type pod struct {
	name string
	ns   string
	ip   netip.Addr
}

// nsPath names the pod's namespace for nsenter --net.
func (p *pod) nsPath() string { return "/var/run/netns/" + p.ns }

// addPod adds a pod named name.
func (l *lab) addPod(ctx context.Context, name string) (*pod, error) {
	l.mu.Lock()
	n := len(l.pods) + 2 // .1 is left free
	a := l.subnet.Addr().As4()
	a[3] = byte(n)
	p := &pod{name: name, ns: l.prefix + "-" + name, ip: netip.AddrFrom4(a)}
	l.pods = append(l.pods, p)
	l.mu.Unlock()
	host := fmt.Sprintf("%s-%d", l.prefix, n) // at most 15 bytes: "mpath" + 7 digits + "-" + 2
	for _, args := range [][]string{
		{"netns", "add", p.ns},
		{"-n", l.sw, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", p.ns},
		{"-n", l.sw, "link", "set", host, "master", "br0", "up"},
		{"-n", p.ns, "addr", "add", netip.PrefixFrom(p.ip, l.subnet.Bits()).String(), "dev", "eth0"},
		{"-n", p.ns, "link", "set", "eth0", "up"},
		{"-n", p.ns, "link", "set", "lo", "up"},
	} {
		if err := ipCmd(ctx, args...); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func ipCmd(ctx context.Context, args ...string) error {
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// command returns a command running name in the pod's network namespace.
// nsenter execs it in place, so the command's pid is name's.
func (p *pod) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + p.nsPath(), name}, args...)...)
}

// commandAs is command as uid and gid uid, without supplementary groups;
// setpriv execs in place too.
func (p *pod) commandAs(ctx context.Context, uid int, name string, args ...string) *exec.Cmd {
	id := strconv.Itoa(uid)
	return p.command(ctx, "setpriv", append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", name}, args...)...)
}

// run runs a command in the pod to completion and returns its stdout, or
// an error with its stderr.
func (p *pod) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := p.command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("in pod %s: %s %s: %w: %s", p.name, name, strings.Join(args, " "),
			err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}

// process is a server the lab started in the background.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when it is gone
	err     error         // why; read after exited is closed
}

// pid is the process's: nsenter and setpriv exec in place.
func (p *process) pid() int { return p.cmd.Process.Pid }

// alive reports an error if the process has exited, with its log's end.
func (p *process) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); the end of its log:\n%s", p.name, p.err, logTail(p.logPath))
	default:
		return nil
	}
}

// start runs cmd in the background, its output in the lab's directory as
// name.log. It gets a process group of its own, so the terminal's Ctrl-C
// reaches only this program, which then stops the servers in order.
func (l *lab) start(name string, cmd *exec.Cmd) (*process, error) {
	logPath := filepath.Join(l.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child holds its own copy
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The lab stops its servers itself, in order; a cancelled context
	// must not kill one under a row that is still being read.
	cmd.Cancel = func() error { return nil }
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// logTail returns the last lines of the file at path.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// stopGrace is how long servers get to exit on SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// close stops every process, last started first, then deletes the
// namespaces. It reports what it could not remove on stderr and goes on.
func (l *lab) close(ctx context.Context) {
	// Cleanup runs after Ctrl-C too: it needs a context of its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	l.mu.Lock()
	procs, pods := slices.Clone(l.procs), slices.Clone(l.pods)
	l.mu.Unlock()
	slices.Reverse(procs)
	for _, p := range procs {
		// The whole group: nginx's workers share their master's.
		syscall.Kill(-p.pid(), syscall.SIGTERM)
	}
	deadline := time.After(stopGrace)
	for _, p := range procs {
		select {
		case <-p.exited:
		case <-deadline:
		}
	}
	for _, p := range procs {
		select {
		case <-p.exited:
		default:
			syscall.Kill(-p.pid(), syscall.SIGKILL)
		}
	}
	for _, p := range pods {
		// Anything still in a pod is ours: a client cut off by Ctrl-C,
		// a worker whose master was killed.
		if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", p.ns).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
	for _, p := range procs {
		select {
		case <-p.exited:
		case <-ctx.Done():
		}
	}
	for _, ns := range append(podNamespaces(pods), l.sw) {
		if _, err := os.Stat("/var/run/netns/" + ns); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := ipCmd(ctx, "netns", "del", ns); err != nil {
			fmt.Fprintf(l.stderr, "meshpath: cleanup: %v\n", err)
		}
	}
}

func podNamespaces(pods []*pod) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = p.ns
	}
	return out
}
