package main

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mesh-dev/mesh/bench/internal/benchdoc"
)

// Goals of the issue.
const (
	goalP99 = 100 * time.Millisecond
	goalRSS = 150e6 // bytes
)

// result is what a run measured.
type result struct {
	host                   benchdoc.Host
	k8sVersion             string
	otherPods, otherSlices int // in the cluster before the run
	loadBefore, loadAfter  string
	env                    string // Go runtime settings the controller inherits

	setup      time.Duration // namespace, Services, slices
	setupCalls int
	slices     int
	ready      time.Duration // controller start to /ready
	open       time.Duration // streams opened until each held its first set

	before, steady        memSample // snapshots: no streams; streams open, idle
	openPeak, changesPeak memSample
	hwm                   float64 // VmHWM at the end

	cpu        cpuUse        // during the changes and the drain
	changeWall time.Duration // their length
	drained    bool

	lat                   latencies
	streamErrs, wrongSets int
}

// dist is a distribution of latencies.
type dist struct {
	n                   int
	p50, p90, p99, peak time.Duration
}

// distOf returns the nearest-rank percentiles of ds.
func distOf(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		return s[int(math.Ceil(p/100*float64(len(s))))-1]
	}
	return dist{n: len(s), p50: rank(50), p90: rank(90), p99: rank(99), peak: s[len(s)-1]}
}

// latencies are the propagation times of a run, each from just before a
// change's Update call.
type latencies struct {
	apiCall, apiWatch, first, every, each dist
	// incomplete counts changes that did not reach every watcher of their
	// Service.
	incomplete int
	changes    int
	unexpected int
}

// latencies summarizes the changes made so far.
func (c *collector) latencies() latencies {
	c.mu.Lock()
	defer c.mu.Unlock()
	var api, watch, first, every, each []time.Duration
	for _, ch := range c.changes {
		if !ch.apiDone.IsZero() {
			api = append(api, ch.apiDone.Sub(ch.start))
		}
		if !ch.watched.IsZero() {
			watch = append(watch, ch.watched.Sub(ch.start))
		}
		var lo, hi time.Duration = math.MaxInt64, 0
		for _, t := range ch.arrivals {
			d := t.Sub(ch.start)
			each = append(each, d)
			lo, hi = min(lo, d), max(hi, d)
		}
		if len(ch.arrivals) > 0 {
			first = append(first, lo)
		}
		if len(ch.arrivals) == ch.svc.watchers {
			every = append(every, hi)
		}
	}
	return latencies{
		apiCall: distOf(api), apiWatch: distOf(watch), first: distOf(first), every: distOf(every), each: distOf(each),
		incomplete: len(c.changes) - len(every), changes: len(c.changes), unexpected: c.unexpected,
	}
}

// problems lists what makes the run's figures untrustworthy.
func (r result) problems() []string {
	var p []string
	if r.lat.incomplete > 0 || !r.drained {
		p = append(p, fmt.Sprintf("%d of %d changes did not reach every watcher of their Service", r.lat.incomplete, r.lat.changes))
	}
	if r.lat.unexpected > 0 {
		p = append(p, fmt.Sprintf("%d updates matched no change (or one change twice)", r.lat.unexpected))
	}
	if r.streamErrs > 0 {
		p = append(p, fmt.Sprintf("%d streams failed", r.streamErrs))
	}
	if r.wrongSets > 0 {
		p = append(p, fmt.Sprintf("%d watchers ended with a set other than their slices' addresses", r.wrongSets))
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
	c, r := b.cfg, b.res
	w("%s: written by bench/destination --write; edits in here are overwritten -->\n\n", blockBegin)
	w("### Run of %s\n\n", b.began.UTC().Format("2006-01-02 15:04 MST"))
	w("- Machine: %d CPUs, %s, %.0f GB RAM, kernel %s. Shared: other engineers build and test on it.\n",
		r.host.CPUs, r.host.CPUModel, r.host.MemTotal/(1<<30), r.host.Kernel)
	w("- Kubernetes %s, the local single-node cluster (`make cluster-up`): etcd, API server and the rest run on the same CPUs. "+
		"Before the run it held %s and %s (other tests' and the system's), which the controller caches as well.\n",
		r.k8sVersion, count(r.otherPods, "pod"), count(r.otherSlices, "EndpointSlice"))
	w("- mesh-controller from %s, built with %s; its environment: %s.\n", r.host.Commit, r.host.GoVersion, r.env)
	w("- Load average before the run: %s, after: %s.\n", r.loadBefore, r.loadAfter)
	w("- Command: `go run ./bench/destination %s` (what `make bench-controller` runs).\n", strings.Join(c.Args, " "))
	w("- %s Services without selectors, %s endpoints (ready, no pods) in %s EndpointSlices of at most %d, written by the benchmark; "+
		"%s Get streams (%s per Service) over %s gRPC connections from the benchmark's process; "+
		"%s changes %v apart, alternately adding and removing one endpoint of a random slice.\n\n",
		thousands(c.Services), thousands(c.Endpoints), thousands(r.slices), c.SliceSize,
		thousands(c.Watchers), perService(c.Watchers, c.Services), thousands(c.conns()),
		thousands(c.Changes), c.Interval)

	w("| step | time |\n|---|---:|\n")
	w("| setup: namespace, Services, EndpointSlices (%s API calls, 16 Services at a time) | %s |\n", thousands(r.setupCalls), secs(r.setup))
	w("| mesh-controller started until /ready (its caches hold all of the above) | %s |\n", secs(r.ready))
	w("| %s streams opened until each held its Service's endpoints | %s |\n\n", thousands(c.Watchers), secs(r.open))

	b.latencyTable(&sb)
	b.memoryTable(&sb)

	u := r.cpu
	w("CPU in cores (1.00 = one CPU all along) over the %s of the changes and their delivery: mesh-controller %.2f, "+
		"kube-apiserver + etcd %.2f, the benchmark (its streams and watch) %.2f, the whole machine %.2f, of which other work %.2f.\n\n",
		secs(r.changeWall), u.Controller, u.Cluster, u.Self, u.Total, max(0, u.Total-u.Controller-u.Cluster-u.Self))
	b.verdicts(&sb)
	w("\n%s", blockEnd)
	return sb.String()
}

func (b *bench) latencyTable(sb *strings.Builder) {
	l := b.res.lat
	fmt.Fprintf(sb, "Propagation, from just before a change's Update call until (n: samples; p99 of %d changes is %s):\n\n",
		l.every.n, highest(l.every.n-int(math.Ceil(0.99*float64(l.every.n)))+1))
	sb.WriteString("| until | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|\n")
	for _, row := range []struct {
		name string
		d    dist
	}{
		{"the Update call returned", l.apiCall},
		{"the benchmark's own watch of the slices got the event", l.apiWatch},
		{"the first watcher of the Service got the update", l.first},
		{"**every watcher of the Service got it**", l.every},
		{"each watcher got it (one sample per watcher and change)", l.each},
	} {
		d := row.d
		fmt.Fprintf(sb, "| %s | %s | %s | %s | %s | %s |\n", row.name, thousands(d.n), ms(d.p50), ms(d.p90), ms(d.p99), ms(d.peak))
	}
	sb.WriteString("\n")
}

func (b *bench) memoryTable(sb *strings.Builder) {
	r := b.res
	fmt.Fprintf(sb, "mesh-controller's memory (MB = 10^6 bytes; RSS from /proc/PID/status, heap and goroutines from its /metrics, "+
		"peaks from samples every 250 ms):\n\n")
	sb.WriteString("| when | RSS MB | of it file-backed (binary) MB | Go heap in use MB | Go heap allocated MB | goroutine stacks MB | goroutines | streams |\n" +
		"|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range []struct {
		name string
		m    memSample
	}{
		{"ready, no stream yet", r.before},
		{"streams open, idle", r.steady},
		{"peak while the streams opened", r.openPeak},
		{"peak during the changes", r.changesPeak},
	} {
		m := row.m
		goroutines, streams := "-", "-" // no /metrics sample
		if m.HeapInuse > 0 {
			goroutines, streams = thousands(int(m.Goroutines)), thousands(int(m.Streams))
		}
		fmt.Fprintf(sb, "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
			row.name, mb(m.RSS), mb(m.RSSFile), mb(m.HeapInuse), mb(m.HeapAlloc), mb(m.Stacks), goroutines, streams)
	}
	fmt.Fprintf(sb, "| peak RSS of the whole run (VmHWM, startup included) | %s | | | | | | |\n\n", mb(r.hwm))
}

func (b *bench) verdicts(sb *strings.Builder) {
	r := b.res
	p99 := r.lat.every.p99
	p99Met := r.lat.incomplete == 0 && r.lat.every.n > 0 && p99 < goalP99
	fmt.Fprintf(sb, "- p99 until every watcher got a change: %s ms (goal < %d ms: %s).\n", ms(p99), goalP99.Milliseconds(), met(p99Met))
	fmt.Fprintf(sb, "- Peak RSS: %s MB (goal < %.0f MB: %s).\n", mb(r.hwm), goalRSS/1e6, met(r.hwm < goalRSS))
	if p := r.problems(); len(p) > 0 {
		fmt.Fprintf(sb, "- Checks FAILED: %s.\n", strings.Join(p, "; "))
		return
	}
	fmt.Fprintf(sb, "- Checks: every change reached every watcher of its Service, no update matched no change, no stream failed, "+
		"and each watcher's final set equals its Service's addresses.\n")
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64)
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s" }

func mb(bytes float64) string {
	if bytes == 0 {
		return "-"
	}
	return strconv.FormatFloat(bytes/1e6, 'f', 1, 64)
}

// count writes n things: "1 pod", "12 pods".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return thousands(n) + " " + thing + "s"
}

// thousands writes n with commas: 10,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func perService(watchers, services int) string {
	if watchers%services == 0 {
		return strconv.Itoa(watchers / services)
	}
	return fmt.Sprintf("%d-%d", watchers/services, watchers/services+1)
}

// highest names the n-th highest of a sample: "the highest", "the
// 2nd-highest".
func highest(n int) string {
	suffix := "th"
	switch {
	case n <= 1:
		return "the highest"
	case n%10 == 2 && n%100 != 12:
		suffix = "nd"
	case n%10 == 3 && n%100 != 13:
		suffix = "rd"
	case n%10 == 1 && n%100 != 11:
		suffix = "st"
	}
	return "the " + strconv.Itoa(n) + suffix + "-highest"
}

// The generated block's markers in the markdown file.
const (
	blockBegin = "<!-- BEGIN bench-controller"
	blockEnd   = "<!-- END bench-controller -->"
)

// updateMarkdown replaces the generated block of the file at path with
// block, or appends block when the file has none.
func updateMarkdown(path, block string) error {
	return benchdoc.Block{Begin: blockBegin, End: blockEnd}.Update(path, block)
}
