package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/mesh-dev/mesh/bench/internal/benchdoc"
)

// Goals of issue 13, and what it calls done.
const (
	// goalCPU and doneCPU bound the CPU the two proxies of a request
	// spend on it together at cpuRate, in seconds: half of two Istio
	// sidecars (0.20 vCPU per 1,000 RPS each), and parity with them.
	goalCPU = 0.2e-3
	doneCPU = 0.4e-3
	cpuRate = 500
	// goalAddedP99 bounds what the mesh adds to p99 at latencyRate.
	goalAddedP99 = time.Millisecond
	latencyRate  = 200
	// goalIdleRSS bounds each proxy's RSS idle, goalLoadedRSS at cpuRate
	// (goal and done alike), in bytes.
	goalIdleRSS   = 10e6
	goalLoadedRSS = 20e6
)

// Checks that make a run's figures trustworthy.
const (
	// maxFailed is the share of a window's requests that may fail.
	maxFailed = 0.001
	// maxLate bounds the generator's own lateness (latencies.lateP99):
	// later, it measures a machine too busy to keep the schedule, and
	// latency from the due time would carry that lateness; at 1 ms it
	// would swamp the goal on added p99.
	maxLate = time.Millisecond
	// minThrough is the share of the requests sent that each proxy must
	// count, and of those the share that must carry a peer identity:
	// proof that the load crossed the mesh, over mesh TLS.
	minThrough = 0.9
)

// perRequest is cpu seconds over n requests, in seconds; 0 for none.
func perRequest(cpu float64, n int) float64 {
	if n <= 0 {
		return 0
	}
	return cpu / float64(n)
}

// lessIdle is u's CPU per request after the CPU the proxy spends idle
// over the same span (idleRate seconds per second) is taken out.
func lessIdle(u usage, n int, idleRate float64) float64 {
	return perRequest(u.cpu-idleRate*u.span.Seconds(), n)
}

// find returns the run of the meshed or unmeshed side at rate, or nil.
func (r result) find(meshed bool, rate float64) *sideRun {
	for _, run := range r.runs {
		if run.side.meshed == meshed && run.rate == rate {
			return run
		}
	}
	return nil
}

// problems lists what makes the run's figures untrustworthy; a goal not
// met is a result, not a problem.
func (b *bench) problems() []string {
	var out []string
	r := b.res
	for i, p := range r.proxies {
		if i >= len(r.idle) || r.idle[i].readings < 2 {
			out = append(out, fmt.Sprintf("%s: fewer than 2 readings in the idle window", p.name))
		} else if r.idle[i].reset {
			out = append(out, fmt.Sprintf("%s restarted in the idle window", p.name))
		}
	}
	for _, run := range r.runs {
		what := fmt.Sprintf("%s pair at %s RPS", run.side.name(), rps(run.rate))
		switch l := run.lat; {
		case l.requests == 0:
			out = append(out, what+": no request in the measured window")
		case float64(l.failed) > maxFailed*float64(l.requests):
			out = append(out, fmt.Sprintf("%s: %d of %d requests failed (first: %s)", what, l.failed, l.requests, run.firstErr))
		case l.lateP99 > maxLate:
			out = append(out, fmt.Sprintf("%s: the generator wrote 1 %% of the requests it had a connection for %s ms or more late: "+
				"the machine was too busy to keep the schedule", what, ms(l.lateP99)))
		}
		if !run.side.meshed {
			continue
		}
		for i, p := range r.proxies {
			if i >= len(run.usage) || run.usage[i].readings < 2 {
				out = append(out, fmt.Sprintf("%s: %s has fewer than 2 readings", what, p.name))
				continue
			}
			u, sent := run.usage[i], float64(run.sent[i])
			switch {
			case u.reset:
				out = append(out, fmt.Sprintf("%s: %s restarted", what, p.name))
			case u.requests < minThrough*sent:
				out = append(out, fmt.Sprintf("%s: %s counted %.0f %s HTTP requests of the %.0f sent: the load did not cross it",
					what, p.name, u.requests, p.dir, sent))
			case u.mtls < minThrough*u.requests:
				out = append(out, fmt.Sprintf("%s: %s counted %.0f of its %.0f requests with a peer identity: the load did not cross mesh TLS",
					what, p.name, u.mtls, u.requests))
			}
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
	w("%s written by bench/meshcost --write; edits in here are overwritten -->\n\n", docBlock.Begin)
	w("### Run of %s\n\n", b.began.UTC().Format("2006-01-02 15:04 MST"))
	w("- Machine: %d CPUs, %s, %.0f GB RAM, kernel %s. Shared: other engineers build and test on it.\n",
		r.host.CPUs, r.host.CPUModel, r.host.MemTotal/(1<<30), r.host.Kernel)
	w("- Kubernetes %s, the local single-node cluster (`make cluster-up`): API server, etcd, kubelet, every pod "+
		"and the benchmark's load generator share those CPUs.\n", r.k8sVersion)
	installed := "already installed"
	if r.mesh.Installed {
		installed = "installed by the run"
	}
	w("- mesh %s (%s), measured at %s, built with %s.\n", r.mesh.Version, installed, r.host.Commit, r.host.GoVersion)
	for _, n := range r.mesh.Notes {
		w("- **Went on without**: %s.\n", n)
	}
	for i, p := range r.proxies {
		w("- %s (pod %s): GOMAXPROCS %s; %s.\n", capitalize(p.name), p.pod, b.maxProcs(i), p.resources)
	}
	w("- Load average before the run: %s, after: %s.\n", r.loadBefore, r.loadAfter)
	w("- Command: `go run ./bench/meshcost %s` (what `make bench-mesh` runs).\n", strings.Join(c.Args, " "))
	w("- Load: GET / at a fixed rate, open loop, over %d HTTP/1.1 keep-alive connections per pair, sent from inside the client pod's "+
		"network namespace to the server Service's ClusterIP; the server is `demo echo`. At each rate the two pairs take turns of %s, "+
		"the unmeshed pair first, so that what else the machine does falls on both alike: %s of warm-up each, then %s each measured. "+
		"Latency runs from each request's due time to the end of its answer "+
		"(coordinated omission corrected). Waited: requests due while every connection was busy, the wait part of their latency. "+
		"Late p99: how late after its due time the generator wrote a request that had a free connection, its own lateness "+
		"(a run over %s is not written).\n\n",
		c.Conns, secs(c.Slice), secs(c.Warmup), secs(c.Duration), ms(maxLate)+" ms")

	b.latencyTable(&sb)
	b.proxyTable(&sb)
	b.verdicts(&sb)
	w("\n%s", docBlock.End)
	return sb.String()
}

// maxProcs is proxy i's GOMAXPROCS and why: from go_sched_gomaxprocs_threads
// of its idle readings, else from its start log line.
func (b *bench) maxProcs(i int) string {
	p := b.res.proxies[i]
	n := p.logMaxProcs
	if i < len(b.res.idle) && b.res.idle[i].maxProcs > 0 {
		n = b.res.idle[i].maxProcs
	}
	s := "unknown"
	if n > 0 {
		s = strconv.FormatFloat(n, 'f', -1, 64)
	}
	if p.maxProcsReason != "" {
		s += " (" + p.maxProcsReason + ")"
	}
	return s
}

func (b *bench) latencyTable(sb *strings.Builder) {
	sb.WriteString("| RPS | path | requests | failed | p50 ms | p99 ms | p99.9 ms | max ms | waited | late p99 ms |\n" +
		"|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, rate := range b.cfg.Rates {
		plain, meshed := b.res.find(false, rate), b.res.find(true, rate)
		for _, run := range []*sideRun{plain, meshed} {
			if run == nil {
				continue
			}
			l := run.lat
			fmt.Fprintf(sb, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", rps(rate), run.side.name(),
				thousands(l.requests), thousands(l.failed), ms(l.p50), ms(l.p99), ms(l.p999), ms(l.max), thousands(l.waited), ms(l.lateP99))
		}
		if plain != nil && meshed != nil {
			fmt.Fprintf(sb, "| %s | **added by the mesh** | | | %s | %s | %s | | | |\n", rps(rate),
				added(meshed.lat.p50-plain.lat.p50), added(meshed.lat.p99-plain.lat.p99), added(meshed.lat.p999-plain.lat.p999))
		}
	}
	sb.WriteString("\n")
}

func (b *bench) proxyTable(sb *strings.Builder) {
	r := b.res
	sb.WriteString("The proxies of the meshed pair, read through the API server's pod proxy every " + secs(b.cfg.Slice) + " when idle " +
		"and at both ends of each measured turn under load (CPU: process_cpu_seconds_total; RSS: process_resident_memory_bytes, " +
		"MB = 10^6 bytes). CPU per request is the CPU a proxy spent within the turns over the requests due within them; less idle " +
		"takes out what the proxy spends idle over the same time:\n\n")
	sb.WriteString("| window | proxy | requests sent | counted by the proxy | with a peer identity | CPU ms/s | CPU µs/request | less idle µs/request | RSS first → last MB | RSS max MB |\n" +
		"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	idleRate := make([]float64, len(r.proxies))
	for i, p := range r.proxies {
		if i >= len(r.idle) {
			continue
		}
		u := r.idle[i]
		idleRate[i] = u.cpuRate()
		fmt.Fprintf(sb, "| idle, %s | %s | - | %s | - | %.2f | - | - | %s → %s | %s |\n",
			secs(u.span), p.name, thousands(int(u.requests)), 1e3*u.cpuRate(), mb(u.rssFirst), mb(u.rssLast), mb(u.rssMax))
	}
	for _, rate := range b.cfg.Rates {
		run := r.find(true, rate)
		if run == nil || len(run.usage) != len(r.proxies) {
			continue
		}
		var total, totalLessIdle float64
		for i, p := range r.proxies {
			u, sent := run.usage[i], run.sent[i]
			per, less := perRequest(u.cpu, sent), lessIdle(u, sent, idleRate[i])
			total += per
			totalLessIdle += less
			fmt.Fprintf(sb, "| %s RPS, %s | %s | %s | %s | %s | %.2f | %s | %s | %s → %s | %s |\n",
				rps(rate), secs(u.span), p.name, thousands(sent), thousands(int(u.requests)), pct(u.mtls, u.requests), 1e3*u.cpuRate(),
				us(per), us(less), mb(u.rssFirst), mb(u.rssLast), mb(u.rssMax))
		}
		fmt.Fprintf(sb, "| %s RPS | **both proxies** | | | | | **%s** | %s | | |\n", rps(rate), us(total), us(totalLessIdle))
	}
	sb.WriteString("\n")
}

// bothPerRequest is the CPU per request of the two proxies together at
// rate, in seconds; ok is false when the run has no such window.
func (r result) bothPerRequest(rate float64) (float64, bool) {
	run := r.find(true, rate)
	if run == nil || len(run.usage) != len(r.proxies) || len(r.proxies) == 0 {
		return 0, false
	}
	var total float64
	for i, u := range run.usage {
		total += perRequest(u.cpu, run.sent[i])
	}
	return total, true
}

func (b *bench) verdicts(sb *strings.Builder) {
	r := b.res
	w := func(format string, args ...any) { fmt.Fprintf(sb, format, args...) }
	if cpu, ok := r.bothPerRequest(cpuRate); ok {
		w("- CPU per request of the two proxies together at %d RPS: %s ms (goal < %s ms: %s; done when < %s ms: %s).\n",
			cpuRate, msf(cpu), msf(goalCPU), met(cpu < goalCPU), msf(doneCPU), met(cpu < doneCPU))
	} else {
		w("- CPU per request at %d RPS: not measured (--rates has no %d).\n", cpuRate, cpuRate)
	}
	if plain, meshed := r.find(false, latencyRate), r.find(true, latencyRate); plain != nil && meshed != nil {
		d := meshed.lat.p99 - plain.lat.p99
		w("- p99 added by the mesh at %d RPS: %s ms (goal < %s ms: %s).\n", latencyRate, added(d), ms(goalAddedP99), met(d < goalAddedP99))
	} else {
		w("- Added p99 at %d RPS: not measured (--rates has no %d).\n", latencyRate, latencyRate)
	}
	var idle, loaded []string
	idleMet, loadedMet := len(r.idle) == len(r.proxies), true
	loadedRun := r.find(true, cpuRate)
	for i, p := range r.proxies {
		if i < len(r.idle) {
			idle = append(idle, p.name+" "+mb(r.idle[i].rssMax))
			idleMet = idleMet && r.idle[i].rssMax < goalIdleRSS
		}
		if loadedRun != nil && i < len(loadedRun.usage) {
			loaded = append(loaded, p.name+" "+mb(loadedRun.usage[i].rssMax))
			loadedMet = loadedMet && loadedRun.usage[i].rssMax < goalLoadedRSS
		}
	}
	w("- RSS idle, the most of the idle window: %s MB (goal < %s MB each: %s).\n", strings.Join(idle, ", "), mb(goalIdleRSS), met(idleMet))
	if loadedRun != nil {
		w("- RSS at %d RPS, the most of the window: %s MB (goal and done when < %s MB each: %s).\n",
			cpuRate, strings.Join(loaded, ", "), mb(goalLoadedRSS), met(loadedMet))
	} else {
		w("- RSS at %d RPS: not measured (--rates has no %d).\n", cpuRate, cpuRate)
	}
	if p := b.problems(); len(p) > 0 {
		w("- Checks FAILED: %s.\n", strings.Join(p, "; "))
		return
	}
	w("- Checks: every window lost at most %s of its requests, the generator's late p99 was under %s ms, and each proxy counted at least %.0f %% of the requests sent "+
		"through it, as many with its peer's mesh identity.\n", strconv.FormatFloat(100*maxFailed, 'f', -1, 64)+" %", ms(maxLate), 100*minThrough)
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// ms writes a duration in milliseconds, to the microsecond.
func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 3, 64) }

// added writes a difference of durations in milliseconds, signed.
func added(d time.Duration) string {
	s := ms(d)
	if d >= 0 {
		s = "+" + s
	}
	return s
}

// msf writes seconds as milliseconds.
func msf(s float64) string { return strconv.FormatFloat(1e3*s, 'f', 3, 64) }

// us writes seconds as whole microseconds.
func us(s float64) string { return strconv.FormatFloat(math.Round(1e6*s), 'f', 0, 64) }

func mb(bytes float64) string { return strconv.FormatFloat(bytes/1e6, 'f', 1, 64) }

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s" }

// pct writes part of whole as a percentage; "-" when whole is 0.
func pct(part, whole float64) string {
	if whole == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*part/whole, 'f', 1, 64) + " %"
}

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
// it is appended under when the file has none. Its Begin ends in a colon:
// without it, it would be the start of bench-meshpath's.
var docBlock = benchdoc.Block{
	Begin: "<!-- BEGIN bench-mesh:",
	End:   "<!-- END bench-mesh -->",
	Heading: "## What the mesh costs a request on the local cluster (`make bench-mesh`)\n\n" +
		"`make bench-mesh` (program: `bench/meshcost`) measures the cluster figures of issue 13. The same pair, a client and a " +
		"server (`demo echo`, HTTP/1.1), runs twice on the local cluster: in a namespace annotated `mesh.dev/inject: enabled` and in " +
		"one that is not. The load leaves from inside the client pod's network namespace, so in the meshed pair the client's " +
		"proxy intercepts it like the pod's own traffic and carries it over mesh TLS to the server's proxy. At each fixed rate " +
		"(200 and 500 RPS by default, open loop, latency from each request's due time) the two pairs take turns of 10 s, so that " +
		"what else the shared machine does falls on both alike; the report gives both pairs' p50/p99/p99.9 and what the mesh adds, and for each proxy the CPU it spent per request " +
		"(process_cpu_seconds_total over the meshed pair's measured turns, over the requests sent in them), its idle CPU over a quiet window " +
		"before the load, its RSS idle and under load, and the GOMAXPROCS it ran with. The goals: the two proxies of a request " +
		"together under 0.2 ms of CPU at 500 RPS (half of two Istio sidecars, 0.20 vCPU per 1,000 RPS each), under 1 ms added to " +
		"p99 at 200 RPS, each proxy under 10 MB RSS idle and 20 MB at 500 RPS; done when under 0.4 ms and 20 MB. It installs the " +
		"mesh when none runs and removes what it made at the end, Ctrl-C included. It needs root and the local cluster, which the " +
		"end-to-end suite shares:\n\n" +
		"```sh\n" +
		"sudo flock /tmp/mesh-e2e.lock make bench-mesh                                  # 200 and 500 RPS, 60 s each\n" +
		"sudo flock /tmp/mesh-e2e.lock make bench-mesh BENCH_MESH_FLAGS='--duration 30s --rates 100,500,1000'\n" +
		"sudo BENCH_WRITE=1 flock /tmp/mesh-e2e.lock make bench-mesh                    # ... and rewrite the generated block below\n" +
		"```\n\n" +
		"The proxy's data path changes under these figures: each run names the commit it measured.",
}
