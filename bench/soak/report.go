package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mesh-dev/mesh/bench/internal/benchdoc"
)

// Goals of issue 12.
const (
	goalServerFailed = 0.001 // of the requests while a server pod is killed
	// minRate is the share of --rps the steady phase must reach for its
	// figures to be "at that rate".
	minRate = 0.95
	// minThrough is the share of the steady requests the client's proxy
	// must count outbound: proof that the load crossed the mesh.
	minThrough = 0.9
)

func (b *bench) describe(ctx context.Context) {
	b.res.host = benchdoc.DescribeHost(ctx, "proxy", "controller", "identity", "install", "bench/soak", "testdata/demo")
	b.res.loadBefore = loadAvg()
}

// loadAvg returns the 1, 5 and 15 minute load averages as /proc/loadavg
// writes them.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// phase returns the phase named name, or an empty one.
func (r result) phase(name string) *phaseStats {
	for _, p := range r.phases {
		if p.name == name {
			return p
		}
	}
	return &phaseStats{name: name}
}

func (p *phaseStats) length() time.Duration { return p.ended.Sub(p.began) }

func (p *phaseStats) rate() float64 {
	if p.length() <= 0 {
		return 0
	}
	return float64(p.requests) / p.length().Seconds()
}

func (p *phaseStats) failedShare() float64 {
	if p.requests == 0 {
		return 0
	}
	return float64(p.failures) / float64(p.requests)
}

// problems lists what makes the run's figures untrustworthy; a goal not
// met is a result, not a problem.
func (b *bench) problems() []string {
	var out []string
	r := b.res
	steady := r.phase(phaseSteady)
	if got := steady.rate(); got < minRate*b.cfg.RPS {
		out = append(out, fmt.Sprintf("the steady phase reached %.0f RPS of the %.0f asked (%d requests started over %v late): the machine could not drive the load",
			got, b.cfg.RPS, steady.late, lateAfter))
	}
	for _, p := range r.phases {
		if p.requests == 0 {
			out = append(out, "no request in phase "+p.name)
		}
	}
	for _, t := range b.targets {
		if len(t.readings) < 3 {
			out = append(out, fmt.Sprintf("%s: %d readings of /metrics (%d failed, last: %s)", t.name, len(t.readings), t.failed, t.lastErr))
		}
	}
	if c := b.client; c != nil && len(c.readings) >= 2 {
		first, last := c.readings[0], c.readings[len(c.readings)-1]
		want := steady.rate() * last.at.Sub(first.at).Seconds()
		if got := last.outbound - first.outbound; got < minThrough*want {
			out = append(out, fmt.Sprintf("the proxy of %s counted %.0f outbound HTTP requests while the benchmark sent about %.0f: the load did not cross the mesh",
				r.clientPod, got, want))
		}
	}
	return out
}

// publish prints the report, and writes it into cfg.Write when the run
// passed its checks.
func (b *bench) publish() error {
	block := b.markdown()
	fmt.Fprintln(b.out, block)
	if p := b.problems(); len(p) > 0 {
		return errors.New("the run failed its checks: " + strings.Join(p, "; "))
	}
	if b.cfg.Write == "" {
		return nil
	}
	if err := docBlock.Update(b.cfg.Write, block); err != nil {
		return err
	}
	b.logf("wrote the results into %s", b.cfg.Write)
	return nil
}

// markdown is the run's report as the generated block of
// docs/benchmarks.md.
func (b *bench) markdown() string {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	c, r := b.cfg, b.res
	w("%s: written by bench/soak --write; edits in here are overwritten -->\n\n", docBlock.Begin)
	w("### Run of %s\n\n", b.began.UTC().Format("2006-01-02 15:04 MST"))
	w("- Machine: %d CPUs, %s, %.0f GB RAM, kernel %s. Shared: other engineers build and test on it.\n",
		r.host.CPUs, r.host.CPUModel, r.host.MemTotal/(1<<30), r.host.Kernel)
	w("- Kubernetes %s, the local single-node cluster (`make cluster-up`): API server, etcd, kubelet, every pod "+
		"and the benchmark's client share those CPUs.\n", r.k8sVersion)
	installed := "already installed"
	if r.mesh.Installed {
		installed = "installed by the run"
	}
	w("- mesh %s (%s), from %s, built with %s.\n", r.mesh.Version, installed, r.host.Commit, r.host.GoVersion)
	for _, n := range r.notes {
		w("- **Went on without**: %s.\n", n)
	}
	w("- Load average before the run: %s, after: %s.\n", r.loadBefore, r.loadAfter)
	w("- Command: `go run ./bench/soak %s` (what `make soak` runs).\n", strings.Join(c.Args, " "))
	w("- Load: %s requests per second, open loop (a stall is caught up, at most %d in flight), GET / and POST /buy alternately, "+
		"each with a %v timeout; a failure is a transport error or a status other than 2xx. Sent from inside pod %s's network namespace "+
		"to web's ClusterIP %s, so that pod's proxy intercepts it: loadgen proxy → web proxy → web → catalog (gRPC) and orders (HTTP/2) → "+
		"payments (TCP), every hop between two proxies. The demo loadgen's own 5 RPS run beside it. %d pods of %s, one of every other Deployment.\n\n",
		rps(c.RPS), c.Concurrency, c.Timeout, r.clientPod, r.web, c.Replicas, c.Kill)

	b.phaseTable(&sb)
	b.errorTable(&sb)
	b.resourceTable(&sb)
	b.verdicts(&sb)
	w("\n%s", docBlock.End)
	return sb.String()
}

func (b *bench) phaseTable(sb *strings.Builder) {
	r := b.res
	sb.WriteString("| phase | length | requests | RPS | failed | failed % | late | p50 ms | p99 ms | p99.9 ms | max ms |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range r.phases {
		name := p.name
		switch p.name {
		case phaseController:
			name += " (" + replacementNote(r.controller, b.cfg.Settle) + ")"
		case phaseServer:
			name += fmt.Sprintf(" (1 of %d pods of %s; %s)", r.serverPods, b.cfg.Kill, replacementNote(r.server, b.cfg.Settle))
		}
		d := distOf(p.latency)
		fmt.Fprintf(sb, "| %s | %s | %s | %.0f | %s | %.3f | %s | %s | %s | %s | %s |\n",
			name, secs(p.length()), thousands(p.requests), p.rate(), thousands(p.failures), 100*p.failedShare(), thousands(p.late),
			ms(d.p50), ms(d.p99), ms(d.p999), ms(d.peak))
	}
	fmt.Fprintf(sb, "\nlate: started more than %v after it was due, every one of the %d workers being busy.\n\n", lateAfter, b.cfg.Concurrency)
}

func replacementNote(rep replacement, settle time.Duration) string {
	if len(rep.killed) == 0 {
		return "not reached"
	}
	return fmt.Sprintf("%s deleted; a new pod Ready after %s, the old one gone after %s, then %s more",
		strings.Join(rep.killed, ", "), secs(rep.ready), secs(rep.gone), secs(settle))
}

// shownKinds is how many kinds of error the report lists per phase, the
// most frequent first.
const shownKinds = 8

func (b *bench) errorTable(sb *strings.Builder) {
	var rows []string
	for _, p := range b.res.phases {
		kinds := slices.Clone(p.errors.kinds)
		slices.SortStableFunc(kinds, func(a, b *errorKind) int { return cmp.Compare(b.n, a.n) })
		for i, k := range kinds {
			if i == shownKinds {
				var n int
				for _, k := range kinds[i:] {
					n += k.n
				}
				rows = append(rows, fmt.Sprintf("| %s | %s | | | %d more kinds of error |", p.name, thousands(n), len(kinds)-i))
				break
			}
			rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s |", p.name, thousands(k.n),
				secs(k.first.Sub(p.began)), secs(k.last.Sub(p.began)), strings.ReplaceAll(k.text, "|", `\|`)))
		}
	}
	if len(rows) == 0 {
		sb.WriteString("No request failed.\n\n")
		return
	}
	sb.WriteString("Failed requests by error, the most frequent first (first and last: since the phase began):\n\n" +
		"| phase | requests | first | last | error |\n|---|---:|---:|---:|---|\n")
	sb.WriteString(strings.Join(rows, "\n") + "\n\n")
}

func (b *bench) resourceTable(sb *strings.Builder) {
	fmt.Fprintf(sb, "Memory and goroutines over the %s steady phase (MB = 10^6 bytes; process_resident_memory_bytes and go_goroutines "+
		"read every %v from each process's /metrics through the API server's pod proxy; slope: of the least-squares line, per hour; "+
		"change: that line's rise over the phase, relative to the mean):\n\n", secs(b.res.steady), b.cfg.SampleEvery)
	sb.WriteString("| process | readings | RSS first → last MB | RSS min-max MB | RSS slope MB/h | RSS change | goroutines first → last | min-max | goroutines slope /h | change | restarts |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, t := range b.targets {
		rss, g := fit(t.readings, rssOf), fit(t.readings, goroutinesOf)
		readings := strconv.Itoa(len(t.readings))
		if t.failed > 0 {
			readings += fmt.Sprintf(" (%d failed)", t.failed)
		}
		fmt.Fprintf(sb, "| %s | %s | %s → %s | %s-%s | %+.2f | %s | %.0f → %.0f | %.0f-%.0f | %+.1f | %s | %s |\n",
			t.name, readings, mb(rss.first), mb(rss.end), mb(rss.lo), mb(rss.hi), rss.perHour/1e6, pct(rss.change),
			g.first, g.end, g.lo, g.hi, g.perHour, pct(g.change), restarts(t))
	}
	sb.WriteString("\n")
}

func restarts(t *target) string {
	if t.restartsBefore < 0 || t.restartsAfter < 0 {
		return "pod gone"
	}
	return strconv.Itoa(int(t.restartsAfter - t.restartsBefore))
}

func (b *bench) verdicts(sb *strings.Builder) {
	r := b.res
	steady, ctrl, srv := r.phase(phaseSteady), r.phase(phaseController), r.phase(phaseServer)
	fmt.Fprintf(sb, "- Steady, %s at %.0f RPS: %s of %s requests failed (goal 0: %s).\n",
		secs(steady.length()), steady.rate(), thousands(steady.failures), thousands(steady.requests), met(steady.requests > 0 && steady.failures == 0))
	fmt.Fprintf(sb, "- Controller killed and restarted: %s of %s failed (goal 0: %s).\n",
		thousands(ctrl.failures), thousands(ctrl.requests), met(ctrl.requests > 0 && ctrl.failures == 0))
	fmt.Fprintf(sb, "- Server pod killed: %s of %s failed, %.3f %% (goal < %.1f %%: %s).\n",
		thousands(srv.failures), thousands(srv.requests), 100*srv.failedShare(), 100*goalServerFailed,
		met(srv.requests > 0 && srv.failedShare() < goalServerFailed))
	rssName, rssChange := b.largestChange(rssOf)
	gName, gChange := b.largestChange(goroutinesOf)
	fmt.Fprintf(sb, "- Flatness: the largest RSS change over the steady phase is %s (%s), the largest goroutine change %s (%s); "+
		"the slopes are in the table.\n", pct(rssChange), rssName, pct(gChange), gName)
	if p := b.problems(); len(p) > 0 {
		fmt.Fprintf(sb, "- Checks FAILED: %s.\n", strings.Join(p, "; "))
		return
	}
	fmt.Fprintf(sb, "- Checks: the steady phase reached at least %.0f %% of the asked rate, every process was read at least 3 times, "+
		"and the client pod's proxy counted at least %.0f %% of the steady requests outbound.\n", 100*minRate, 100*minThrough)
}

// largestChange returns the target whose series v changed most over the
// steady phase, by its fitted line, and that change.
func (b *bench) largestChange(v func(reading) float64) (string, float64) {
	name, change := "-", 0.0
	for _, t := range b.targets {
		if c := fit(t.readings, v).change; math.Abs(c) >= math.Abs(change) {
			name, change = t.name, c
		}
	}
	return name, change
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func pct(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + " %" }

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64)
}

func secs(d time.Duration) string {
	if d >= 10*time.Minute {
		return strconv.FormatFloat(d.Minutes(), 'f', 1, 64) + " min"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
}

func mb(bytes float64) string { return strconv.FormatFloat(bytes/1e6, 'f', 1, 64) }

// rps writes a rate as asked: 1,000 or 2.5.
func rps(f float64) string {
	if f == math.Trunc(f) {
		return thousands(int(f))
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// thousands writes n with commas: 10,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// docBlock is the generated block of docs/benchmarks.md, and the section
// it is appended under when the file has none.
var docBlock = benchdoc.Block{
	Begin: "<!-- BEGIN bench-soak",
	End:   "<!-- END bench-soak -->",
	Heading: "## Reliability under load (`make soak`)\n\n" +
		"`make soak` (program: `bench/soak`) runs the demo shop on the local cluster under a steady load and measures what " +
		"issue 12 asks: 10 minutes at 1,000 RPS with no failed request and flat memory and goroutines in the proxies, " +
		"the controller and mesh-viz; then the controller killed under that load with no failed request; then a server pod " +
		"killed with under 0.1 % failed. The load leaves from inside the demo loadgen pod's network namespace, so it crosses " +
		"that pod's proxy like the pod's own traffic; every request is counted and every failure is listed with its error. " +
		"It needs root and the whole cluster:\n\n" +
		"```sh\n" +
		"sudo flock /tmp/mesh-e2e.lock make soak                              # 30 s warm-up, 10 min steady, the two kills\n" +
		"sudo flock /tmp/mesh-e2e.lock make soak SOAK_FLAGS='--duration 1m --rps 200'\n" +
		"sudo BENCH_WRITE=1 flock /tmp/mesh-e2e.lock make soak                # ... and rewrite the generated block below\n" +
		"```",
}
