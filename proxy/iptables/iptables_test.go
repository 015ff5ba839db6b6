package iptables

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/internal/ports"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRules(t *testing.T) {
	tests := []struct {
		name string // also the golden files' name: testdata/<name>.v4.golden, .v6.golden
		cfg  Config
	}{
		{name: "defaults", cfg: Config{}},
		{name: "custom-ports-uid", cfg: Config{InboundPort: 15006, OutboundPort: 15001, AdminPort: 15020, ProxyUID: 1337}},
		{
			name: "skip-ports",
			cfg: Config{
				// 4141-4142 merges with the proxy's own 4140 and 4143.
				SkipInboundPorts:  ports.MustParse("22,8000-8010,4141-4142"),
				SkipOutboundPorts: ports.MustParse("25,3306-3307,9000-9100"),
			},
		},
		{
			name: "skip-subnets",
			cfg: Config{SkipOutboundSubnets: mustParseSubnets(t,
				"10.0.0.0/8, fd00::/8, 192.168.0.0/16, 2001:db8::/32, 169.254.169.254/32")},
		},
	}
	for _, tc := range tests {
		for _, v6 := range []bool{false, true} {
			name := tc.name + ".v4"
			if v6 {
				name = tc.name + ".v6"
			}
			t.Run(name, func(t *testing.T) {
				got := Rules(tc.cfg, v6)
				checkSubnetFamilies(t, got, tc.cfg.SkipOutboundSubnets, v6)
				golden(t, filepath.Join("testdata", name+".golden"), got)
			})
		}
	}
}

// checkSubnetFamilies checks that rules name every skipped subnet of its
// family and none of the other.
func checkSubnetFamilies(t *testing.T, rules string, subnets []netip.Prefix, v6 bool) {
	t.Helper()
	var got, want []string
	for _, line := range strings.Split(rules, "\n") {
		if _, rest, ok := strings.Cut(line, " -d "); ok {
			got = append(got, strings.Fields(rest)[0])
		}
	}
	for _, p := range subnets {
		if p.Addr().Is6() == v6 {
			want = append(want, p.String())
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("skipped subnets in the v6=%t rules mismatch (-want +got):\n%s", v6, diff)
	}
}

// golden compares got with the file at path, or rewrites the file with -update.
func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got), rerun with -update if intended:\n%s", path, diff)
	}
}

func mustParseSubnets(t testing.TB, s string) []netip.Prefix {
	t.Helper()
	subnets, err := ParseSubnets(s)
	if err != nil {
		t.Fatal(err)
	}
	return subnets
}

func TestParseSubnets(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr string // substring of the error; "" for none
	}{
		{name: "empty", in: "", want: nil},
		{name: "only commas and blanks", in: " , ,", want: nil},
		{name: "one", in: "10.0.0.0/8", want: []string{"10.0.0.0/8"}},
		{name: "mixed families with blanks", in: " 10.0.0.0/8 , fd00::/8,,192.168.1.0/24 ", want: []string{"10.0.0.0/8", "fd00::/8", "192.168.1.0/24"}},
		{name: "host bits masked", in: "10.1.2.3/8", want: []string{"10.0.0.0/8"}},
		{name: "IPv6 host bits masked", in: "fd00::1/8", want: []string{"fd00::/8"}},
		{name: "single host", in: "169.254.169.254/32", want: []string{"169.254.169.254/32"}},
		{name: "address without a length", in: "10.0.0.1", wantErr: `subnet "10.0.0.1"`},
		{name: "length too long", in: "10.0.0.0/33", wantErr: `subnet "10.0.0.0/33"`},
		{name: "not an address", in: "pods", wantErr: `subnet "pods"`},
		{name: "one bad among good", in: "10.0.0.0/8,fd00::/129", wantErr: `subnet "fd00::/129"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			subnets, err := ParseSubnets(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseSubnets(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
				}
				if subnets != nil {
					t.Errorf("ParseSubnets(%q) = %v along with its error, want nil", tc.in, subnets)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSubnets(%q): %v", tc.in, err)
			}
			var got []string
			for _, p := range subnets {
				got = append(got, p.String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseSubnets(%q) mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

// The tests below run Install and Cleanup against fakeIPTables, a fake
// of iptables, ip6tables and their -save and -restore tools that is a real
// process: the test binary run again as TestHelperProcess. It keeps the nat
// table of each family in a file, so commands change what later ones see,
// and logs every call. What real iptables does with the rules is covered
// by TestInstallInNetworkNamespace below (as root) and by the
// network-namespace suite under test/.

const (
	fakeEnv       = "MESH_IPTABLES_FAKE_DIR" // set: the test binary is the fake
	fakeFailEnv   = "MESH_IPTABLES_FAKE_FAIL_ON"
	fakeStderrEnv = "MESH_IPTABLES_FAKE_STDERR"
)

// emptyNat is the nat table of a fresh network namespace, as iptables-save
// prints it (without comments).
const emptyNat = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"

type fakeIPTables struct {
	dir string
	// failOn makes every call whose command line contains it fail with
	// stderr, as the real tools fail; "" fails nothing.
	failOn, stderr string
}

// call is one logged invocation: the binary's name and arguments, and what
// it read from stdin.
type call struct {
	Args  []string
	Stdin string
}

func newFake(t *testing.T, nat string) *fakeIPTables {
	t.Helper()
	f := &fakeIPTables{dir: t.TempDir()}
	for _, fam := range []string{"iptables", "ip6tables"} {
		if err := os.WriteFile(filepath.Join(f.dir, fam), []byte(nat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// Command is the fake's Config.Command.
func (f *fakeIPTables) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"-test.run=^TestHelperProcess$", "--", name}, args...)...)
	cmd.Env = append(os.Environ(), fakeEnv+"="+f.dir, fakeFailEnv+"="+f.failOn, fakeStderrEnv+"="+f.stderr,
		// Under -race a process sleeps a second at exit by default.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	return cmd
}

// calls returns the calls logged so far and forgets them.
func (f *fakeIPTables) calls(t *testing.T) []call {
	t.Helper()
	path := filepath.Join(f.dir, "calls")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	var calls []call
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var c call
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("call log line %q: %v", line, err)
		}
		calls = append(calls, c)
	}
	return calls
}

// nat returns the nat table of family fam ("iptables" or "ip6tables").
func (f *fakeIPTables) nat(t *testing.T, fam string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, fam))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHelperProcess is the fake iptables; it does nothing unless the test
// binary is run by fakeIPTables.Command.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(fakeEnv)
	if dir == "" {
		return
	}
	args := os.Args
	for len(args) > 0 && args[0] != "--" {
		args = args[1:]
	}
	stdout, stderr, code := fakeRun(dir, args[1:])
	os.Stdout.WriteString(stdout)
	os.Stderr.WriteString(stderr)
	os.Exit(code)
}

// fakeRun runs one fake command line and returns its stdout, stderr and
// exit code.
func fakeRun(dir string, args []string) (stdout, stderr string, code int) {
	name := args[0]
	var stdin []byte
	if strings.HasSuffix(name, "-restore") {
		stdin, _ = io.ReadAll(os.Stdin)
	}
	logged, _ := json.Marshal(call{Args: args, Stdin: string(stdin)})
	if lf, err := os.OpenFile(filepath.Join(dir, "calls"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		lf.Write(append(logged, '\n'))
		lf.Close()
	}
	if on := os.Getenv(fakeFailEnv); on != "" && strings.Contains(strings.Join(args, " "), on) {
		return "", os.Getenv(fakeStderrEnv) + "\n", 4
	}
	fam := strings.TrimSuffix(strings.TrimSuffix(name, "-save"), "-restore")
	path := filepath.Join(dir, fam)
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Sprintf("fake: %v\n", err), 3
	}
	nat := parseNat(string(b))
	switch {
	case strings.HasSuffix(name, "-save"):
		if !slices.Equal(args[1:], []string{"-t", "nat"}) {
			return "", "fake: want -save -t nat\n", 2
		}
		return nat.String(), "", 0
	case strings.HasSuffix(name, "-restore"):
		// Without --noflush, restore would flush the pod's whole table.
		if !slices.Equal(args[1:], []string{"--noflush"}) {
			return "", "fake: want -restore --noflush\n", 2
		}
		err = nat.restore(string(stdin))
	default:
		err = nat.command(args[1:])
	}
	if err != nil {
		return "", fmt.Sprintf("%s v1.8.9 (nf_tables): %v\n", fam, err), 1
	}
	if err := os.WriteFile(path, []byte(nat.String()), 0o644); err != nil {
		return "", fmt.Sprintf("fake: %v\n", err), 3
	}
	return "", "", 0
}

// fakeNat is a nat table: its chains in order and its rules, each as
// iptables-save prints it ("-A CHAIN ...").
type fakeNat struct {
	chains []string
	rules  []string
}

var builtin = []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}

func parseNat(s string) *fakeNat {
	nat := &fakeNat{}
	for _, line := range strings.Split(s, "\n") {
		switch {
		case strings.HasPrefix(line, ":"):
			nat.chains = append(nat.chains, strings.Fields(line[1:])[0])
		case strings.HasPrefix(line, "-A "):
			nat.rules = append(nat.rules, line)
		}
	}
	return nat
}

func (n *fakeNat) String() string {
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, c := range n.chains {
		if slices.Contains(builtin, c) {
			fmt.Fprintf(&b, ":%s ACCEPT [0:0]\n", c)
		} else {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
	}
	// Like iptables-save: each chain's rules in order, chain by chain.
	for _, c := range n.chains {
		for _, r := range n.rules {
			if strings.HasPrefix(r, "-A "+c+" ") {
				b.WriteString(r + "\n")
			}
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func (n *fakeNat) flush(chain string) {
	n.rules = slices.DeleteFunc(n.rules, func(r string) bool { return strings.HasPrefix(r, "-A "+chain+" ") })
}

// add appends rule ("-A CHAIN ..."), which like iptables needs its chain
// and the chain it jumps to, unless that is a target such as RETURN.
func (n *fakeNat) add(rule string) error {
	f := strings.Fields(rule)
	if !slices.Contains(n.chains, f[1]) {
		return fmt.Errorf("Chain '%s' does not exist", f[1])
	}
	if i := slices.Index(f, "-j"); i > 0 && strings.HasPrefix(f[i+1], "MESH_") && !slices.Contains(n.chains, f[i+1]) {
		return fmt.Errorf("Chain '%s' does not exist", f[i+1])
	}
	n.rules = append(n.rules, rule)
	return nil
}

// restore applies iptables-restore --noflush input: a declared chain is
// created, or flushed if it exists; then the rules are appended.
func (n *fakeNat) restore(in string) error {
	sc := bufio.NewScanner(strings.NewReader(in))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "*nat" || line == "COMMIT":
		case strings.HasPrefix(line, ":"):
			chain := strings.Fields(line[1:])[0]
			if slices.Contains(n.chains, chain) {
				n.flush(chain)
			} else {
				n.chains = append(n.chains, chain)
			}
		case strings.HasPrefix(line, "-A "):
			if err := n.add(line); err != nil {
				return err
			}
		default:
			return fmt.Errorf("restore: unexpected line %q", line)
		}
	}
	return nil
}

// command applies "-w -t nat -OP CHAIN [rule...]".
func (n *fakeNat) command(args []string) error {
	if len(args) < 5 || !slices.Equal(args[:3], []string{"-w", "-t", "nat"}) {
		return fmt.Errorf("fake: want -w -t nat -OP CHAIN, got %q", args)
	}
	op, chain, rule := args[3], args[4], strings.Join(append([]string{"-A"}, args[4:]...), " ")
	switch op {
	case "-C":
		if !slices.Contains(n.rules, rule) {
			return errors.New("Bad rule (does a matching rule exist in that chain?)")
		}
	case "-A":
		return n.add(rule)
	case "-D":
		i := slices.Index(n.rules, rule)
		if i < 0 {
			return errors.New("Bad rule (does a matching rule exist in that chain?)")
		}
		n.rules = slices.Delete(n.rules, i, i+1)
	case "-F":
		if !slices.Contains(n.chains, chain) {
			return errors.New("No chain/target/match by that name")
		}
		n.flush(chain)
	case "-X":
		for _, r := range n.rules {
			if strings.HasSuffix(r, " -j "+chain) {
				return errors.New("Too many links")
			}
			if strings.HasPrefix(r, "-A "+chain+" ") {
				return errors.New("Directory not empty")
			}
		}
		i := slices.Index(n.chains, chain)
		if i < 0 {
			return errors.New("No chain/target/match by that name")
		}
		n.chains = slices.Delete(n.chains, i, i+1)
	default:
		return fmt.Errorf("fake: unknown operation %q", op)
	}
	return nil
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// args lists only the Args of calls, for comparisons where stdin is empty.
func args(calls []call) [][]string {
	var out [][]string
	for _, c := range calls {
		out = append(out, c.Args)
	}
	return out
}

var (
	jumpIn  = []string{"PREROUTING", "-p", "tcp", "-j", InboundChain}
	jumpOut = []string{"OUTPUT", "-p", "tcp", "-j", OutboundChain}
)

func nat(bin, op string, rule ...string) []string {
	return append([]string{bin, "-w", "-t", "nat", op}, rule...)
}

// installedNat is the nat table after installing Rules(cfg, v6) into emptyNat.
func installedNat(t *testing.T, cfg Config, v6 bool) string {
	t.Helper()
	n := parseNat(emptyNat)
	if err := n.restore(Rules(cfg, v6)); err != nil {
		t.Fatal(err)
	}
	n.rules = append(n.rules, "-A "+strings.Join(jumpIn, " "), "-A "+strings.Join(jumpOut, " "))
	return n.String()
}

func TestInstall(t *testing.T) {
	t.Parallel() // each test has a fake of its own
	cfg := Config{SkipOutboundSubnets: mustParseSubnets(t, "10.0.0.0/8,fd00::/8")}
	f := newFake(t, emptyNat)
	cfg.Command = f.Command
	ctx := t.Context()

	if err := Install(ctx, cfg, discardLog()); err != nil {
		t.Fatalf("Install: %v", err)
	}
	// Our chains in one iptables-restore --noflush, then each jump
	// checked with -C and, since it is missing, added with -A.
	want := []call{}
	for _, bin := range []string{"iptables", "ip6tables"} {
		want = append(want,
			call{Args: []string{bin + "-restore", "--noflush"}, Stdin: Rules(cfg, bin == "ip6tables")},
			call{Args: nat(bin, "-C", jumpIn...)},
			call{Args: nat(bin, "-A", jumpIn...)},
			call{Args: nat(bin, "-C", jumpOut...)},
			call{Args: nat(bin, "-A", jumpOut...)},
		)
	}
	if diff := cmp.Diff(want, f.calls(t)); diff != "" {
		t.Errorf("first Install's calls mismatch (-want +got):\n%s", diff)
	}
	checkNat(t, f, installedNat(t, cfg, false), installedNat(t, cfg, true))

	// Installing again replaces our chains and finds the jumps in place.
	if err := Install(ctx, cfg, discardLog()); err != nil {
		t.Fatalf("second Install: %v", err)
	}
	want = want[:0]
	for _, bin := range []string{"iptables", "ip6tables"} {
		want = append(want,
			call{Args: []string{bin + "-restore", "--noflush"}, Stdin: Rules(cfg, bin == "ip6tables")},
			call{Args: nat(bin, "-C", jumpIn...)},
			call{Args: nat(bin, "-C", jumpOut...)},
		)
	}
	if diff := cmp.Diff(want, f.calls(t)); diff != "" {
		t.Errorf("second Install's calls mismatch (-want +got):\n%s", diff)
	}
	checkNat(t, f, installedNat(t, cfg, false), installedNat(t, cfg, true))
}

// checkNat compares the fake's nat tables with the wanted ones.
func checkNat(t *testing.T, f *fakeIPTables, want4, want6 string) {
	t.Helper()
	if diff := cmp.Diff(want4, f.nat(t, "iptables")); diff != "" {
		t.Errorf("iptables nat table mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want6, f.nat(t, "ip6tables")); diff != "" {
		t.Errorf("ip6tables nat table mismatch (-want +got):\n%s", diff)
	}
}

func TestInstallNoIPv6(t *testing.T) {
	t.Parallel() // each test has a fake of its own
	f := newFake(t, emptyNat)
	if err := Install(t.Context(), Config{Command: f.Command, NoIPv6: true}, discardLog()); err != nil {
		t.Fatalf("Install: %v", err)
	}
	for _, c := range f.calls(t) {
		if strings.HasPrefix(c.Args[0], "ip6") {
			t.Errorf("Install with NoIPv6 ran %q", c.Args)
		}
	}
	checkNat(t, f, installedNat(t, Config{}, false), emptyNat)
}

func TestCleanup(t *testing.T) {
	t.Parallel() // each test has a fake of its own
	f := newFake(t, emptyNat)
	cfg := Config{Command: f.Command}
	ctx := t.Context()
	if err := Install(ctx, cfg, discardLog()); err != nil {
		t.Fatalf("Install: %v", err)
	}
	f.calls(t)

	if err := Cleanup(ctx, cfg, discardLog()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	// Jumps first (each delete followed by a fresh save), then our chains
	// are flushed and deleted: -X fails while a jump still refers to them.
	var want [][]string
	for _, bin := range []string{"iptables", "ip6tables"} {
		save := []string{bin + "-save", "-t", "nat"}
		want = append(want,
			save, nat(bin, "-D", jumpIn...), save, nat(bin, "-D", jumpOut...), save,
			nat(bin, "-F", InboundChain), nat(bin, "-X", InboundChain),
			nat(bin, "-F", OutboundChain), nat(bin, "-X", OutboundChain),
		)
	}
	if diff := cmp.Diff(want, args(f.calls(t))); diff != "" {
		t.Errorf("Cleanup's calls mismatch (-want +got):\n%s", diff)
	}
	checkNat(t, f, emptyNat, emptyNat)

	// With nothing installed Cleanup only looks.
	if err := Cleanup(ctx, cfg, discardLog()); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
	want = [][]string{{"iptables-save", "-t", "nat"}, {"ip6tables-save", "-t", "nat"}}
	if diff := cmp.Diff(want, args(f.calls(t))); diff != "" {
		t.Errorf("second Cleanup's calls mismatch (-want +got):\n%s", diff)
	}
	checkNat(t, f, emptyNat, emptyNat)
}

// TestCleanupDuplicateJumps checks that Cleanup removes every copy of a
// jump, should something have added one twice, and leaves other rules be.
func TestCleanupDuplicateJumps(t *testing.T) {
	t.Parallel() // each test has a fake of its own
	n := parseNat(installedNat(t, Config{}, false))
	n.rules = append(n.rules, "-A "+strings.Join(jumpIn, " "), "-A OUTPUT -p udp -j RETURN")
	f := newFake(t, n.String())
	if err := Cleanup(t.Context(), Config{Command: f.Command, NoIPv6: true}, discardLog()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	want := parseNat(emptyNat)
	want.rules = []string{"-A OUTPUT -p udp -j RETURN"}
	if diff := cmp.Diff(want.String(), f.nat(t, "iptables")); diff != "" {
		t.Errorf("nat table mismatch (-want +got):\n%s", diff)
	}
}

func TestInstallErrors(t *testing.T) {
	t.Parallel() // each test has a fake of its own
	const denied = "iptables-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"
	tests := []struct {
		name      string
		cfg       Config
		fake      *fakeIPTables // failOn and stderr; nil: the binaries are missing
		wantErr   error         // for errors.Is; nil: no error wanted
		wantInErr string        // substring of the error, if any
		wantCalls [][]string
		wantLog   string // substring of the log
	}{
		{
			name:      "binary missing from PATH",
			wantErr:   ErrMissing,
			wantInErr: "iptables-restore: iptables not found",
		},
		{
			name:      "binary missing in the namespace",
			fake:      &fakeIPTables{failOn: "iptables-restore", stderr: "nsenter: failed to execute iptables-restore: No such file or directory"},
			wantErr:   ErrMissing,
			wantCalls: [][]string{{"iptables-restore", "--noflush"}},
		},
		{
			name:      "not root",
			fake:      &fakeIPTables{failOn: "iptables", stderr: denied},
			wantErr:   ErrPermission,
			wantInErr: "Permission denied (you must be root)",
			wantCalls: [][]string{{"iptables-restore", "--noflush"}},
		},
		{
			name:    "not allowed to check a jump: no add attempted",
			fake:    &fakeIPTables{failOn: "-C", stderr: "iptables: Operation not permitted"},
			wantErr: ErrPermission,
			wantCalls: [][]string{
				{"iptables-restore", "--noflush"},
				nat("iptables", "-C", jumpIn...),
			},
		},
		{
			name:      "adding a jump fails",
			fake:      &fakeIPTables{failOn: "-A PREROUTING", stderr: "iptables: Resource temporarily unavailable."},
			wantInErr: "iptables -w -t nat -A PREROUTING -p tcp -j MESH_PROXY_INBOUND: exit status 4: iptables: Resource temporarily unavailable.",
			wantCalls: [][]string{
				{"iptables-restore", "--noflush"},
				nat("iptables", "-C", jumpIn...),
				nat("iptables", "-A", jumpIn...),
			},
		},
		{
			name:      "negative proxy UID",
			cfg:       Config{ProxyUID: -1},
			fake:      &fakeIPTables{},
			wantInErr: "proxy UID -1 is not a UID",
		},
		{
			name:    "IPv6 failure is only logged",
			fake:    &fakeIPTables{failOn: "ip6tables-restore", stderr: "ip6tables-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Address family not supported by protocol"},
			wantLog: "IPv6 rules not installed",
			wantCalls: [][]string{
				{"iptables-restore", "--noflush"},
				nat("iptables", "-C", jumpIn...), nat("iptables", "-A", jumpIn...),
				nat("iptables", "-C", jumpOut...), nat("iptables", "-A", jumpOut...),
				{"ip6tables-restore", "--noflush"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg
			f := newFake(t, emptyNat)
			if tc.fake == nil {
				cfg.Command = func(ctx context.Context, name string, args ...string) *exec.Cmd {
					return exec.CommandContext(ctx, "mesh-test-no-such-"+name, args...)
				}
			} else {
				f.failOn, f.stderr = tc.fake.failOn, tc.fake.stderr
				cfg.Command = f.Command
			}
			var log bytes.Buffer
			err := Install(t.Context(), cfg, slog.New(slog.NewTextHandler(&log, nil)))
			checkErr(t, err, tc.wantErr, tc.wantInErr)
			if diff := cmp.Diff(tc.wantCalls, args(f.calls(t))); diff != "" {
				t.Errorf("calls mismatch (-want +got):\n%s", diff)
			}
			if !strings.Contains(log.String(), tc.wantLog) {
				t.Errorf("log %q does not say %q", log.String(), tc.wantLog)
			}
		})
	}
}

// checkErr checks err against a sentinel (nil: none) and a substring of
// its message ("": any); no error is wanted when both are empty.
func checkErr(t *testing.T, err, wantErr error, wantInErr string) {
	t.Helper()
	if wantErr == nil && wantInErr == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %v %q", wantErr, wantInErr)
	}
	if wantErr != nil && !errors.Is(err, wantErr) {
		t.Errorf("error %q is not %q", err, wantErr)
	}
	if !strings.Contains(err.Error(), wantInErr) {
		t.Errorf("error %q does not say %q", err, wantInErr)
	}
}

func TestCleanupErrors(t *testing.T) {
	t.Parallel() // each test has a fake of its own
	tests := []struct {
		name    string
		fake    fakeIPTables
		wantErr error
		wantLog string
	}{
		{
			name:    "not root",
			fake:    fakeIPTables{failOn: "iptables-save", stderr: "iptables-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"},
			wantErr: ErrPermission,
		},
		{
			name:    "IPv6 failure is only logged",
			fake:    fakeIPTables{failOn: "ip6tables-save", stderr: "ip6tables-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Address family not supported by protocol"},
			wantLog: "IPv6 rules not removed",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, installedNat(t, Config{}, false))
			f.failOn, f.stderr = tc.fake.failOn, tc.fake.stderr
			var log bytes.Buffer
			err := Cleanup(t.Context(), Config{Command: f.Command}, slog.New(slog.NewTextHandler(&log, nil)))
			checkErr(t, err, tc.wantErr, "")
			if !strings.Contains(log.String(), tc.wantLog) {
				t.Errorf("log %q does not say %q", log.String(), tc.wantLog)
			}
		})
	}
}

// TestInstallInNetworkNamespace installs, reinstalls and removes the rules
// with the real iptables, in a network namespace made for the test.
func TestInstallInNetworkNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		msg := "needs root to create a network namespace and change its iptables rules; the fake-iptables tests cover the rest"
		if os.Getenv("MESH_REQUIRE_ROOT_TESTS") == "1" {
			t.Fatal(msg + "; MESH_REQUIRE_ROOT_TESTS=1 forbids skipping it")
		}
		t.Skip(msg)
	}
	for _, tool := range []string{"ip", "nsenter", "iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: apt-get install iptables iproute2 util-linux", tool)
		}
	}
	ns := newNetns(t)
	inNS := func(ctx context.Context, name string, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "nsenter", append([]string{"--net=/var/run/netns/" + ns, "--", name}, args...)...)
	}
	save := func(bin string) string {
		t.Helper()
		out, err := inNS(t.Context(), bin+"-save", "-t", "nat").CombinedOutput()
		if err != nil {
			t.Fatalf("%s-save: %v: %s", bin, err, out)
		}
		return string(out)
	}
	cfg := Config{
		Command:             inNS,
		SkipInboundPorts:    ports.MustParse("22,8000-8010"),
		SkipOutboundPorts:   ports.MustParse("25"),
		SkipOutboundSubnets: mustParseSubnets(t, "10.0.0.0/8,fd00::/8"),
	}
	ctx := t.Context()
	for i := range 2 { // the second Install must change nothing
		if err := Install(ctx, cfg, discardLog()); err != nil {
			t.Fatalf("Install #%d: %v", i+1, err)
		}
		for _, bin := range []string{"iptables", "ip6tables"} {
			got := save(bin)
			for _, line := range []string{
				":" + InboundChain + " - [0:0]",
				":" + OutboundChain + " - [0:0]",
				"-A " + strings.Join(jumpIn, " "),
				"-A " + strings.Join(jumpOut, " "),
			} {
				if n := countLines(got, line); n != 1 {
					t.Errorf("after Install #%d, %s-save shows %q %d times, want once:\n%s", i+1, bin, line, n, got)
				}
			}
			// What iptables-save shows an operator is what Rules rendered.
			if diff := cmp.Diff(ourRules(Rules(cfg, bin == "ip6tables")), ourRules(got)); diff != "" {
				t.Errorf("after Install #%d, %s rules mismatch (-want +got):\n%s", i+1, bin, diff)
			}
		}
	}
	for i := range 2 { // the second Cleanup finds nothing to do
		if err := Cleanup(ctx, cfg, discardLog()); err != nil {
			t.Fatalf("Cleanup #%d: %v", i+1, err)
		}
		for _, bin := range []string{"iptables", "ip6tables"} {
			if got := save(bin); strings.Contains(got, "MESH_PROXY") {
				t.Errorf("after Cleanup #%d, %s-save still shows our rules:\n%s", i+1, bin, got)
			}
		}
	}
}

// newNetns creates a network namespace that is deleted when t ends, also
// when it fails.
func newNetns(t *testing.T) string {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	ns := "mesh-ipt-" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	return ns
}

func countLines(s, line string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if l == line {
			n++
		}
	}
	return n
}

// ourRules returns the rules in our chains from iptables-save or
// iptables-restore text.
func ourRules(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "-A "+InboundChain+" ") || strings.HasPrefix(l, "-A "+OutboundChain+" ") {
			out = append(out, l)
		}
	}
	return out
}
