package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// debPackage is a Debian package the node needs, with a file that shows it
// is installed.
type debPackage struct {
	name, file string
}

var debPackages = []debPackage{
	{"etcd-server", "/usr/bin/etcd"},
	{"containerd", "/usr/bin/containerd"},
	{"runc", "/usr/sbin/runc"},
	{"containernetworking-plugins", "/usr/lib/cni/bridge"},
	{"iptables", "/usr/sbin/iptables"},
	{"iproute2", "/usr/sbin/ip"},
	{"util-linux", "/usr/bin/nsenter"},
	{"procps", "/usr/sbin/sysctl"},
}

// missingPackages lists the packages whose files are absent.
func missingPackages() []string {
	var out []string
	for _, p := range debPackages {
		if _, err := os.Stat(p.file); err != nil {
			out = append(out, p.name)
		}
	}
	return out
}

// installPackages installs the missing packages with apt-get. Services the
// packages would start (etcd, containerd) are kept from starting: the
// cluster runs its own copies with their own paths. Another apt run (for
// example hack/deps.sh) may hold the dpkg lock, so it waits for it.
func installPackages(ctx context.Context, pkgs []string) error {
	if len(pkgs) == 0 {
		return nil
	}
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); errors.Is(err, os.ErrNotExist) {
		// policy-rc.d exit 101 tells invoke-rc.d not to start services.
		if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err == nil {
			defer os.Remove(policy)
		}
	}
	if err := aptGet(ctx, "update", "-qq"); err != nil {
		return err
	}
	args := append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)
	if err := aptGet(ctx, args...); err != nil {
		return fmt.Errorf("%w\ninstall them by hand with: apt-get install %s", err, strings.Join(pkgs, " "))
	}
	if left := missingPackages(); len(left) > 0 {
		return fmt.Errorf("apt-get reported success but these are still missing: %s", strings.Join(left, ", "))
	}
	return nil
}

// aptGet runs apt-get, retrying for up to five minutes while another
// process holds the dpkg or apt lock (DPkg::Lock::Timeout covers only the
// dpkg lock, and only on newer apt).
func aptGet(ctx context.Context, args ...string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"-o", "DPkg::Lock::Timeout=60"}, args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		locked := strings.Contains(string(out), "Could not get lock") || strings.Contains(string(out), "is held by process")
		if !locked || time.Now().After(deadline) {
			return fmt.Errorf("apt-get %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(3 * time.Second):
		}
	}
}

// checkKernel names what the node needs from the kernel and is missing.
func checkKernel() error {
	var missing []string
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil {
		missing = append(missing, "br_netfilter (modprobe br_netfilter)")
	}
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(b), "\toverlay\n") {
		missing = append(missing, "overlayfs (modprobe overlay)")
	}
	if len(cgroupMounts()) == 0 {
		missing = append(missing, "mounted cgroups (/sys/fs/cgroup)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("the kernel lacks %s", strings.Join(missing, ", "))
	}
	return nil
}
