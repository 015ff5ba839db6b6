package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// svcBridge is a bridge with no ports that carries the route to the Service
// CIDR inside the node namespace. The node has no default route (so nothing
// can leave the machine), but a locally generated packet needs some route
// before kube-proxy's OUTPUT DNAT rewrites a ClusterIP to a pod IP; packets
// to a ClusterIP nobody serves die on this portless bridge. (A dummy
// interface would do, but this kernel has no dummy driver.)
const svcBridge = "mesh-svc0"

// run executes a command and folds its output into the error.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNetns runs a command inside the node namespace. It uses nsenter --net,
// never `ip netns exec`, which remounts /sys and hides the cgroup mounts
// from kubelet and runc (local-cluster.md, gotchas).
func inNetns(ctx context.Context, p paths, name string, args ...string) error {
	return run(ctx, "nsenter", append([]string{"--net=" + p.netns, "--", name}, args...)...)
}

func netnsExists(p paths) bool {
	_, err := os.Stat(p.netns)
	return err == nil
}

// createNodeNetns makes the node namespace: veth HostIP/30 <-> NodeIP/30, no
// default route, forwarding on so pods reach each other through Services,
// and bridged traffic passed through iptables so a pod reaching a Service
// backed by a pod on the same bridge gets its replies un-NATed.
func createNodeNetns(ctx context.Context, p paths) error {
	steps := [][]string{
		{"ip", "netns", "add", p.name},
		{"ip", "link", "add", p.hostVeth, "type", "veth", "peer", "name", "eth0", "netns", p.name},
		{"ip", "addr", "add", HostIP + "/30", "dev", p.hostVeth},
		{"ip", "link", "set", p.hostVeth, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	inside := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", NodeIP + "/30", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "link", "add", svcBridge, "type", "bridge"},
		{"ip", "link", "set", svcBridge, "up"},
		{"ip", "route", "add", ServiceCIDR, "dev", svcBridge},
		{"sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
			"net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1"},
	}
	for _, s := range inside {
		if err := inNetns(ctx, p, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// deleteNodeNetns removes the namespace, which takes the node side of the
// veth (and so the host side), the pod veths, the CNI bridge and every
// iptables rule kube-proxy and the CNI plugins made, all of which live in it.
func deleteNodeNetns(ctx context.Context, p paths) error {
	if netnsExists(p) {
		if err := run(ctx, "ip", "netns", "del", p.name); err != nil {
			return err
		}
	}
	if _, err := net.InterfaceByName(p.hostVeth); err == nil {
		return run(ctx, "ip", "link", "del", p.hostVeth)
	}
	return nil
}

// netnsInode identifies a network namespace by the inode of its file.
func netnsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// DialInNetns returns a dial function whose sockets are created inside the
// network namespace at nsPath, so a Go program in the host namespace can
// reach 127.0.0.1 or a ClusterIP as seen from the node. Only literal IP
// addresses work: name resolution could run on another thread.
func DialInNetns(nsPath string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			c, err := dialOnNetnsThread(ctx, nsPath, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// dialOnNetnsThread switches one locked OS thread into the namespace, dials,
// and switches back. A socket keeps the namespace it was created in. If the
// switch back fails the thread stays locked and exits with the goroutine, so
// no other goroutine ever runs in the wrong namespace.
func dialOnNetnsThread(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter %s: %w", nsPath, err)
	}
	var d net.Dialer
	c, dialErr := d.DialContext(ctx, network, addr)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
		runtime.UnlockOSThread()
	}
	return c, dialErr
}
