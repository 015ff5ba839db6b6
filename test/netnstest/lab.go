// Package netnstest builds a small lab of "pods" for integration tests: each
// pod is a network namespace with one veth interface on a bridge that lives
// in a switch namespace of its own, so the lab touches nothing in the
// machine's root namespace and nothing it sends can leave the machine.
//
// A Lab removes everything it made when the test ends, also when it fails:
// the processes it started (and any other process left in its namespaces),
// then the namespaces, which takes their interfaces and iptables rules along.
package netnstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireRoot skips t when the lab cannot be built (not root), or fails it
// when MESH_REQUIRE_ROOT_TESTS=1 says the suite must run (CI, `make test`).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := "the network-namespace suite needs root: it creates network namespaces, veth pairs and iptables rules (run it with sudo)"
	if os.Getenv("MESH_REQUIRE_ROOT_TESTS") == "1" {
		t.Fatal(msg + "; MESH_REQUIRE_ROOT_TESTS=1 forbids skipping it")
	}
	t.Skip(msg)
}

// RequireTools fails t, naming the Debian package to install, when a
// command the test needs is missing. It never skips: a suite that cannot
// run must not pass silently.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run `make deps` (hack/deps.sh installs it)", tool)
		}
	}
}

// Lab is a set of pods on one bridge in 10.251.<n>.0/24 and fd51:0:0:<n>::/64.
type Lab struct {
	t      testing.TB
	id     string // short random name prefix, so parallel labs never collide
	subnet netip.Prefix
	sw     string // the switch namespace holding the bridge

	mu    sync.Mutex
	pods  []*Pod
	procs []*Process
}

// New builds an empty lab; t's cleanup tears it down.
func New(t testing.TB) *Lab {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "ip", "nsenter")
	var b [3]byte
	rand.Read(b[:])
	l := &Lab{t: t, id: "ml" + hex.EncodeToString(b[:])}
	// A random third octet keeps two labs (two test binaries) apart.
	l.subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 251, b[0], 0}), 24)
	l.sw = l.id + "-sw"
	t.Cleanup(l.teardown)
	l.mustIP("netns", "add", l.sw)
	l.mustIP("-n", l.sw, "link", "add", "br0", "type", "bridge")
	l.mustIP("-n", l.sw, "link", "set", "br0", "up")
	return l
}

// Pod is a network namespace with lo and eth0 up, and an address on the lab's bridge.
type Pod struct {
	lab  *Lab
	Name string
	NS   string     // namespace name
	IP   netip.Addr // IPv4 address of eth0
	IP6  netip.Addr // IPv6 (ULA) address of eth0
}

// NSPath is the file that names the pod's namespace, for nsenter --net.
func (p *Pod) NSPath() string { return "/var/run/netns/" + p.NS }

// Pod adds a pod named name.
func (l *Lab) Pod(name string) *Pod {
	l.t.Helper()
	l.mu.Lock()
	n := len(l.pods) + 2 // .1 is left free
	p := &Pod{lab: l, Name: name, NS: fmt.Sprintf("%s-%s", l.id, name)}
	third := l.subnet.Addr().As4()[2]
	p.IP = netip.AddrFrom4([4]byte{10, 251, third, byte(n)})
	p.IP6 = netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x51, 7: third, 15: byte(n)})
	l.pods = append(l.pods, p)
	l.mu.Unlock()

	host, peer := fmt.Sprintf("%s%d", l.id, n), "eth0"
	l.mustIP("netns", "add", p.NS)
	l.mustIP("-n", l.sw, "link", "add", host, "type", "veth", "peer", "name", peer, "netns", p.NS)
	l.mustIP("-n", l.sw, "link", "set", host, "master", "br0", "up")
	l.mustIP("-n", p.NS, "addr", "add", netip.PrefixFrom(p.IP, 24).String(), "dev", peer)
	// nodad: the address is usable at once, without duplicate detection.
	l.mustIP("-n", p.NS, "addr", "add", netip.PrefixFrom(p.IP6, 64).String(), "dev", peer, "nodad")
	l.mustIP("-n", p.NS, "link", "set", peer, "up")
	l.mustIP("-n", p.NS, "link", "set", "lo", "up")
	return p
}

func (l *Lab) mustIP(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Command returns a command that runs in the pod's network namespace.
// nsenter keeps /sys and the cgroup mounts as they are, unlike `ip netns exec`.
func (p *Pod) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + p.NSPath(), name}, args...)...)
}

// CommandAs is Command run with another UID and GID and no supplementary
// groups (setpriv needs no user database entry for the UID).
func (p *Pod) CommandAs(ctx context.Context, uid int, name string, args ...string) *exec.Cmd {
	id := strconv.Itoa(uid)
	return p.Command(ctx, "setpriv", append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", name}, args...)...)
}

// Run runs a command in the pod to completion and returns its stdout; it
// fails t with the command's stderr when the command fails.
func (p *Pod) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := p.Try(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Try is Run that returns the failure instead of failing t. Commands get
// at most two minutes.
func (p *Pod) Try(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := p.Command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("in pod %s: %s %s: %w\nstdout: %s\nstderr: %s",
			p.Name, name, strings.Join(args, " "), err, tail(stdout.String()), tail(stderr.String()))
	}
	return stdout.String(), nil
}

func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

// Process is a command the lab started in the background. Its output is
// kept and printed when the test fails.
type Process struct {
	Name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error // set before done closes
}

// Start starts cmd (from Command or CommandAs) in the background; the
// lab stops it at the end of the test.
func (l *Lab) Start(name string, cmd *exec.Cmd) *Process {
	l.t.Helper()
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that stopping it reaches nsenter's child.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p
}

// Output returns what the process has written so far.
func (p *Process) Output() string { return p.out.String() }

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the process group and waits up to grace for it to
// end, then kills it. It returns the process's exit error.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	return p.err
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) { syscall.Kill(-p.cmd.Process.Pid, sig) }

// Pid is the pid of the command started (nsenter, which execs the tool, so
// for commands without setpriv or sh it is the tool itself).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// teardown stops every process, then kills anything else left in the
// lab's namespaces, then deletes them. It reports but never stops early.
func (l *Lab) teardown() {
	l.mu.Lock()
	procs, pods := l.procs, l.pods
	l.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		p.Stop(3 * time.Second)
		if l.t.Failed() {
			l.t.Logf("--- output of %s:\n%s", p.Name, tail(p.Output()))
		}
	}
	var errs []error
	for _, ns := range append(podNS(pods), l.sw) {
		killAll(ns)
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", ns, err, out))
		}
	}
	if err := errors.Join(errs...); err != nil {
		l.t.Errorf("lab teardown: %v", err)
	}
}

func podNS(pods []*Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.NS)
	}
	return out
}

// killAll kills every process still in namespace ns.
func killAll(ns string) {
	for range 20 {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			return
		}
		for _, s := range pids {
			if pid, err := strconv.Atoi(s); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
