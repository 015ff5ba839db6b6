package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mount is one line of /proc/self/mountinfo.
type mount struct {
	point, fstype string
}

func mounts() ([]mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent major:minor root point options [optional...] - fstype source super
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		out = append(out, mount{point: unescapeMount(fields[4]), fstype: fields[sep+1]})
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]mount, error) {
	all, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []mount
	for _, m := range all {
		if under(m.point, dir) {
			out = append(out, m)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i].point) > len(out[j].point) })
	return out, nil
}

// podNetnsInodes identifies the pod network namespaces containerd
// bind-mounted under the state dir.
func podNetnsInodes(state string) map[uint64]bool {
	out := map[uint64]bool{}
	ms, _ := mountsUnder(state) // no mounts readable means no pod namespaces to find
	for _, m := range ms {
		if m.fstype != "nsfs" {
			continue
		}
		if ino, err := netnsInode(m.point); err == nil {
			out[ino] = true
		}
	}
	return out
}

// unmountUnder detaches every mount below dir (kubelet's volume tmpfs,
// container rootfs overlays, sandbox shm, pod namespace bind mounts). A
// mount may be stacked several times, so it repeats until none is left.
func unmountUnder(dir string) error {
	for range 10 {
		ms, err := mountsUnder(dir)
		if err != nil {
			return err
		}
		if len(ms) == 0 {
			return nil
		}
		for _, m := range ms {
			if err := unix.Unmount(m.point, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", m.point, err)
			}
		}
	}
	ms, _ := mountsUnder(dir)
	return fmt.Errorf("%d mounts left under %s after unmounting, first %s", len(ms), dir, ms[0].point)
}

// cgroupMounts returns the mount points of the cgroup hierarchies (v1:
// one per controller, plus name=systemd).
func cgroupMounts() []string {
	ms, _ := mounts() // unreadable mountinfo means no cgroups to clean
	var out []string
	for _, m := range ms {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m.point)
		}
	}
	return out
}

// createCgroupParents makes /<name> in every hierarchy: kubelet refuses a
// cgroupRoot that does not exist, and it keeps every pod cgroup in one
// subtree that removeCgroups can find.
func createCgroupParents(name string) error {
	for _, root := range cgroupMounts() {
		if err := os.MkdirAll(filepath.Join(root, name), 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", filepath.Join(root, name), err)
		}
	}
	return nil
}

// removeCgroups removes /<name> and its subtree from every hierarchy,
// deepest first; cgroup directories are removed with rmdir, never unlink.
func removeCgroups(name string) error {
	var errs []error
	for _, root := range cgroupMounts() {
		top := filepath.Join(root, name)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := unix.Rmdir(dirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// kernelTunables are the global sysctls kubelet sets at start
// (setupKernelTunables in pkg/kubelet/cm). They are not namespaced, so Up
// saves them and Down puts them back.
var kernelTunables = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

func saveSysctls(p paths) error {
	var lines []string
	for _, k := range kernelTunables {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return err
		}
		lines = append(lines, k+"="+strings.TrimSpace(string(b)))
	}
	return os.WriteFile(filepath.Join(p.state, "sysctls.saved"), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

func restoreSysctls(p paths) error {
	b, err := os.ReadFile(filepath.Join(p.state, "sysctls.saved"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || !validTunable(k) {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			return fmt.Errorf("restore sysctl %s=%s: %w", k, v, err)
		}
	}
	return nil
}

func validTunable(k string) bool {
	for _, t := range kernelTunables {
		if k == t {
			return true
		}
	}
	return false
}

// shimSockets lists the unix sockets under /run/containerd/s bound in the
// namespaces of pids (the shims live in the node namespace): containerd 1.6 puts each shim's socket there whatever its
// state dir, and a killed shim leaves it behind.
func shimSockets(pids []int) []string {
	seen := map[string]bool{}
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/unix", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 8 && strings.HasPrefix(f[7], "/run/containerd/s/") {
				seen[f[7]] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	return out
}

// sandboxIDs lists the pod sandboxes containerd knows, read from its
// state and root dirs; CNI names its cache files after them.
func sandboxIDs(p paths) []string {
	var ids []string
	for _, d := range []string{"state", "root"} {
		entries, _ := os.ReadDir(filepath.Join(p.containerd, d, "io.containerd.grpc.v1.cri", "sandboxes"))
		for _, e := range entries {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// removeHostLeftovers deletes files the cluster leaves outside its state
// dir: shim sockets, CNI result caches of its sandboxes, kubelet's
// /var/log/containers links into the state dir and its device-plugin
// socket (a path kubelet hard-codes), and kubectl's discovery cache for the
// node address. Directories are removed only when empty, so nothing another
// program keeps there is touched.
func removeHostLeftovers(p paths, sockets, sandboxes []string) {
	for _, s := range sockets {
		os.Remove(s)
	}
	for _, id := range sandboxes {
		results, _ := filepath.Glob("/var/lib/cni/results/*-" + id + "-*")
		for _, r := range results {
			os.Remove(r)
		}
	}
	links, _ := filepath.Glob("/var/log/containers/*.log")
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && under(target, p.state) {
			os.Remove(l)
		}
	}
	for _, f := range []string{"kubelet.sock", "kubelet_internal_checkpoint"} {
		os.Remove(filepath.Join("/var/lib/kubelet/device-plugins", f))
	}
	home, _ := os.UserHomeDir()
	if home != "" {
		os.RemoveAll(filepath.Join(home, ".kube", "cache", "discovery", NodeIP+"_6443"))
	}
	for _, d := range []string{
		"/run/containerd/s", "/run/containerd", "/var/lib/cni/results", "/var/lib/cni",
		"/var/log/containers", "/var/lib/kubelet/device-plugins", "/var/lib/kubelet",
	} {
		os.Remove(d) // only succeeds when empty
	}
}
