package main

import (
	_ "embed"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mesh-dev/mesh/bench/internal/benchdoc"
)

// goalRatio is issue 14's bound on the CPU a request costs the proxy with
// 100 routes of 10 rules against none: under 3 % more.
const goalRatio = 1.03

// noisyCores is the CPU the rest of the machine may use during a row
// before the report names the round as disturbed.
const noisyCores = 0.25

// summary is one load against one Service over all the rounds.
type summary struct {
	load loadName
	kind tableKind
	// rps and perRequest are the medians of the rounds' req/s and proxy
	// CPU per request.
	rps        float64
	perRequest time.Duration
	// ratio is the median of the rounds' ratios of the row's CPU per
	// request to the same round's and load's row without routes, and
	// ratioMin, ratioMax their range; pooled is the same ratio of all the
	// rounds' CPU over all their requests. All 0 for the rows without
	// routes, and when no round has both rows.
	ratio, ratioMin, ratioMax, pooled float64
	rounds                            int
	errors                            int
}

// summarize condenses the samples per load and table, in the order of
// loads and allKinds.
func summarize(samples []sample, loads []loadName) []summary {
	var out []summary
	for _, l := range loads {
		base := map[int]sample{} // the rows without routes, by round
		for _, s := range samples {
			if s.load == l && s.kind == noRoutes {
				base[s.round] = s
			}
		}
		for _, k := range allKinds {
			sm := summary{load: l, kind: k}
			var rps, per, ratios []float64
			var cpu, baseCPU time.Duration
			var reqs, baseReqs int
			for _, s := range samples {
				if s.load != l || s.kind != k {
					continue
				}
				sm.rounds++
				sm.errors += s.res.errors
				rps = append(rps, s.res.rps)
				per = append(per, float64(s.perRequest()))
				b, ok := base[s.round]
				if k == noRoutes || !ok || b.perRequest() == 0 {
					continue
				}
				ratios = append(ratios, float64(s.perRequest())/float64(b.perRequest()))
				cpu, reqs = cpu+s.proxyCPU, reqs+s.res.requests
				baseCPU, baseReqs = baseCPU+b.proxyCPU, baseReqs+b.res.requests
			}
			if sm.rounds == 0 {
				continue
			}
			sm.rps = median(rps)
			sm.perRequest = time.Duration(median(per))
			if len(ratios) > 0 {
				sm.ratio = median(ratios)
				sm.ratioMin, sm.ratioMax = slices.Min(ratios), slices.Max(ratios)
				sm.pooled = (float64(cpu) / float64(reqs)) / (float64(baseCPU) / float64(baseReqs))
			}
			out = append(out, sm)
		}
	}
	return out
}

// median of xs, which must not be empty; the mean of the middle two for
// an even count.
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// report is the markdown the run prints and writes into its block.
func (b *bench) report() string {
	var w strings.Builder
	res := b.res
	h := res.host
	fmt.Fprintf(&w, "### Run of %s\n\n", res.started.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&w, "- Machine: %d CPUs, %s, %.0f GB RAM, kernel %s\n", h.CPUs, h.CPUModel, h.MemTotal/(1<<30), h.Kernel)
	fmt.Fprintf(&w, "- %s, from the checkout at %s, %s; %s\n", res.versions[0], h.Commit, h.GoVersion, strings.Join(res.versions[1:], ", "))
	fmt.Fprintf(&w, "- Load average before the run: %s, after: %s. The machine is shared: numbers move by 10%% or more between runs.\n", res.loadBefore, res.loadAfter)
	procs := "GOMAXPROCS unknown"
	if b.gomaxprocs > 0 {
		procs = fmt.Sprintf("GOMAXPROCS %d", b.gomaxprocs)
	}
	fmt.Fprintf(&w, "- mesh-proxy: 1 process, %s (its own choice, --max-procs 0); the application: nginx, 1 worker. Client, proxy and application share the same %d CPUs.\n", procs, h.CPUs)
	fmt.Fprintf(&w, "- %s; in each, every load against the three Services in turn for %v each, the order rotating by one Service a round, after a %v warm-up of each before the first. "+
		"`wrk -t1 -c%d` (http1) and `h2load -c%d -m%d` (h2c), the same request to every Service: `GET %s` with `%s: %s`.\n",
		plural(b.cfg.Rounds, "round"), b.cfg.Duration, b.cfg.Warmup, wrkConns, h2Conns, h2Streams, requestPath, headerName, headerValue)
	w.WriteString("- proxy CPU µs/req is the proxy process's CPU time (its CPU clock, all threads, user and system) over the row, per request the client had answered. " +
		"vs none is the ratio of that to the same round's row without routes: the median of the rounds' ratios, their range, " +
		"and the ratio of all the rounds' CPU over all their requests (pooled).\n\n")

	w.WriteString("| load | route table | req/s (median) | proxy CPU µs/req (median) | vs none: median of rounds | range | pooled | errors |\n")
	w.WriteString("|---|---|---:|---:|---:|---:|---:|---:|\n")
	sums := summarize(res.samples, b.cfg.Loads)
	for _, s := range sums {
		ratio, rng, pooled := "-", "-", "-"
		if s.kind != noRoutes && s.ratio > 0 {
			ratio = fmt.Sprintf("**%.3f**", s.ratio)
			rng = fmt.Sprintf("%.3f-%.3f", s.ratioMin, s.ratioMax)
			pooled = fmt.Sprintf("%.3f", s.pooled)
		}
		fmt.Fprintf(&w, "| %s | %s | %.0f | %.2f | %s | %s | %s | %d |\n",
			s.load, tableName(s.kind), s.rps, micros(s.perRequest), ratio, rng, pooled, s.errors)
	}
	w.WriteString("\n")
	for _, s := range sums {
		if s.kind == noRoutes || s.ratio == 0 {
			continue
		}
		verdict := "met"
		if s.ratio >= goalRatio {
			verdict = "not met"
		}
		fmt.Fprintf(&w, "- %s, %s: CPU per request with the table / with none: **%.3f** (goal < %.2f: %s).\n",
			s.load, tableName(s.kind), s.ratio, goalRatio, verdict)
	}
	if noisy := noisyRounds(res.samples); noisy != "" {
		fmt.Fprintf(&w, "- Rows disturbed by other work on the machine (others' CPU over %.2f cores): %s. "+
			"The rounds' ratios are what the median keeps apart from them; run more rounds to compare.\n", noisyCores, noisy)
	}

	w.WriteString("\n#### Rounds\n\n")
	w.WriteString("proxy CPU µs/req of each row, and in brackets req/s, proxy CPU, client CPU and others' CPU in cores.\n\n")
	w.WriteString("| round | load |")
	for _, k := range allKinds {
		fmt.Fprintf(&w, " %s |", tableName(k))
	}
	w.WriteString("\n|---:|---|" + strings.Repeat("---:|", len(allKinds)) + "\n")
	for round := 1; round <= b.cfg.Rounds; round++ {
		for _, l := range b.cfg.Loads {
			fmt.Fprintf(&w, "| %d | %s |", round, l)
			for _, k := range allKinds {
				s, ok := findSample(res.samples, round, l, k)
				if !ok {
					w.WriteString(" - |")
					continue
				}
				fmt.Fprintf(&w, " %.2f (%.0f, %.2f, %.2f, %.2f) |", micros(s.perRequest()), s.res.rps,
					s.proxyCPU.Seconds()/s.wall.Seconds(), s.clientCores, s.otherCores)
			}
			w.WriteString("\n")
		}
	}

	w.WriteString("\n#### Cross-check\n\n")
	var failed []string
	for _, s := range res.samples {
		if s.failed {
			failed = append(failed, fmt.Sprintf("- round %d, %s, %s: %s", s.round, s.load, tableName(s.kind), s.check))
		}
	}
	if len(failed) == 0 {
		fmt.Fprintf(&w, "Every one of the %d rows held: the client saw no error (a request matched to any rule but the last gets the decoy's 421), "+
			"and the proxy's `%s` for the Service rose by at least the client's answered requests and at most its requests in flight more, "+
			"all of them labelled with the route rule the table gives (HTTPRoute %s, rule %s; no route for the Service without one).\n",
			len(res.samples), requestsTotal, lastRoute, lastRuleName)
	} else {
		w.WriteString(strings.Join(failed, "\n") + "\n")
	}

	w.WriteString("\n#### Commands\n\n")
	w.WriteString("Each runs with `nsenter --net=/var/run/netns/mesh-routes-<PID>`, the servers in the background; DIR is the run's temporary directory, " +
		"routes this program, mesh-proxy a copy of the binary measured. Each client command runs once as a warm-up with the warm-up's duration, then once a round.\n\n")
	w.WriteString("```\n")
	for _, c := range b.commands {
		w.WriteString(strings.ReplaceAll(c, b.dir, "DIR") + "\n")
	}
	w.WriteString("```\n")
	return w.String()
}

// plural is "1 round", "2 rounds".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// shellJoin joins a command's arguments as a shell reads them back: one
// holding a space or a character the shell would take for its own is
// single-quoted.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`!*?[]{}()<>|&;~#") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// tableName is how the report names a Service's table.
func tableName(k tableKind) string {
	if k == noRoutes {
		return "none"
	}
	return fmt.Sprintf("%d×%d, %s", routeCount, ruleCount, k)
}

func findSample(samples []sample, round int, l loadName, k tableKind) (sample, bool) {
	for _, s := range samples {
		if s.round == round && s.load == l && s.kind == k {
			return s, true
		}
	}
	return sample{}, false
}

// noisyRounds names the rows during which the machine did much other
// work.
func noisyRounds(samples []sample) string {
	var out []string
	for _, s := range samples {
		if s.otherCores > noisyCores {
			out = append(out, fmt.Sprintf("round %d %s %s (%.2f)", s.round, s.load, s.kind, s.otherCores))
		}
	}
	return strings.Join(out, ", ")
}

// section is the fixed text of docs/benchmarks.md's section on this
// benchmark, which Update appends the block under when the file has none.
//
//go:embed section.md
var section string

// docBlock is the generated block of docs/benchmarks.md.
var docBlock = benchdoc.Block{
	Begin:   "<!-- BEGIN bench-routes",
	End:     "<!-- END bench-routes -->",
	Heading: strings.TrimRight(section, "\n"),
}
