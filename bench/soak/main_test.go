package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
		check   func(config) bool
	}{
		{name: "defaults are the issue's figures", check: func(c config) bool {
			return c.RPS == 1000 && c.Duration == 10*time.Minute && c.Kill == "web" && c.Replicas == 2 && c.Namespace == "mesh-soak"
		}},
		{name: "short run", args: []string{"--duration", "1m", "--rps", "200"}, check: func(c config) bool {
			return c.Duration == time.Minute && c.RPS == 200
		}},
		{name: "kill another server", args: []string{"--kill", "catalog", "--replicas", "3"}, check: func(c config) bool {
			return c.Kill == "catalog" && c.Replicas == 3
		}},
		{name: "the client is no server", args: []string{"--kill", "loadgen"}, wantErr: "want one of web"},
		{name: "one replica would empty the Service", args: []string{"--replicas", "1"}, wantErr: "at least 2"},
		{name: "too short for a slope", args: []string{"--duration", "10s"}, wantErr: "three readings"},
		{name: "no rate", args: []string{"--rps", "0"}, wantErr: "--rps"},
		{name: "the control plane's namespace", args: []string{"--namespace", "mesh-system"}, wantErr: "must differ"},
		{name: "stray argument", args: []string{"now"}, wantErr: "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseFlags(%q) error %v, want one containing %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tc.args, err)
			}
			if !tc.check(c) {
				t.Errorf("parseFlags(%q) = %+v", tc.args, c)
			}
		})
	}
}

// TestDemoObjects rewrites the real demo manifest as a run deploys it.
func TestDemoObjects(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "testdata", "demo", "k8s", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs, err := demoObjects(f, "soak-test", "v9.9.9", "orders", 3)
	if err != nil {
		t.Fatal(err)
	}
	deployments := map[string]*appsv1.Deployment{}
	var namespaces, services int
	for _, obj := range objs {
		switch o := obj.(type) {
		case *corev1.Namespace:
			namespaces++
			if o.Name != "soak-test" || o.Labels[namespaceLabel] != "true" || o.Annotations["mesh.dev/inject"] != "enabled" {
				t.Errorf("namespace %s, labels %v, annotations %v: want soak-test, labelled as the run's, annotated for injection", o.Name, o.Labels, o.Annotations)
			}
		case *corev1.Service:
			services++
			if o.Namespace != "soak-test" {
				t.Errorf("service %s in namespace %q", o.Name, o.Namespace)
			}
		case *appsv1.Deployment:
			deployments[o.Name] = o
			if o.Namespace != "soak-test" {
				t.Errorf("deployment %s in namespace %q", o.Name, o.Namespace)
			}
			if img := o.Spec.Template.Spec.Containers[0].Image; img != demoImage+":v9.9.9" {
				t.Errorf("deployment %s runs %s, want the demo image at the run's version", o.Name, img)
			}
		}
	}
	if namespaces != 1 || services != len(servers) {
		t.Errorf("%d namespaces and %d services, want 1 and %d", namespaces, services, len(servers))
	}
	for _, name := range append([]string{clientApp}, servers...) {
		d, ok := deployments[name]
		if !ok {
			t.Errorf("no deployment %s", name)
			continue
		}
		want := int32(1)
		if name == "orders" {
			want = 3
		}
		if got := *d.Spec.Replicas; got != want {
			t.Errorf("deployment %s has %d replicas, want %d", name, got, want)
		}
	}
}

func TestFit(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	line := func(perHour, base float64, noise ...float64) []reading {
		var rs []reading
		for i := range 13 {
			at := t0.Add(time.Duration(i) * 5 * time.Minute)
			v := base + perHour*at.Sub(t0).Hours()
			if len(noise) > 0 {
				v += noise[i%len(noise)]
			}
			rs = append(rs, reading{at: at, rss: v})
		}
		return rs
	}
	for _, tc := range []struct {
		name               string
		rs                 []reading
		perHour, change    float64
		first, end, lo, hi float64
	}{
		{name: "flat", rs: line(0, 20e6), perHour: 0, change: 0, first: 20e6, end: 20e6, lo: 20e6, hi: 20e6},
		// 12 MB/h over one hour around a mean of 26 MB: 46 %.
		{name: "growing", rs: line(12e6, 20e6), perHour: 12e6, change: 12.0 / 26, first: 20e6, end: 32e6, lo: 20e6, hi: 32e6},
		// Noise that averages out around the line leaves its slope.
		{name: "noisy but flat", rs: line(0, 20e6, 1e6, -1e6), perHour: 0, change: 0, first: 21e6, end: 21e6, lo: 19e6, hi: 21e6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fit(tc.rs, rssOf)
			if !near(got.perHour, tc.perHour, 1e5) || !near(got.change, tc.change, 0.01) {
				t.Errorf("slope %.0f/h, change %.3f; want %.0f/h, %.3f", got.perHour, got.change, tc.perHour, tc.change)
			}
			if got.first != tc.first || got.end != tc.end || got.lo != tc.lo || got.hi != tc.hi || got.n != len(tc.rs) {
				t.Errorf("first %v end %v lo %v hi %v n %d; want %v %v %v %v %d", got.first, got.end, got.lo, got.hi, got.n, tc.first, tc.end, tc.lo, tc.hi, len(tc.rs))
			}
		})
	}
	if got := fit(nil, rssOf); got.n != 0 || got.perHour != 0 {
		t.Errorf("fit of no readings = %+v", got)
	}
	if got := fit(line(5, 1)[:1], rssOf); got.perHour != 0 || got.first != 1 {
		t.Errorf("fit of one reading = %+v, want no slope", got)
	}
}

func near(a, b, tolerance float64) bool { return a-b <= tolerance && b-a <= tolerance }

func TestErrorCounts(t *testing.T) {
	var e errorCounts
	t0 := time.Now()
	for i := range 30 {
		e.add("kind "+strings.Repeat("x", i), t0.Add(time.Duration(i)*time.Second))
	}
	e.add("kind ", t0.Add(time.Minute))
	// Recorded as it returned, though sent before the first.
	e.add("kind ", t0.Add(-time.Second))
	if len(e.kinds) != maxErrorKinds {
		t.Fatalf("%d kinds kept, want %d", len(e.kinds), maxErrorKinds)
	}
	if k := e.kinds[0]; k.n != 3 || !k.first.Equal(t0.Add(-time.Second)) || !k.last.Equal(t0.Add(time.Minute)) {
		t.Errorf("first kind: %d seen, first %v last %v after t0; want 3 from -1s to 1m", k.n, k.first.Sub(t0), k.last.Sub(t0))
	}
	other := e.kinds[maxErrorKinds-1]
	if other.text != otherErrors || other.n != 30-(maxErrorKinds-1) {
		t.Errorf("last kind %q seen %d times, want %q for the %d past the cap", other.text, other.n, otherErrors, 30-(maxErrorKinds-1))
	}
}

// TestReport renders a run's results and writes them twice into a file:
// the figures and verdicts are there, and the second write replaces the
// first.
func TestReport(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	phase := func(name string, began, length time.Duration, requests, failures int, errs ...string) *phaseStats {
		p := &phaseStats{name: name, began: t0.Add(began), ended: t0.Add(began + length), requests: requests, failures: failures}
		for range requests {
			p.latency = append(p.latency, 4*time.Millisecond)
		}
		for i := range failures {
			p.errors.add(errs[i%len(errs)], p.began.Add(time.Duration(1+i%2)*time.Second))
		}
		return p
	}
	steadyStart := 30 * time.Second
	proxy := &target{name: "proxy of loadgen"}
	ctrl := &target{name: "mesh-controller", restartsAfter: 1}
	for i := range 13 {
		at := t0.Add(steadyStart + time.Duration(i)*5*time.Second)
		proxy.readings = append(proxy.readings, reading{at: at, rss: 20e6, goroutines: 40, outbound: float64(i) * 5 * 1000})
		ctrl.readings = append(ctrl.readings, reading{at: at, rss: 40e6 + float64(i)*1e6, goroutines: 100})
	}
	cfg := defaultConfig()
	cfg.Duration = time.Minute
	cfg.Args = []string{"--duration", "1m"}
	b := &bench{cfg: cfg, began: t0, targets: []*target{proxy, ctrl}, client: proxy}
	b.res.clientPod = "loadgen-abc"
	b.res.steady = time.Minute
	b.res.serverPods = 2
	b.res.controller = replacement{killed: []string{"mesh-controller-x"}, ready: 9 * time.Second, gone: time.Second}
	b.res.server = replacement{killed: []string{"web-y"}, ready: 4 * time.Second, gone: 12 * time.Second}
	b.res.phases = []*phaseStats{
		phase(phaseWarmup, 0, steadyStart, 30000, 0),
		phase(phaseSteady, steadyStart, time.Minute, 60000, 0),
		phase(phaseController, steadyStart+time.Minute, 40*time.Second, 40000, 0),
		phase(phaseServer, steadyStart+100*time.Second, 45*time.Second, 45000, 90, "GET /: status 503: no endpoints | none"),
	}
	if p := b.problems(); len(p) != 0 {
		t.Fatalf("problems with a sound run: %v", p)
	}
	md := b.markdown()
	for _, want := range []string{
		"<!-- BEGIN bench-soak", "### Run of 2026-12-07 05:00 UTC", "`go run ./bench/soak --duration 1m`",
		"| steady | 60.0 s | 60,000 | 1000 | 0 | 0.000 |",
		"mesh-controller-x deleted; a new pod Ready after 9.0 s",
		"| server pod killed | 90 | 1.0 s | 2.0 s | GET /: status 503: no endpoints \\| none |",
		"| mesh-controller | 13 | 40.0 → 52.0 | 40.0-52.0 | +720.00 |",
		"Controller killed and restarted: 0 of 40,000 failed (goal 0: met)",
		"Server pod killed: 90 of 45,000 failed, 0.200 % (goal < 0.1 %: **not met**)",
		"the largest RSS change over the steady phase is 26.1 % (mesh-controller)",
		"<!-- END bench-soak -->",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}

	doc := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := os.WriteFile(doc, []byte("# Benchmarks\n\nOther sections.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.cfg.Write = doc
	b.log, b.out = io.Discard, io.Discard
	for range 2 {
		if err := b.publish(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(got), "<!-- BEGIN bench-soak"); n != 1 || !strings.HasPrefix(string(got), "# Benchmarks\n\nOther sections.\n\n## Reliability under load") {
		t.Errorf("after two writes the file holds %d blocks:\n%s", n, got)
	}

	// A run that could not drive the load is not written.
	b.res.phases[1].requests = 30000
	if err := b.publish(); err == nil || !strings.Contains(err.Error(), "could not drive the load") {
		t.Errorf("publish of a run at half the rate: %v, want a failed check", err)
	}
}

func TestErrorKindOf(t *testing.T) {
	for _, tc := range []struct {
		name, method, path string
		err                error
		want               string
	}{
		{name: "status", method: "POST", path: "/buy?product=tea", err: &statusError{code: 503, body: "no endpoints"},
			want: "POST /buy: status 503: no endpoints"},
		{name: "ephemeral port", method: "POST", path: "/buy?product=tea",
			err:  errors.New("orders answered 503: read tcp 10.244.0.8:54548->10.96.195.246:7070: read: connection reset by peer"),
			want: "POST /buy: orders answered 503: read tcp 10.244.0.8:*->10.96.195.246:7070: read: connection reset by peer"},
		{name: "dial keeps its ports", method: "GET", path: "/", err: errors.New("dial tcp 10.244.0.5:8080: connect: connection refused"),
			want: "GET /: dial tcp 10.244.0.5:8080: connect: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := errorKindOf(tc.method, tc.path, tc.err); got != tc.want {
				t.Errorf("errorKindOf = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestErrorTable lists the most frequent kinds of a phase and sums up the
// rest in one row.
func TestErrorTable(t *testing.T) {
	t0 := time.Now()
	p := &phaseStats{name: phaseServer, began: t0}
	for i := range shownKinds + 3 {
		for range i + 1 {
			p.errors.add(fmt.Sprintf("error %02d", i), t0.Add(time.Second))
		}
	}
	b := &bench{res: result{phases: []*phaseStats{{name: phaseSteady}, p}}}
	var sb strings.Builder
	b.errorTable(&sb)
	got := sb.String()
	first := strings.Index(got, fmt.Sprintf("| %d | 1.0 s | 1.0 s | error %02d |", shownKinds+3, shownKinds+2))
	second := strings.Index(got, fmt.Sprintf("| %d | 1.0 s | 1.0 s | error %02d |", shownKinds+2, shownKinds+1))
	if first < 0 || second < first {
		t.Errorf("the most frequent kinds are not listed first:\n%s", got)
	}
	// The three least frequent: 1 + 2 + 3 requests.
	if !strings.Contains(got, "| server pod killed | 6 | | | 3 more kinds of error |") || strings.Contains(got, "error 00") {
		t.Errorf("the least frequent kinds are not summed up:\n%s", got)
	}
	if strings.Contains(got, phaseSteady) {
		t.Errorf("a phase without failures has rows:\n%s", got)
	}
}
