// Package iptables installs the netfilter rules that make the sidecar
// transparent: TCP arriving for the pod is redirected to the proxy's
// inbound port, and TCP the application sends is redirected to its
// outbound port. It drives Debian's iptables (nf_tables backend) so that
// what it installs is what `iptables-save` shows an operator.
package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/ports"
)

// Our own chains in the nat table; nothing else of the pod's is touched
// but the one jump rule into each from PREROUTING and OUTPUT.
const (
	InboundChain  = "MESH_PROXY_INBOUND"
	OutboundChain = "MESH_PROXY_OUTPUT"
)

// Sentinel errors, for errors.Is.
var (
	// ErrMissing: no iptables binary in the image or on the PATH.
	ErrMissing = errors.New("iptables not found: install Debian's iptables package (apt-get install iptables) or use the mesh-proxy image, which carries it")
	// ErrPermission: the process may not change netfilter rules.
	ErrPermission = errors.New("not allowed to change iptables rules: the init container needs the NET_ADMIN and NET_RAW capabilities (run as root locally)")
)

// Config says which traffic to redirect. The zero value means the
// defaults: ports 4143/4140/4191/4190 and proxy UID 2102, nothing skipped.
type Config struct {
	InboundPort  uint16 // 0: 4143
	OutboundPort uint16 // 0: 4140
	AdminPort    uint16 // 0: 4191; never redirected, so probes reach it
	TapPort      uint16 // 0: 4190; never redirected, so mesh viz tap reaches the proxy's own mTLS
	// ProxyUID owns the proxy's own connections, which must leave
	// unredirected. 0 means 2102 (root can never be the proxy's UID: every
	// root process would escape interception).
	ProxyUID int

	SkipInboundPorts    ports.Set      // arrive at the application directly
	SkipOutboundPorts   ports.Set      // leave the pod without the proxy
	SkipOutboundSubnets []netip.Prefix // leave the pod without the proxy

	// NoIPv6 skips ip6tables. By default the same rules go to ip6tables
	// when it is installed; an IPv6 failure is logged, not fatal, since
	// many clusters have no IPv6 at all.
	NoIPv6 bool

	// Command builds the command that runs a binary; nil means
	// exec.CommandContext. Tests use it to run inside a network namespace.
	Command func(ctx context.Context, name string, args ...string) *exec.Cmd
}

func (c Config) withDefaults() Config {
	if c.InboundPort == 0 {
		c.InboundPort = names.InboundPort
	}
	if c.OutboundPort == 0 {
		c.OutboundPort = names.OutboundPort
	}
	if c.AdminPort == 0 {
		c.AdminPort = names.AdminPort
	}
	if c.TapPort == 0 {
		c.TapPort = names.TapPort
	}
	if c.ProxyUID == 0 {
		c.ProxyUID = names.ProxyUID
	}
	if c.Command == nil {
		c.Command = exec.CommandContext
	}
	return c
}

// AddFlags binds the config to flags on fs.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.Uint16Var(&c.InboundPort, "inbound-port", names.InboundPort, "proxy port that inbound TCP is redirected to")
	fs.Uint16Var(&c.OutboundPort, "outbound-port", names.OutboundPort, "proxy port that outbound TCP is redirected to")
	fs.Uint16Var(&c.AdminPort, "admin-port", names.AdminPort, "proxy admin port, never redirected")
	fs.Uint16Var(&c.TapPort, "tap-port", names.TapPort, "proxy tap port (mesh viz tap), never redirected")
	fs.IntVar(&c.ProxyUID, "proxy-uid", names.ProxyUID, "UID the proxy runs as; its traffic is not redirected")
	fs.TextVar(&c.SkipInboundPorts, "skip-inbound-ports", ports.Set{}, "inbound ports not redirected to the proxy (e.g. 22,9000-9010)")
	fs.TextVar(&c.SkipOutboundPorts, "skip-outbound-ports", ports.Set{}, "outbound ports not redirected to the proxy")
	fs.Func("skip-outbound-subnets", "comma-separated CIDRs whose outbound traffic is not redirected", func(s string) error {
		subnets, err := ParseSubnets(s)
		c.SkipOutboundSubnets = subnets
		return err
	})
	fs.BoolVar(&c.NoIPv6, "no-ipv6", false, "do not install the rules with ip6tables")
}

// ParseSubnets reads "10.0.0.0/8, fd00::/8".
func ParseSubnets(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("subnet %q: %w", f, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// family is one of the two netfilter families we program.
type family struct {
	save, restore, bin string
	v6                 bool
}

var (
	ipv4 = family{save: "iptables-save", restore: "iptables-restore", bin: "iptables"}
	ipv6 = family{save: "ip6tables-save", restore: "ip6tables-restore", bin: "ip6tables", v6: true}
)

// Rules renders the nat table rules of one family in iptables-restore
// syntax. Declaring our chains makes iptables-restore --noflush empty them
// first, so installing again replaces rather than duplicates.
func Rules(cfg Config, v6 bool) string {
	cfg = cfg.withDefaults()
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("*nat")
	w(":%s - [0:0]", InboundChain)
	w(":%s - [0:0]", OutboundChain)
	// Inbound: the proxy's own ports and skipped ports arrive as they are.
	own := ports.New(ports.Range{Lo: cfg.InboundPort, Hi: cfg.InboundPort},
		ports.Range{Lo: cfg.AdminPort, Hi: cfg.AdminPort},
		ports.Range{Lo: cfg.TapPort, Hi: cfg.TapPort},
		ports.Range{Lo: cfg.OutboundPort, Hi: cfg.OutboundPort})
	for _, r := range own.Union(cfg.SkipInboundPorts).Ranges() {
		w("-A %s -p tcp -m tcp --dport %s -j RETURN", InboundChain, portSpec(r))
	}
	w("-A %s -p tcp -j REDIRECT --to-ports %d", InboundChain, cfg.InboundPort)
	// Outbound: the proxy's own connections, loopback and skips leave as
	// they are; everything else the application sends goes to the proxy.
	w("-A %s -m owner --uid-owner %d -j RETURN", OutboundChain, cfg.ProxyUID)
	w("-A %s -o lo -j RETURN", OutboundChain)
	for _, r := range cfg.SkipOutboundPorts.Ranges() {
		w("-A %s -p tcp -m tcp --dport %s -j RETURN", OutboundChain, portSpec(r))
	}
	for _, p := range cfg.SkipOutboundSubnets {
		if p.Addr().Is6() == v6 {
			w("-A %s -d %s -j RETURN", OutboundChain, p)
		}
	}
	w("-A %s -p tcp -j REDIRECT --to-ports %d", OutboundChain, cfg.OutboundPort)
	w("COMMIT")
	return b.String()
}

// jumps are the rules in the built-in chains that enter ours.
var jumps = [][]string{
	{"PREROUTING", "-p", "tcp", "-j", InboundChain},
	{"OUTPUT", "-p", "tcp", "-j", OutboundChain},
}

func portSpec(r ports.Range) string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d:%d", r.Lo, r.Hi)
}

// Install puts the rules in place, replacing any earlier version of them.
// Running it twice leaves exactly one copy.
func Install(ctx context.Context, cfg Config, log *slog.Logger) error {
	// Without ip6tables on the PATH there is no IPv6 to intercept; a
	// custom Command (tests) is trusted to have it.
	lookPath := cfg.Command == nil
	cfg = cfg.withDefaults()
	if cfg.ProxyUID < 0 {
		return fmt.Errorf("iptables: proxy UID %d is not a UID", cfg.ProxyUID)
	}
	if err := install(ctx, cfg, ipv4, log); err != nil {
		return err
	}
	if cfg.NoIPv6 {
		return nil
	}
	if _, err := exec.LookPath(ipv6.restore); err != nil && lookPath {
		log.Info("ip6tables not installed; IPv6 traffic is not intercepted")
		return nil
	}
	if err := install(ctx, cfg, ipv6, log); err != nil {
		log.Warn("IPv6 rules not installed; IPv6 traffic is not intercepted", "err", err)
	}
	return nil
}

func install(ctx context.Context, cfg Config, fam family, log *slog.Logger) error {
	rules := Rules(cfg, fam.v6)
	if _, err := run(ctx, cfg, strings.NewReader(rules), fam.restore, "--noflush"); err != nil {
		return err
	}
	for _, j := range jumps {
		if err := ensureJump(ctx, cfg, fam, j); err != nil {
			return err
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(rules), "\n") {
		if strings.HasPrefix(line, "-A") {
			log.Info("installed rule", "family", fam.bin, "rule", line)
		}
	}
	log.Info("interception installed", "family", fam.bin, "inbound_port", cfg.InboundPort,
		"outbound_port", cfg.OutboundPort, "proxy_uid", cfg.ProxyUID)
	return nil
}

func ensureJump(ctx context.Context, cfg Config, fam family, rule []string) error {
	check := append([]string{"-w", "-t", "nat", "-C"}, rule...)
	if _, err := run(ctx, cfg, nil, fam.bin, check...); err == nil {
		return nil
	} else if errors.Is(err, ErrMissing) || errors.Is(err, ErrPermission) {
		return err
	}
	add := append([]string{"-w", "-t", "nat", "-A"}, rule...)
	_, err := run(ctx, cfg, nil, fam.bin, add...)
	return err
}

// Cleanup removes the jump rules and our chains. With nothing installed it
// does nothing and succeeds.
func Cleanup(ctx context.Context, cfg Config, log *slog.Logger) error {
	lookPath := cfg.Command == nil
	cfg = cfg.withDefaults()
	fams := []family{ipv4}
	if !cfg.NoIPv6 {
		if _, err := exec.LookPath(ipv6.bin); err == nil || !lookPath {
			fams = append(fams, ipv6)
		}
	}
	for _, fam := range fams {
		err := cleanup(ctx, cfg, fam)
		if err != nil && fam.v6 {
			log.Warn("IPv6 rules not removed", "err", err)
			continue
		}
		if err != nil {
			return err
		}
		log.Info("interception removed", "family", fam.bin)
	}
	return nil
}

func cleanup(ctx context.Context, cfg Config, fam family) error {
	saved, err := run(ctx, cfg, nil, fam.save, "-t", "nat")
	if err != nil {
		return err
	}
	for _, j := range jumps {
		// Delete every copy, in case something added one twice.
		for strings.Contains(saved, "-A "+strings.Join(j, " ")) {
			del := append([]string{"-w", "-t", "nat", "-D"}, j...)
			if _, err := run(ctx, cfg, nil, fam.bin, del...); err != nil {
				return err
			}
			if saved, err = run(ctx, cfg, nil, fam.save, "-t", "nat"); err != nil {
				return err
			}
		}
	}
	for _, chain := range []string{InboundChain, OutboundChain} {
		if !strings.Contains(saved, ":"+chain+" ") {
			continue
		}
		for _, op := range []string{"-F", "-X"} {
			if _, err := run(ctx, cfg, nil, fam.bin, "-w", "-t", "nat", op, chain); err != nil {
				return err
			}
		}
	}
	return nil
}

// run executes one iptables tool and turns its failures into errors that
// say what to do.
func run(ctx context.Context, cfg Config, stdin *strings.Reader, name string, args ...string) (string, error) {
	cmd := cfg.Command(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err == nil {
		return out.String(), nil
	}
	msg := strings.TrimSpace(errb.String())
	switch {
	case errors.Is(err, exec.ErrNotFound) || strings.Contains(msg, "executable file not found") ||
		strings.Contains(msg, "No such file or directory") && strings.Contains(msg, name):
		return "", fmt.Errorf("%s: %w", name, ErrMissing)
	case strings.Contains(msg, "Permission denied") || strings.Contains(msg, "you must be root") ||
		strings.Contains(msg, "Operation not permitted"):
		return "", fmt.Errorf("%s: %s: %w", name, msg, ErrPermission)
	}
	return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
}
