package main

import (
	"fmt"
	"runtime"
	"strings"
)

// Goals of issue 13 for the full mesh path.
const (
	goalRPSRatio = 1.0 // mesh pair req/s over the nginx pair's, at least
	goalPeakRSS  = 20 << 20
	// noisyCores is the CPU the rest of the machine may use during a row
	// before the report names the row as disturbed.
	noisyCores = 0.25
)

// report is the markdown the run prints and writes into its block.
func (b *bench) report() string {
	var w strings.Builder
	res := b.res
	h := res.host
	fmt.Fprintf(&w, "### Run of %s\n\n", res.started.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&w, "- Machine: %d CPUs, %s, %.0f GB RAM, kernel %s\n", h.CPUs, h.CPUModel, h.MemTotal/(1<<30), h.Kernel)
	fmt.Fprintf(&w, "- %s, from the checkout at %s, %s; %s\n", res.versions[0], h.Commit, h.GoVersion, strings.Join(res.versions[1:], ", "))
	fmt.Fprintf(&w, "- Load average before the run: %s, after: %s. The machine is shared: numbers move by 10%% or more between runs.\n", res.loadBefore, res.loadAfter)
	fmt.Fprintf(&w, "- Servers: the application is nginx with 1 worker; nginx A and nginx B 2 workers each; each mesh-proxy 1 process, "+
		"GOMAXPROCS unset (Go's default, %d CPUs here). Client, pair and application share the same %d CPUs.\n", runtime.NumCPU(), runtime.NumCPU())
	fmt.Fprintf(&w, "- Max req/s rows: `wrk -t1 -c%d` for %v after a %v warm-up. Fixed-rate rows: `meshpath load` with %d connections for %v after a %v warm-up at the same rate.\n",
		b.cfg.Conns, b.cfg.Duration, b.cfg.Warmup, b.cfg.Conns, b.cfg.RateDuration, b.cfg.Warmup)
	w.WriteString("- CPU columns are in cores (1.00 = one core busy the whole row); pair CPU is both proxies, or both nginx's workers, summed. " +
		"softirq CPU is the kernel's network receive path, charged to no process; others' CPU the rest of the machine's work. " +
		"Peak RSS is VmHWM, reset before each row; for nginx the sum over a side's 2 workers.\n\n")

	w.WriteString("#### Most requests per second (wrk, HTTP/1.1 keep-alive)\n\n")
	w.WriteString("| path | req/s | vs nginx pair | vs direct | p50 ms | p99 ms | max ms | errors | pair CPU | pair CPU µs/req | vs nginx pair | peak RSS MB, client / server side | client CPU | app CPU | softirq CPU | others' CPU |\n")
	w.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range res.rows {
		if r.rate != 0 {
			continue
		}
		ref, dir := res.find(0, nginxPair), res.find(0, direct)
		fmt.Fprintf(&w, "| %s | %.0f | %s | %s | %.3f | %.3f | %.3f | %d | %s | %s | %s | %s | %.2f | %.2f | %.2f | %.2f |\n",
			r.path, r.rps, ratio(r.rps, ref.rps), ratio(r.rps, dir.rps), r.p50, r.p99, r.max, r.errors,
			cores(r.pairCores), micros(r.pairUS), pairRatio(r.pairUS, ref.pairUS), peaks(r), r.clientCores, r.appCores, r.softirqCores, r.othCores)
	}
	w.WriteString("\n#### Fixed rates: latency from each request's due time (coordinated omission corrected)\n\n")
	w.WriteString("| rate | path | answered req/s | p50 ms | p99 ms | p99.9 ms | max ms | added over direct, p50 / p99 / p99.9 ms | errors | unfinished | send wait p99 ms | pair CPU µs/req | vs nginx pair | peak RSS MB, client / server side | client CPU | softirq CPU | others' CPU |\n")
	w.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range res.rows {
		if r.rate == 0 {
			continue
		}
		dir, ref := res.find(r.rate, direct), res.find(r.rate, nginxPair)
		rps := fmt.Sprintf("%.0f", r.rps)
		if r.saturated() {
			rps += " (saturated)"
		}
		added := "-"
		if r.path != direct {
			added = fmt.Sprintf("%+.3f / %+.3f / %+.3f", r.p50-dir.p50, r.p99-dir.p99, r.p999-dir.p999)
		}
		fmt.Fprintf(&w, "| %d | %s | %s | %.3f | %.3f | %.3f | %.3f | %s | %d | %d | %.3f | %s | %s | %s | %.2f | %.2f | %.2f |\n",
			r.rate, r.path, rps, r.p50, r.p99, r.p999, r.max, added, r.errors, r.unfinished, r.lagP99,
			micros(r.pairUS), pairRatio(r.pairUS, ref.pairUS), peaks(r), r.clientCores, r.softirqCores, r.othCores)
	}
	w.WriteString("\n")
	if noisy := res.noisy(); noisy != "" {
		fmt.Fprintf(&w, "Rows disturbed by other work on the machine (others' CPU over %.2f cores): %s. "+
			"Their figures, and ratios against them, say more about the neighbours than about the pairs; run again to compare.\n\n", noisyCores, noisy)
	}
	w.WriteString("#### Against the goals of issue 13\n\n")
	w.WriteString(res.verdict())
	w.WriteString("\n#### Metrics cross-check (the mesh rows crossed both proxies in mesh TLS)\n\n")
	for _, c := range res.checks {
		fmt.Fprintf(&w, "- %s\n", c)
	}
	w.WriteString("\n#### Commands\n\n")
	w.WriteString("Each runs in the pod named before the colon, with `nsenter --net=/var/run/netns/mpath<PID>-<pod>`; DIR is the run's temporary directory, " +
		"meshpath this program (`go build ./bench/meshpath`), mesh-proxy a copy of bin/mesh-proxy. Each client command follows a warm-up with the same command and the warm-up's duration.\n\n")
	w.WriteString("```\n")
	for _, c := range b.commands {
		w.WriteString(c + "\n")
	}
	w.WriteString("```\n")
	return w.String()
}

// find returns the row of rate along p, or an empty one.
func (r result) find(rate int, p pathName) row {
	for _, x := range r.rows {
		if x.rate == rate && x.path == p {
			return x
		}
	}
	return row{rate: rate, path: p, pairCores: -1, pairUS: -1}
}

// noisy names the rows during which the machine did much other work.
func (r result) noisy() string {
	var out []string
	for _, x := range r.rows {
		if x.othCores > noisyCores {
			out = append(out, fmt.Sprintf("%s %s (%.2f)", loadName(x.rate), x.path, x.othCores))
		}
	}
	return strings.Join(out, ", ")
}

// verdict says how the mesh pair compares with the nginx pair, goal by
// goal.
func (r result) verdict() string {
	var w strings.Builder
	m, n := r.find(0, meshPair), r.find(0, nginxPair)
	if n.rps > 0 {
		q := m.rps / n.rps
		fmt.Fprintf(&w, "- Most req/s: the mesh pair did %.2f of the nginx pair's (goal >= %.1f: %s), at %s its CPU per request (%s against %s µs).\n",
			q, goalRPSRatio, met(q >= goalRPSRatio), pairRatio(m.pairUS, n.pairUS), micros(m.pairUS), micros(n.pairUS))
	}
	for _, x := range r.rows {
		if x.rate == 0 || x.path != meshPair {
			continue
		}
		d, ng := r.find(x.rate, direct), r.find(x.rate, nginxPair)
		var worse []string
		for _, p := range []struct {
			name             string
			mesh, nginx, dir float64
		}{{"p50", x.p50, ng.p50, d.p50}, {"p99", x.p99, ng.p99, d.p99}, {"p99.9", x.p999, ng.p999, d.p999}} {
			if p.mesh-p.dir > p.nginx-p.dir {
				worse = append(worse, p.name)
			}
		}
		verdict := "met at p50, p99 and p99.9"
		if len(worse) > 0 {
			verdict = "not met at " + strings.Join(worse, ", ")
		}
		fmt.Fprintf(&w, "- At %d RPS, latency added over direct, mesh pair against nginx pair: p50 %+.3f against %+.3f ms, p99 %+.3f against %+.3f ms, p99.9 %+.3f against %+.3f ms (goal: no more than the nginx pair's: %s).",
			x.rate, x.p50-d.p50, ng.p50-d.p50, x.p99-d.p99, ng.p99-d.p99, x.p999-d.p999, ng.p999-d.p999, verdict)
		for _, s := range []row{x, ng, d} {
			if s.saturated() {
				fmt.Fprintf(&w, " The %s row fell behind the schedule (%.0f of %d req/s answered, %d unfinished): its latencies are a queue's.", s.path, s.rps, s.rate, s.unfinished)
			}
		}
		w.WriteString("\n")
	}
	var peakClient, peakServer float64
	for _, x := range r.rows {
		if x.path == meshPair {
			peakClient, peakServer = max(peakClient, x.peakClient), max(peakServer, x.peakServer)
		}
	}
	fmt.Fprintf(&w, "- mesh-proxy peak RSS over all rows: client side %.1f MB, server side %.1f MB (goal < %d MB: %s).\n",
		peakClient/(1<<20), peakServer/(1<<20), goalPeakRSS>>20, met(max(peakClient, peakServer) < goalPeakRSS))
	return w.String()
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// pairRatio is ratio for the pair columns, which the direct rows lack.
func pairRatio(a, b float64) string {
	if a < 0 || b <= 0 {
		return "-"
	}
	return ratio(a, b) + "x"
}

func cores(c float64) string {
	if c < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", c)
}

func micros(us float64) string {
	if us < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", us)
}

func peaks(r row) string {
	if r.pairCores < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f / %.1f", r.peakClient/(1<<20), r.peakServer/(1<<20))
}
