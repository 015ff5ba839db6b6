package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mesh-dev/mesh/bench/internal/benchdoc"
)

// result is what a run measured.
type result struct {
	host                  benchdoc.Host
	promVersion           string
	loadBefore, loadAfter string

	vizReady, promReady time.Duration // from their start
	readings            []reading     // the first at the start, the last at the end

	checks  []agreement
	promAll float64 // sum(mesh_proxy_http_responses_total)

	seriesPerProxy int // of the first pod, at the end
	// vizserver's own metrics at the end.
	vizLabelSets, vizSamples, vizScrapes, vizFailed, vizDropped, vizRound, vizHeap float64
	// Prometheus' own metrics and queries at the end.
	promHeadSeries, promAppended, promScrapes, promFailed, promHeap float64
	promDisk                                                        int64 // bytes
}

// problems lists what makes the run's figures untrustworthy: a scraper
// that did not do the job.
func (r result) problems() []string {
	var p []string
	for _, c := range r.checks {
		if !c.ok() {
			p = append(p, fmt.Sprintf("%s: %d of %d differ", c.what, c.rows-c.same, c.rows))
		}
	}
	if r.vizFailed > 0 || r.promFailed > 0 {
		p = append(p, fmt.Sprintf("failed scrapes: viz %.0f, prometheus %.0f", r.vizFailed, r.promFailed))
	}
	if r.vizDropped > 0 {
		p = append(p, fmt.Sprintf("viz dropped %.0f label sets (MaxSeries)", r.vizDropped))
	}
	return p
}

// publish prints the report, and writes it into cfg.Write when the run
// passed its checks.
func (b *bench) publish() error {
	block := b.markdown()
	fmt.Fprintln(b.out, block)
	if p := b.res.problems(); len(p) > 0 {
		return errors.New("the run failed its checks: " + strings.Join(p, "; "))
	}
	if b.cfg.Write == "" {
		return nil
	}
	if err := updateMarkdown(b.cfg.Write, block); err != nil {
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
	c, r, f := b.cfg, b.res, b.f
	w("%s: written by bench/viz --write; edits in here are overwritten -->\n\n", blockBegin)
	w("### Run of %s\n\n", b.began.UTC().Format("2006-01-02 15:04 MST"))
	w("- Machine: %d CPUs, %s, %.0f GB RAM, kernel %s. Shared: other engineers build and test on it.\n",
		r.host.CPUs, r.host.CPUModel, r.host.MemTotal/(1<<30), r.host.Kernel)
	w("- Load average before the run: %s, after: %s.\n", r.loadBefore, r.loadAfter)
	w("- %s pods of %s deployments in namespace %s, each a fake proxy on its own loopback address (%s-%s, port %d) "+
		"serving the proxy's real registry (proxy/metrics): %s series per proxy at the end, Go and process collectors included. "+
		"Traffic: %s requests/s per proxy, half inbound from the %d deployments that call its own, half outbound to the %d it calls "+
		"(98%% 2xx, 2%% 404, 1%% 503; latencies log-normal, medians 5-40 ms by deployment); pooled HTTP connections replaced "+
		"about every %s, an opaque connection every %s.\n",
		thousands(c.Pods), thousands(len(f.Deployments)), c.Namespace, f.Pods[0].IP, f.Pods[len(f.Pods)-1].IP, c.Port,
		thousands(r.seriesPerProxy), strconv.FormatFloat(c.RPS, 'f', -1, 64),
		len(f.Deployments[0].Callers), len(f.Deployments[0].Callees), human(pooledLifetime), human(opaqueInterval))
	w("- mesh viz: controller/viz alone in a process of its own (bench/viz/vizserver, %s, %s), "+
		"its pod cache a fake clientset holding the pods; scrape interval %s, timeout %s, retention 16m, in memory.\n",
		r.host.Commit, r.host.GoVersion, human(c.Interval), human(scrapeTimeout))
	w("- Prometheus %s (Debian's package), scrape_interval %s, scrape_timeout %s, one static target per pod "+
		"with namespace, pod and deployment labels; its TSDB in a temporary directory, default retention (15d).\n",
		r.promVersion, human(c.Interval), human(scrapeTimeout))
	w("- Both are Go programs and inherit the benchmark's environment: %s.\n", runtimeEnv())
	w("- Both measured for %s from the moment both were ready (vizserver after %s, Prometheus after %s). "+
		"RSS (VmRSS; VmHWM for the peak) from /proc/PID/status, CPU time (utime + stime) from /proc/PID/stat, every %s. MB = 10^6 bytes.\n",
		human(c.Duration), secs(r.vizReady), secs(r.promReady), human(c.SampleEvery))
	w("- Command: `go run ./bench/viz %s` (what `make bench-viz` runs).\n\n", strings.Join(c.Args, " "))
	b.usageTable(&sb)
	b.rssTable(&sb)
	b.checkList(&sb)
	b.meaning(&sb)
	w("\n%s", blockEnd)
	return sb.String()
}

// first and last are the readings at the start and the end.
func (r result) first() reading { return r.readings[0] }
func (r result) last() reading  { return r.readings[len(r.readings)-1] }

func (b *bench) usageTable(sb *strings.Builder) {
	r := b.res
	first, last := r.first(), r.last()
	wall := (last.at - first.at).Seconds()
	vizCPU, promCPU := (last.viz.CPU - first.viz.CPU).Seconds(), (last.prom.CPU - first.prom.CPU).Seconds()
	row := func(name, viz, prom, ratio string) {
		fmt.Fprintf(sb, "| %s | %s | %s | %s |\n", name, viz, prom, ratio)
	}
	sb.WriteString("| | mesh viz | Prometheus | Prometheus / viz |\n|---|---:|---:|---:|\n")
	row("**peak RSS, MB** (VmHWM, startup included)", mb(last.viz.HWM), mb(last.prom.HWM), ratio(last.prom.HWM, last.viz.HWM))
	row("RSS at the end, MB", mb(last.viz.RSS), mb(last.prom.RSS), ratio(last.prom.RSS, last.viz.RSS))
	row("of it anonymous (heap, stacks), MB", mb(last.viz.RSSAnon), mb(last.prom.RSSAnon), ratio(last.prom.RSSAnon, last.viz.RSSAnon))
	row("of it file-backed (binary, mapped files), MB", mb(last.viz.RSSFile), mb(last.prom.RSSFile), ratio(last.prom.RSSFile, last.viz.RSSFile))
	row("Go heap in use at the end, MB", mb(r.vizHeap), mb(r.promHeap), ratio(r.promHeap, r.vizHeap))
	row(fmt.Sprintf("**CPU time over the %s, s**", human(b.cfg.Duration)), strconv.FormatFloat(vizCPU, 'f', 1, 64),
		strconv.FormatFloat(promCPU, 'f', 1, 64), ratio(promCPU, vizCPU))
	row("CPU, cores on average", strconv.FormatFloat(vizCPU/wall, 'f', 3, 64), strconv.FormatFloat(promCPU/wall, 'f', 3, 64), "")
	self := (last.self - first.self).Seconds()
	others := (last.machine - first.machine).Seconds() - vizCPU - promCPU - self
	row("on disk at the end, MB", "0", mb(float64(r.promDisk)), "")
	row("held at the end", fmt.Sprintf("%s label sets, %s samples", thousands(int(r.vizLabelSets)), thousands(int(r.vizSamples))),
		fmt.Sprintf("%s series, %s samples", thousands(int(r.promHeadSeries)), thousands(int(r.promAppended))), "")
	row("scrapes since it started (failed)", fmt.Sprintf("%s (%.0f)", thousands(int(r.vizScrapes)), r.vizFailed),
		fmt.Sprintf("%s (%.0f)", thousands(int(r.promScrapes)), r.promFailed), "")
	sb.WriteString("\n")
	fmt.Fprintf(sb, "Meanwhile, in cores: the benchmark's own process (the proxies, their traffic and scrapes served) %.3f, "+
		"other work on the machine %.3f (other tenants, and kernel time not charged to a process).%s\n\n",
		self/wall, max(0, others)/wall, disturbed(others/wall))
	fmt.Fprintf(sb, "viz's label sets are (pod, direction, authority, target, peer) tuples with their counters folded together "+
		"(status classes, histogram buckets), and a sample is one label set's deltas in one 5s step; "+
		"Prometheus' series are each exported line, and its samples every value scraped. "+
		"viz's last round of scrapes took %s ms.\n\n", strconv.FormatFloat(r.vizRound*1000, 'f', 0, 64))
}

// rssTable shows RSS over the run, one reading a minute (or every reading
// of a shorter run).
func (b *bench) rssTable(sb *strings.Builder) {
	every := time.Minute
	if b.cfg.Duration < 3*time.Minute {
		every = b.cfg.SampleEvery
	}
	fmt.Fprintf(sb, "RSS over the run, MB (readings every %s; here one every %s, and the last):\n\n", human(b.cfg.SampleEvery), human(every))
	sb.WriteString("| after | mesh viz | Prometheus | Prometheus / viz |\n|---|---:|---:|---:|\n")
	next := time.Duration(0)
	rs := b.res.readings
	for i, r := range rs {
		if r.at+time.Second < next && i != len(rs)-1 {
			continue
		}
		next = r.at.Truncate(every) + every
		fmt.Fprintf(sb, "| %s | %s | %s | %s |\n", clock(r.at), mb(r.viz.RSS), mb(r.prom.RSS), ratio(r.prom.RSS, r.viz.RSS))
	}
	sb.WriteString("\n")
}

func (b *bench) checkList(sb *strings.Builder) {
	r := b.res
	sb.WriteString("Check that both did the job: after the run the traffic stopped, and once both had scraped every proxy since, " +
		"viz's totalRequests (/api/v1/stat) and Prometheus' sums of mesh_proxy_http_responses_total:\n\n")
	var in, out float64
	for _, c := range r.checks {
		verdict := "agree"
		if !c.ok() {
			verdict = fmt.Sprintf("**%d differ**", c.rows-c.same)
		}
		fmt.Fprintf(sb, "- %s: viz %s, Prometheus %s (`%s`); %d of %d rows: %s.\n",
			c.what, thousands(int(c.total[0])), thousands(int(c.total[1])), c.promQL, c.same, c.rows, verdict)
		switch c.what {
		case checkInbound:
			in = c.total[0]
		case checkOutbound:
			out = c.total[0]
		}
	}
	verdict := "agree"
	if in+out != math.Round(r.promAll) {
		verdict = "**differ**"
	}
	fmt.Fprintf(sb, "- every response: viz inbound + outbound %s, Prometheus `sum(mesh_proxy_http_responses_total)` %s: %s.\n\n",
		thousands(int(in+out)), thousands(int(r.promAll)), verdict)
	if p := r.problems(); len(p) > 0 {
		fmt.Fprintf(sb, "Checks FAILED: %s.\n\n", strings.Join(p, "; "))
	}
}

// meaning is the paragraph that says what the figures mean.
func (b *bench) meaning(sb *strings.Builder) {
	r, c := b.res, b.cfg
	last := r.last()
	first := r.first()
	cpu := ratio((last.prom.CPU - first.prom.CPU).Seconds(), (last.viz.CPU - first.viz.CPU).Seconds())
	filled := math.Min(1, c.Duration.Minutes()/16)
	fmt.Fprintf(sb, "What it means: scraping the same %s proxies for %s, Prometheus peaked at %s times viz's RSS "+
		"and used %s times its CPU, and wrote %s MB to disk besides. "+
		"They do not do the same job: Prometheus keeps every value of every series (%s here) on disk for 15 days and "+
		"answers any PromQL over them, while viz folds each scrape into deltas per label set, keeps 16 minutes in memory "+
		"and answers only the viz API. The dashboard and `mesh viz` need no more than that (windows up to 15 minutes), "+
		"and both answered them alike (the checks above). "+
		"Caveats: both were still growing when the run ended. Prometheus keeps up to 2-3 hours in its head block in memory "+
		"before compacting to disk, and viz's store fills for 16 minutes, so a %s run saw it %.0f%% full "+
		"(`--duration 20m` shows it full). Every label set carried traffic in every step, which is viz's worst case; "+
		"in a cluster most are idle most of the time. viz ran alone here, with a fake clientset in place of the informers; "+
		"in a cluster it runs as the mesh-viz Deployment, with its own informers' caches. One run on a shared machine.\n",
		thousands(c.Pods), human(c.Duration), ratio(last.prom.HWM, last.viz.HWM), cpu, mb(float64(r.promDisk)),
		thousands(int(r.promHeadSeries)), human(c.Duration), 100*filled)
}

// disturbedCores is how much other work makes the CPU figures suspect:
// a quarter of a core, as bench/proxy.sh has it.
const disturbedCores = 0.25

func disturbed(others float64) string {
	if others > disturbedCores {
		return fmt.Sprintf(" Above %.2f cores, so the run was disturbed: compare its CPU figures with care, or run again.", disturbedCores)
	}
	return ""
}

// Names of the checks the report adds up.
const (
	checkInbound  = "inbound responses of the namespace"
	checkOutbound = "outbound responses per service called"
)

func ratio(a, b float64) string {
	if b <= 0 || a < 0 {
		return "-"
	}
	r := a / b
	if r >= 10 {
		return strconv.FormatFloat(r, 'f', 0, 64)
	}
	return strconv.FormatFloat(r, 'f', 1, 64)
}

func mb(bytes float64) string {
	if bytes == 0 {
		return "-"
	}
	return strconv.FormatFloat(bytes/1e6, 'f', 1, 64)
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s" }

// human writes d like a person would: 5m, not 5m0s.
func human(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// runtimeEnv returns the Go runtime settings in the environment, which
// both scrapers inherit.
func runtimeEnv() string {
	var set []string
	for _, k := range []string{"GOGC", "GOMAXPROCS", "GOMEMLIMIT", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			set = append(set, k+"="+v)
		}
	}
	if len(set) == 0 {
		return "Go runtime defaults (no GOGC, GOMAXPROCS, GOMEMLIMIT or GODEBUG set)"
	}
	return strings.Join(set, " ")
}

// clock writes d as m:ss.
func clock(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// thousands writes n with commas: 10,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// describe records the machine and Prometheus' version before the run.
func (b *bench) describe(ctx context.Context) {
	b.res.host = benchdoc.DescribeHost(ctx, "controller/viz", "bench/viz", "proxy/metrics")
	b.res.loadBefore = loadAvg()
	b.res.promVersion = promVersion(ctx, b.cfg.Prometheus)
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

// The generated block's markers in the markdown file, and the heading of
// the section it is appended under when the file has none.
const (
	blockBegin = "<!-- BEGIN bench-viz"
	blockEnd   = "<!-- END bench-viz -->"
	heading    = "## mesh viz against Prometheus"
)

// updateMarkdown replaces the generated block of the file at path with
// block, or appends a section with it when the file has none.
func updateMarkdown(path, block string) error {
	return benchdoc.Block{Begin: blockBegin, End: blockEnd, Heading: heading}.Update(path, block)
}
