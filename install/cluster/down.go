package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clusterState is what Status, Up and Down see of a cluster.
type clusterState struct {
	running   map[string]bool // component name -> running
	order     []string
	leftovers bool // namespace, state dir or host veth exist
}

func state(p paths, comps []component) clusterState {
	st := clusterState{running: map[string]bool{}}
	for _, c := range comps {
		_, ok := runningPid(p, c)
		st.running[c.name] = ok
		st.order = append(st.order, c.name)
	}
	_, errState := os.Stat(p.state)
	_, errVeth := net.InterfaceByName(p.hostVeth)
	st.leftovers = netnsExists(p) || errState == nil || errVeth == nil
	return st
}

func (s clusterState) allRunning() bool {
	for _, n := range s.order {
		if !s.running[n] {
			return false
		}
	}
	return len(s.order) > 0
}

func (s clusterState) anyRunning() bool {
	for _, n := range s.order {
		if s.running[n] {
			return true
		}
	}
	return false
}

func (s clusterState) String() string {
	var up, down []string
	for _, n := range s.order {
		if s.running[n] {
			up = append(up, n)
		} else {
			down = append(down, n)
		}
	}
	return fmt.Sprintf("running: %s; not running: %s", list(up), list(down))
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// Status prints which components run and whether the node is Ready. It
// returns an error unless the whole cluster runs.
func Status(ctx context.Context, cfg Config) error {
	c, p, err := prepare(cfg)
	if err != nil {
		return err
	}
	version, err := K8sVersion(c.RepoRoot)
	if err != nil {
		return err
	}
	k8sBin := k8sBinDir(c, version)
	st := state(p, components(p, k8sBin))
	for _, n := range st.order {
		mark := "not running"
		if st.running[n] {
			mark = "running"
		}
		fmt.Fprintf(c.Log, "  %-24s %s\n", n, mark)
	}
	if !st.allRunning() {
		return fmt.Errorf("cluster %s is not (fully) running: %s", c.Name, st)
	}
	if err := nodeReady(ctx, p, k8sBin); err != nil {
		return err
	}
	fmt.Fprintf(c.Log, "  %-24s Ready\n", "node "+NodeName)
	printAccess(c.Log, p, k8sBin)
	return nil
}

// Down stops every process of the cluster and removes everything it made:
// pod containers and shims, mounts, cgroups, the node namespace (with its
// interfaces and iptables rules), files outside the state dir, and the
// state dir itself. It is safe to run when nothing is up.
func Down(ctx context.Context, cfg Config) error {
	c, p, err := prepare(cfg)
	if err != nil {
		return err
	}
	release, err := lock(ctx, c.Name)
	if err != nil {
		return err
	}
	defer release()
	pr := &progress{w: c.Log, start: time.Now()}
	if err := teardown(ctx, p, pr, false); err != nil {
		return err
	}
	if left := Leftovers(p.state, c.Name); len(left) > 0 {
		return fmt.Errorf("cluster %s: left after teardown: %s", c.Name, strings.Join(left, "; "))
	}
	pr.say("cluster %s is down; nothing of it is left", c.Name)
	return nil
}

// teardown is Down without the lock; quiet skips the per-step lines (Up
// uses it to clear the leftovers of a stopped cluster).
func teardown(ctx context.Context, p paths, pr *progress, quiet bool) error {
	step := pr.step
	if quiet {
		step = func(_ string, fn func() error) error { return fn() }
	}
	var sockets []string
	sandboxes := sandboxIDs(p)
	steps := []struct {
		name string
		fn   func() error
	}{
		{"stop processes (control plane, containerd, shims, pods)", func() error {
			var err error
			sockets, err = stopCluster(ctx, p)
			return err
		}},
		{"unmount volumes, rootfs, pod namespaces", func() error { return unmountUnder(p.state) }},
		{"restore kernel sysctls", func() error { return restoreSysctls(p) }},
		{"remove cgroups /" + p.name, func() error { return removeCgroups(p.name) }},
		{"delete node namespace " + p.name, func() error { return deleteNodeNetns(ctx, p) }},
		{"remove files outside the state dir", func() error { removeHostLeftovers(p, sockets, sandboxes); return nil }},
		{"remove " + p.state, func() error { return removeState(p.state) }},
	}
	for _, s := range steps {
		if err := step(s.name, s.fn); err != nil {
			return err
		}
	}
	return nil
}

// stopCluster ends every process of the cluster and returns the shim
// sockets they leave behind.
func stopCluster(ctx context.Context, p paths) ([]string, error) {
	inodes := podNetnsInodes(p.state)
	if ino, err := netnsInode(p.netns); err == nil {
		inodes[ino] = true
	}
	pids, err := clusterPids(inodes)
	if err != nil {
		return nil, err
	}
	// Components whose namespace file is already gone are still found by
	// their pid files.
	files, _ := filepath.Glob(filepath.Join(p.run, "*.pid"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && alive(pid) {
			pids = append(pids, pid)
		}
	}
	sockets := shimSockets(pids)
	return sockets, stopPids(ctx, pids, 5*time.Second)
}

// removeState deletes the state dir, but only once nothing is mounted
// below it: RemoveAll would otherwise delete into a mounted filesystem.
func removeState(dir string) error {
	ms, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	if len(ms) > 0 {
		return fmt.Errorf("refusing to delete %s: %s is still mounted", dir, ms[0].point)
	}
	return os.RemoveAll(dir)
}

// Leftovers lists what of a cluster still exists on the machine: its
// namespace, host interface, state dir, mounts, cgroups, shim sockets. An
// empty list means a clean machine. Tests use it to check Down.
func Leftovers(stateDir, name string) []string {
	p := newPaths(Config{StateDir: stateDir, Name: name})
	var out []string
	if netnsExists(p) {
		out = append(out, "namespace "+p.netns)
	}
	if _, err := net.InterfaceByName(p.hostVeth); err == nil {
		out = append(out, "interface "+p.hostVeth)
	}
	if _, err := os.Stat(stateDir); err == nil {
		out = append(out, "directory "+stateDir)
	}
	if ms, _ := mountsUnder(stateDir); len(ms) > 0 {
		out = append(out, fmt.Sprintf("%d mounts under %s", len(ms), stateDir))
	}
	for _, root := range cgroupMounts() {
		if _, err := os.Stat(filepath.Join(root, name)); err == nil {
			out = append(out, "cgroup "+filepath.Join(root, name))
		}
	}
	out = append(out, processesMentioning(stateDir)...)
	if results, _ := filepath.Glob("/var/lib/cni/results/" + name + "-*"); len(results) > 0 {
		out = append(out, fmt.Sprintf("%d CNI results in /var/lib/cni/results", len(results)))
	}
	if _, err := os.Stat("/var/lib/kubelet/device-plugins/kubelet.sock"); err == nil {
		out = append(out, "/var/lib/kubelet/device-plugins/kubelet.sock")
	}
	return out
}

// processesMentioning lists processes whose command line names dir: every
// component and shim of a cluster passes paths under its state dir.
func processesMentioning(dir string) []string {
	entries, _ := os.ReadDir("/proc") // unreadable /proc finds nothing
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !alive(pid) {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), dir+"/") {
			out = append(out, fmt.Sprintf("process %d (%s)", pid, strings.ReplaceAll(string(b[:min(len(b), 60)]), "\x00", " ")))
		}
	}
	return out
}
