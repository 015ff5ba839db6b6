package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
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

// The lab is one network namespace, as bench/proxy.sh's hop rows use: on
// its loopback, the application (nginx), the destination service (this
// program's controller subcommand), the real mesh-proxy as UID 2102 and
// the client. Connections to a Service's cluster IP, from anyone but the
// proxy, are sent by a nat REDIRECT to the proxy's outbound listener, as
// `mesh-proxy init` does in a pod; the proxy learns each connection's
// original destination, asks the destination service about it, and sends
// the request to the endpoint it picks.
const (
	// appIP is the application's address, never redirected.
	appIP = "127.0.0.3"
	// h1Port and h2Port are the Services' and the application's ports:
	// HTTP/1.1, and h2c with prior knowledge.
	h1Port = 8080
	h2Port = 8082
	// controllerAddr serves the destination service (names.DestinationPort).
	controllerAddr = "127.0.0.1:8086"
	// serviceNet holds the Services' cluster IPs: what the nat rule
	// redirects.
	serviceNet = "127.0.1.0/24"
	// proxyUID is the proxy's (names.ProxyUID): the nat rule skips it.
	proxyUID = 2102
	// adminURL is the proxy's admin port (names.AdminPort).
	adminURL = "http://127.0.0.1:4191"
)

// decoyPort is where the decoy answers for a Service port: 421 to every
// request.
func decoyPort(port int) int { return port + 10 }

// target is one of the lab's three Services, each with one kind of table.
type target struct {
	kind    tableKind
	service string // its name in appNamespace
	ip      string // its cluster IP, in serviceNet
}

// authority is how the proxy names the Service's port to the destination
// service: the original destination of the client's connection.
func (t target) authority(port int) string {
	return net.JoinHostPort(t.ip, strconv.Itoa(port))
}

var targets = []target{
	{kind: noRoutes, service: "plain", ip: "127.0.1.1"},
	{kind: byPath, service: "by-path", ip: "127.0.1.2"},
	{kind: byHeader, service: "by-header", ip: "127.0.1.3"},
}

// targetOf returns the Service whose table is of kind.
func targetOf(kind tableKind) target {
	for _, t := range targets {
		if t.kind == kind {
			return t
		}
	}
	panic("no Service has a table of kind " + string(kind))
}

// lab is the run's namespace and the servers in it. close removes
// everything it made: the processes (and any other process left in the
// namespace), then the namespace, which takes its nat rules along.
type lab struct {
	ns  string // the namespace's name
	dir string // where the servers' configurations and logs go

	mu    sync.Mutex
	made  bool       // the namespace exists; guarded by mu
	procs []*process // guarded by mu, in start order
}

// newLab makes the namespace, its loopback up and its nat rule. The lab
// is returned even when that fails, so that close removes what was made.
func newLab(ctx context.Context, dir string) (*lab, []string, error) {
	// The pid keeps two runs apart, and says whose leftovers they are.
	l := &lab{ns: "mesh-routes-" + strconv.Itoa(os.Getpid()), dir: dir}
	if err := run(ctx, "ip", "netns", "add", l.ns); err != nil {
		return l, nil, err
	}
	l.mu.Lock()
	l.made = true
	l.mu.Unlock()
	rule := []string{"iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", serviceNet,
		"-m", "owner", "!", "--uid-owner", strconv.Itoa(proxyUID), "-j", "REDIRECT", "--to-ports", "4140"}
	for _, args := range [][]string{{"ip", "link", "set", "lo", "up"}, rule} {
		if err := run(ctx, "nsenter", append([]string{"--net=" + l.nsPath()}, args...)...); err != nil {
			return l, nil, err
		}
	}
	return l, []string{shellJoin(rule)}, nil
}

// nsPath names the namespace for nsenter --net.
func (l *lab) nsPath() string { return "/var/run/netns/" + l.ns }

// command returns a command running name in the namespace. nsenter
// execs it in place, so the command's pid is name's.
func (l *lab) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + l.nsPath(), name}, args...)...)
}

// commandAs is command as uid and gid uid, without supplementary groups;
// setpriv execs in place too.
func (l *lab) commandAs(ctx context.Context, uid int, name string, args ...string) *exec.Cmd {
	id := strconv.Itoa(uid)
	return l.command(ctx, "setpriv", append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", name}, args...)...)
}

// output runs a command in the namespace to completion and returns its
// stdout, or an error with its stderr.
func (l *lab) output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := l.command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}

func run(ctx context.Context, name string, args ...string) error {
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
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
	// close stops the servers itself; a cancelled context must not kill
	// one under a row that is still being read.
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
// namespace. What it cannot remove it reports and goes on.
func (l *lab) close(ctx context.Context) error {
	// Cleanup runs after Ctrl-C too: it needs a context of its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	l.mu.Lock()
	procs, made := slices.Clone(l.procs), l.made
	l.mu.Unlock()
	slices.Reverse(procs)
	for _, p := range procs {
		// The whole group: nginx's worker shares its master's.
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
	if !made {
		return nil
	}
	// Anything still in the namespace is ours: a client cut off by
	// Ctrl-C, a worker whose master was killed.
	if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", l.ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for _, p := range procs {
		select {
		case <-p.exited:
		case <-ctx.Done():
		}
	}
	if _, err := os.Stat(l.nsPath()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return run(ctx, "ip", "netns", "del", l.ns)
}
