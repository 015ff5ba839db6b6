package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// iptablesPackages are the Debian packages (bookworm's names) whose files
// the mesh-proxy image of another architecture carries: iptables, the
// libraries xtables-nft-multi loads, their libc and loader, and netbase for
// /etc/protocols.
var iptablesPackages = []string{
	"iptables", "libxtables12", "libip4tc2", "libip6tc2", "libnftnl11", "libmnl0",
	"libnetfilter-conntrack3", "libnfnetlink0", "libc6", "netbase",
}

// DebianRoot returns a directory holding Debian's packages pkgs for arch
// unpacked (dpkg-deb -x), as a root for File.Root. Each package is pinned
// to the version installed on the host when it is, so an image's variants
// carry one Debian build of iptables. The result is cached under
// cacheDir/debian/<arch>/<key of the package list>; a miss runs apt-get
// with package lists of its own under cacheDir (the host's apt
// configuration, lists and dpkg database are not changed), about 20 s. log
// receives what it does; nil discards.
func DebianRoot(ctx context.Context, cacheDir, arch string, pkgs []string, log io.Writer) (string, error) {
	if log == nil {
		log = io.Discard
	}
	pinned := make([]string, 0, len(pkgs))
	for _, p := range pkgs {
		spec := p + ":" + arch
		if v := hostPackageVersion(ctx, p); v != "" {
			spec += "=" + v
		}
		pinned = append(pinned, spec)
	}
	sort.Strings(pinned)
	sum := sha256.Sum256([]byte(strings.Join(pinned, "\n")))
	dir := filepath.Join(cacheDir, "debian", arch, hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, "root")); err == nil {
		return filepath.Join(dir, "root"), nil
	}
	fmt.Fprintf(log, "images: fetching Debian packages for %s into %s (apt-get, once per machine)\n", arch, dir)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "fetch-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	apt := filepath.Join(cacheDir, "debian", "apt-"+arch)
	for _, d := range []string{"lists/partial", "archives/partial"} {
		if err := os.MkdirAll(filepath.Join(apt, d), 0o755); err != nil {
			return "", err
		}
	}
	// Lists and archives of their own, an empty dpkg status and arch as the
	// only architecture: apt resolves pkgs for arch without
	// `dpkg --add-architecture` on the host.
	opts := []string{
		"-o", "APT::Architecture=" + arch, "-o", "APT::Architectures::=" + arch,
		"-o", "Dir::State::Lists=" + filepath.Join(apt, "lists"),
		"-o", "Dir::Cache=" + apt, "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
		"-o", "Dir::State::status=/dev/null", "-o", "Debug::NoLocking=1",
		"-o", "APT::Sandbox::User=root", "-q",
	}
	debs := filepath.Join(tmp, "debs")
	if err := os.Mkdir(debs, 0o755); err != nil {
		return "", err
	}
	start := time.Now()
	stop := reportEvery(log, 10*time.Second, func() string {
		return fmt.Sprintf("images: still fetching Debian's package lists and packages for %s (%.0fs)", arch, time.Since(start).Seconds())
	})
	err = runIn(ctx, "", "apt-get", append(opts, "update")...)
	if err == nil {
		err = runIn(ctx, debs, "apt-get", append(append(opts, "download"), pinned...)...)
	}
	stop()
	if err != nil {
		return "", err
	}
	files, err := filepath.Glob(filepath.Join(debs, "*.deb"))
	if err != nil {
		return "", err
	}
	if len(files) != len(pkgs) {
		return "", fmt.Errorf("apt-get download %s left %d .deb files, want %d", strings.Join(pinned, " "), len(files), len(pkgs))
	}
	root := filepath.Join(tmp, "root")
	for _, f := range files {
		if err := runIn(ctx, "", "dpkg-deb", "-x", f, root); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(root, filepath.Join(dir, "root")); err != nil {
		return "", err
	}
	return filepath.Join(dir, "root"), nil
}

// hostPackageVersion is the version of the Debian package installed on the
// host, or "" when it is not installed (or the host has no dpkg).
func hostPackageVersion(ctx context.Context, pkg string) string {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}", pkg).Output()
	if err != nil {
		return ""
	}
	s := string(out)
	if !strings.HasPrefix(s, "ii ") {
		return ""
	}
	return strings.TrimSpace(s[3:])
}

func runIn(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
