package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/bench/internal/kubelab"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// testBench is a finished run at 200 and 500 RPS with the figures given:
// each proxy spends cpuPerReq per request on top of idleRate, holds
// idleRSS idle and loadedRSS under load, and the meshed pair is
// addedP99 slower at p99.
func testBench(cpuPerReq, idleRate, idleRSS, loadedRSS float64, addedP99 time.Duration) *bench {
	t0 := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	cfg := defaultConfig()
	cfg.Args = []string{"--duration", "1m"}
	b := &bench{cfg: cfg, began: t0, out: io.Discard, log: io.Discard}
	plain, meshed := &side{meshed: false}, &side{meshed: true}
	b.res.sides = []*side{plain, meshed}
	b.res.mesh = kubelab.Mesh{Version: "v0.1.0", Installed: true}
	b.res.proxies = []*proxy{
		{name: "client proxy", pod: "client-1", dir: metrics.Outbound, resources: "requests cpu 10m; limits none (no CPU limit)", maxProcsReason: "no CPU limit"},
		{name: "server proxy", pod: "server-1", dir: metrics.Inbound, resources: "requests cpu 10m; limits none (no CPU limit)", maxProcsReason: "no CPU limit"},
	}
	idle := usage{readings: 7, span: 30 * time.Second, cpu: idleRate * 30, rssFirst: idleRSS, rssLast: idleRSS, rssMax: idleRSS, maxProcs: 1}
	b.res.idle = []usage{idle, idle}
	lat := func(p50, p99 time.Duration) latencies {
		return latencies{requests: 12000, p50: p50, p99: p99, p999: 2 * p99, max: 3 * p99, lateP99: 50 * time.Microsecond, waited: 3}
	}
	for _, rate := range cfg.Rates {
		n := int(rate * 60)
		b.res.runs = append(b.res.runs, &sideRun{side: plain, rate: rate, lat: lat(300*time.Microsecond, 600*time.Microsecond)})
		run := &sideRun{side: meshed, rate: rate, lat: lat(800*time.Microsecond, 600*time.Microsecond+addedP99), sent: []int{n, n}}
		for range 2 {
			run.usage = append(run.usage, usage{readings: 13, span: time.Minute, cpu: cpuPerReq*float64(n) + idleRate*60,
				rssFirst: idleRSS, rssLast: loadedRSS, rssMax: loadedRSS, requests: float64(n), mtls: float64(n), maxProcs: 1})
		}
		b.res.runs = append(b.res.runs, run)
	}
	return b
}

// TestReport renders a run that meets some goals and misses others, and
// writes it twice into a file: the figures and verdicts are there, and the
// second write replaces the first.
func TestReport(t *testing.T) {
	b := testBench(150e-6, 0.002, 11e6, 15e6, 400*time.Microsecond)
	if p := b.problems(); len(p) != 0 {
		t.Fatalf("problems with a sound run: %v", p)
	}
	md := b.markdown()
	for _, want := range []string{
		"<!-- BEGIN bench-mesh: written by bench/meshcost --write", "### Run of 2026-12-08 10:00 UTC", "`go run ./bench/meshcost --duration 1m`",
		"- Client proxy (pod client-1): GOMAXPROCS 1 (no CPU limit); requests cpu 10m",
		"mesh v0.1.0 (installed by the run)",
		"| 200 | unmeshed | 12,000 | 0 | 0.300 | 0.600 | 1.200 | 1.800 | 3 | 0.050 |",
		"| 200 | **added by the mesh** | | | +0.500 | +0.400 | +0.800 | | | |",
		"| idle, 30.0 s | client proxy | - | 0 | - | 2.00 | - | - | 11.0 → 11.0 | 11.0 |",
		// 150 µs per request on top of 2 ms/s idle: 30,000 requests in 60 s
		// add 4 µs per request of idle CPU.
		"| 500 RPS, 60.0 s | server proxy | 30,000 | 30,000 | 100.0 % | 77.00 | 154 | 150 | 11.0 → 15.0 | 15.0 |",
		"| 500 RPS | **both proxies** | | | | | **308** | 300 | | |",
		"CPU per request of the two proxies together at 500 RPS: 0.308 ms (goal < 0.200 ms: **not met**; done when < 0.400 ms: met)",
		"p99 added by the mesh at 200 RPS: +0.400 ms (goal < 1.000 ms: met)",
		"RSS idle, the most of the idle window: client proxy 11.0, server proxy 11.0 MB (goal < 10.0 MB each: **not met**)",
		"RSS at 500 RPS, the most of the window: client proxy 15.0, server proxy 15.0 MB (goal and done when < 20.0 MB each: met)",
		"- Checks: every window lost at most 0.1 % of its requests",
		"<!-- END bench-mesh -->",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}

	// The file holds another block whose markers start like this one's.
	const other = "<!-- BEGIN bench-meshpath: written by bench/meshpath -->\nits figures\n<!-- END bench-meshpath -->\n"
	doc := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := os.WriteFile(doc, []byte("# Benchmarks\n\nOther sections.\n\n"+other), 0o644); err != nil {
		t.Fatal(err)
	}
	b.cfg.Write = doc
	for range 2 {
		if err := b.publish(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(got), "<!-- BEGIN bench-mesh:"); n != 1 || !strings.HasPrefix(string(got), "# Benchmarks\n\nOther sections.\n\n"+other+"\n## What the mesh costs") {
		t.Errorf("after two writes the file holds %d blocks, or lost what it held:\n%s", n, got)
	}
}

// TestReportGoalsMet renders a run under every goal.
func TestReportGoalsMet(t *testing.T) {
	md := testBench(80e-6, 0.001, 8e6, 12e6, 300*time.Microsecond).markdown()
	for _, want := range []string{
		"at 500 RPS: 0.164 ms (goal < 0.200 ms: met; done when < 0.400 ms: met)",
		"(goal < 1.000 ms: met)",
		"(goal < 10.0 MB each: met)",
		"(goal and done when < 20.0 MB each: met)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "not met") {
		t.Errorf("a run under every goal reports one not met:\n%s", md)
	}
}

// TestProblems: a run whose figures cannot be trusted says why, and is not
// written.
func TestProblems(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(b *bench)
		want  string
	}{
		{name: "failed requests", spoil: func(b *bench) {
			r := b.res.find(true, 500)
			r.lat.failed, r.firstErr = 100, "read: connection reset by peer"
		}, want: "meshed pair at 500 RPS: 100 of 12000 requests failed (first: read: connection reset by peer)"},
		{name: "load around the proxy", spoil: func(b *bench) {
			b.res.find(true, 200).usage[0].requests = 10
		}, want: "client proxy counted 10 outbound HTTP requests of the 12000 sent: the load did not cross it"},
		{name: "plain text between the proxies", spoil: func(b *bench) {
			b.res.find(true, 200).usage[1].mtls = 0
		}, want: "server proxy counted 0 of its 12000 requests with a peer identity"},
		{name: "a proxy restarted", spoil: func(b *bench) {
			b.res.idle[1].reset = true
		}, want: "server proxy restarted in the idle window"},
		{name: "a busy machine", spoil: func(b *bench) {
			b.res.find(false, 500).lat.lateP99 = 3 * time.Millisecond
		}, want: "unmeshed pair at 500 RPS: the generator wrote 1 % of the requests it had a connection for 3.000 ms or more late"},
		{name: "an empty window", spoil: func(b *bench) {
			b.res.find(false, 200).lat = latencies{}
		}, want: "unmeshed pair at 200 RPS: no request in the measured window"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := testBench(150e-6, 0.002, 9e6, 15e6, 400*time.Microsecond)
			tc.spoil(b)
			doc := filepath.Join(t.TempDir(), "benchmarks.md")
			if err := os.WriteFile(doc, []byte("# Benchmarks\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			b.cfg.Write = doc
			err := b.publish()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("publish: %v, want a failed check containing %q", err, tc.want)
			}
			if md := b.markdown(); !strings.Contains(md, "Checks FAILED: ") {
				t.Errorf("the report does not say its checks failed:\n%s", md)
			}
			if got, _ := os.ReadFile(doc); string(got) != "# Benchmarks\n" {
				t.Errorf("a run that failed its checks was written:\n%s", got)
			}
		})
	}
}
