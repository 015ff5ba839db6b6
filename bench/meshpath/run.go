package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mesh-dev/mesh/bench/internal/benchdoc"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// pathName is one of the three ways a request goes from the client pod to
// the application.
type pathName string

const (
	direct    pathName = "direct"     // client -> application
	meshPair  pathName = "mesh"       // client -> mesh-proxy -> mesh TLS -> mesh-proxy -> application
	nginxPair pathName = "nginx pair" // client -> nginx A -> TLS 1.3 -> nginx B -> application
)

// allPaths in the order every load runs them.
var allPaths = []pathName{direct, meshPair, nginxPair}

// bench is one run.
type bench struct {
	cfg            benchConfig
	stdout, stderr io.Writer
	dir            string // the run's temporary directory
	proxyBin       string // the run's copy of cfg.Proxy, which UID 2102 can run
	td             spiffeid.TrustDomain

	lab                 *lab
	client, server, ctl *pod
	pki                 *labPKI
	clientID, serverID  spiffeid.ID         // the proxies' identities
	procs               map[string]*process // by name: controller, app, client-proxy, server-proxy, nginx-a, nginx-b
	commands            []string            // what the lab ran, for the report

	res result
}

// result is what the report is made of.
type result struct {
	host                  benchdoc.Host
	versions              []string
	started               time.Time
	loadBefore, loadAfter string
	rows                  []row
	checks                []string // the metrics cross-check of each mesh row
}

// row is one load along one path.
type row struct {
	rate int // requests per second; 0 for as many as wrk gets through
	path pathName
	// rps is the answered requests per second, requests their number.
	rps      float64
	requests int
	errors   int // wrk: socket errors and non-2xx; load: failed requests
	// unfinished requests had no answer when the load's drain ended.
	unfinished int
	// Latencies in milliseconds; p999 is -1 for wrk, which has none.
	p50, p99, p999, max float64
	// lagP99 is the load generator's p99 wait before it could send, -1
	// for wrk.
	lagP99 float64
	// pairCores is the CPU the pair used, both proxies or both nginx
	// (their workers), in cores; pairUS the same per request in µs. -1
	// for the direct path.
	pairCores, pairUS float64
	// peakClient and peakServer are the peak RSS of the client pod's and
	// the server pod's half of the pair, in bytes.
	peakClient, peakServer float64
	// clientCores, appCores are the load generator's and the
	// application's CPU; softirqCores the kernel's softirq time (the
	// network's receive path, charged to no process); othCores whatever
	// else the machine did: other tenants' work.
	clientCores, appCores, softirqCores, othCores float64
}

// saturated reports whether a fixed-rate row fell behind its schedule:
// its latencies then measure a queue that grows for the whole row.
func (r row) saturated() bool {
	return r.rate > 0 && (r.unfinished > 0 || r.rps < 0.95*float64(r.rate))
}

func runBench(ctx context.Context, cfg benchConfig, stdout, stderr io.Writer) error {
	if err := preflight(cfg); err != nil {
		return err
	}
	b := &bench{cfg: cfg, stdout: stdout, stderr: stderr, procs: map[string]*process{}}
	b.td = spiffeid.RequireTrustDomainFromString("cluster.local")
	b.res.started = time.Now()
	b.res.host = benchdoc.DescribeHost(ctx, "proxy", "cmd/mesh-proxy", "identity", "controller", "bench/meshpath")
	b.res.versions = toolVersions(ctx, cfg.Proxy)
	b.res.loadBefore = loadAvg()

	dir, err := os.MkdirTemp("", "mesh-meshpath-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// nginx's workers run as nobody and the proxies as UID 2102.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	b.dir = dir
	if b.proxyBin, err = copyExecutable(cfg.Proxy, filepath.Join(dir, "mesh-proxy")); err != nil {
		return err
	}
	// Runs before the RemoveAll above: processes first, then namespaces.
	defer func() {
		if b.lab != nil {
			b.lab.close(ctx)
		}
	}()
	b.logf("building the lab in %s", dir)
	if err := b.setup(ctx); err != nil {
		return err
	}
	for _, rate := range append([]int{0}, cfg.Rates...) {
		for _, path := range allPaths {
			if err := b.measure(ctx, rate, path); err != nil {
				return err
			}
		}
	}
	b.res.loadAfter = loadAvg()
	report := b.report()
	fmt.Fprint(stdout, report)
	for _, c := range b.res.checks {
		if !strings.HasSuffix(c, ": ok") {
			return fmt.Errorf("the metrics cross-check failed: the mesh rows did not all go through both proxies in mesh TLS; not writing %s", cfg.Write)
		}
	}
	if cfg.Write != "" {
		if err := docBlock.Update(cfg.Write, docBlock.Begin+": written by bench/meshpath --write; edits in here are overwritten -->\n\n"+report+"\n"+docBlock.End); err != nil {
			return fmt.Errorf("--write: %w", err)
		}
		b.logf("wrote %s", cfg.Write)
	}
	return nil
}

// docBlock is the generated block of docs/benchmarks.md.
var docBlock = benchdoc.Block{Begin: "<!-- BEGIN bench-meshpath", End: "<!-- END bench-meshpath -->"}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "meshpath: "+format+"\n", args...)
}

// copyExecutable copies the file at from to to, mode 0755.
func copyExecutable(from, to string) (string, error) {
	raw, err := os.ReadFile(from)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(to, raw, 0o755); err != nil {
		return "", err
	}
	return to, nil
}

// url is where the client sends the path's requests.
func (b *bench) url(p pathName) string {
	switch p {
	case direct:
		return fmt.Sprintf("http://%s:%d/", b.server.ip, directPort)
	case meshPair:
		return fmt.Sprintf("http://%s:%d/", b.server.ip, appPort)
	default:
		return fmt.Sprintf("http://127.0.0.1:%d/", pairLocalPort)
	}
}

// clientArgs is the load command of a row that lasts d.
func (b *bench) clientArgs(rate int, p pathName, d time.Duration) ([]string, error) {
	if rate == 0 {
		return []string{"wrk", "-t1", "-c" + strconv.Itoa(b.cfg.Conns), "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency", b.url(p)}, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return []string{self, "load", "--url", b.url(p), "--rate", strconv.Itoa(rate), "--duration", d.String(), "--conns", strconv.Itoa(b.cfg.Conns)}, nil
}

// pairPIDs are the processes of p's pair on the client and the server
// side: the proxies, or nginx A's and B's workers (not their masters,
// which only supervise).
func (b *bench) pairPIDs(p pathName) (clientSide, serverSide []int, err error) {
	switch p {
	case meshPair:
		return []int{b.procs["client-proxy"].pid()}, []int{b.procs["server-proxy"].pid()}, nil
	case nginxPair:
		if clientSide, err = children(b.procs["nginx-a"].pid()); err != nil {
			return nil, nil, err
		}
		serverSide, err = children(b.procs["nginx-b"].pid())
		return clientSide, serverSide, err
	}
	return nil, nil, nil
}

// measure runs one row: the same load for the warm-up, then measured.
func (b *bench) measure(ctx context.Context, rate int, p pathName) error {
	d := b.cfg.Duration
	if rate > 0 {
		d = b.cfg.RateDuration
	}
	b.logf("%s via %s: warm-up %v, then %v", loadName(rate), p, b.cfg.Warmup, d)
	if b.cfg.Warmup > 0 {
		args, err := b.clientArgs(rate, p, b.cfg.Warmup)
		if err != nil {
			return err
		}
		if _, err := b.runClient(ctx, args); err != nil {
			return fmt.Errorf("%s via %s, warm-up: %w", loadName(rate), p, err)
		}
	}
	args, err := b.clientArgs(rate, p, d)
	if err != nil {
		return err
	}
	b.commands = append(b.commands, "client: "+strings.ReplaceAll(strings.Join(args, " "), b.exe(), "meshpath"))
	var before meshCounts
	if p == meshPair {
		if before, err = b.meshCounts(ctx); err != nil {
			return err
		}
	}
	r, err := b.sample(ctx, rate, p, args)
	if err != nil {
		return fmt.Errorf("%s via %s: %w", loadName(rate), p, err)
	}
	if r.errors > 0 || r.unfinished > 0 {
		b.logf("warning: %s via %s: %d errors, %d unfinished", loadName(rate), p, r.errors, r.unfinished)
	}
	if p == meshPair {
		// wrk stops with a request in flight on each connection, which
		// the proxies may have counted; the load subcommand drains, but
		// its failed requests may or may not have reached them.
		slack := r.errors + r.unfinished
		if rate == 0 {
			slack += b.cfg.Conns
		}
		check, err := b.checkMesh(ctx, before, r.requests, slack)
		b.res.checks = append(b.res.checks, loadName(rate)+": "+check)
		if err != nil {
			b.logf("error: %s: %v", loadName(rate), err)
		}
	}
	b.res.rows = append(b.res.rows, r)
	return nil
}

// sample runs the load command args and returns its row: what the client
// measured, and the CPU and peak RSS of the pair, the application and the
// machine over the same time.
func (b *bench) sample(ctx context.Context, rate int, p pathName, args []string) (row, error) {
	r := row{rate: rate, path: p, pairCores: -1, pairUS: -1}
	clientSide, serverSide, err := b.pairPIDs(p)
	if err != nil {
		return r, err
	}
	pair := slices.Concat(clientSide, serverSide)
	apps, err := children(b.procs["app"].pid())
	if err != nil {
		return r, err
	}
	if err := resetPeakRSS(pair...); err != nil {
		return r, err
	}
	before, err := takeTicks(pair, apps)
	if err != nil {
		return r, err
	}
	run, err := b.runClient(ctx, args)
	if err != nil {
		return r, err
	}
	after, err := takeTicks(pair, apps)
	if err != nil {
		return r, fmt.Errorf("a server is gone: %w", err)
	}
	for _, proc := range b.procs {
		if err := proc.alive(); err != nil {
			return r, err
		}
	}
	if rate == 0 {
		err = r.fromWrk(run.stdout)
	} else {
		err = r.fromLoad(run.stdout)
	}
	switch {
	case err != nil:
		return r, fmt.Errorf("%w\n%s", err, run.stdout)
	case r.requests == 0:
		return r, fmt.Errorf("no request was answered\n%s", run.stdout)
	}
	cores := func(t int64) float64 { return float64(t) / userHZ / run.wall.Seconds() }
	r.clientCores = run.cpu.Seconds() / run.wall.Seconds()
	r.appCores = cores(after.app - before.app)
	if len(pair) > 0 {
		r.pairCores = cores(after.pair - before.pair)
		r.pairUS = float64(after.pair-before.pair) / userHZ * 1e6 / float64(r.requests)
		if r.peakClient, err = peakRSS(clientSide...); err != nil {
			return r, err
		}
		if r.peakServer, err = peakRSS(serverSide...); err != nil {
			return r, err
		}
	}
	r.softirqCores = cores(after.machine.softirq - before.machine.softirq)
	r.othCores = max(0, cores(after.machine.busy-before.machine.busy)-r.softirqCores-r.clientCores-r.appCores-max(0, r.pairCores))
	return r, nil
}

// exe is this program's path, as the commands in the report name it.
func (b *bench) exe() string {
	self, _ := os.Executable()
	return self
}

// ticks are CPU times at one moment, in USER_HZ ticks.
type ticks struct {
	pair, app int64 // the pair's and the application's processes
	machine   machineTicks
}

func takeTicks(pair, apps []int) (t ticks, err error) {
	if t.pair, err = cpuTicks(pair...); err != nil {
		return t, err
	}
	if t.app, err = cpuTicks(apps...); err != nil {
		return t, err
	}
	t.machine, err = readMachineTicks()
	return t, err
}

func loadName(rate int) string {
	if rate == 0 {
		return "max req/s"
	}
	return strconv.Itoa(rate) + " RPS"
}

// clientRun is a finished load command.
type clientRun struct {
	stdout string
	wall   time.Duration
	cpu    time.Duration // user + system
}

// runClient runs a load command in the client pod. It gets a process group
// of its own, killed whole when ctx ends: the terminal's Ctrl-C reaches
// this program only, and wrk would otherwise catch it and report a short
// row as if it were whole.
func (b *bench) runClient(ctx context.Context, args []string) (clientRun, error) {
	cmd := b.client.command(ctx, args[0], args[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if ctx.Err() != nil {
		return clientRun{}, ctx.Err()
	}
	if err != nil {
		return clientRun{}, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	run := clientRun{stdout: stdout.String(), wall: wall}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		run.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return run, nil
}

// fromLoad fills r from the load subcommand's JSON.
func (r *row) fromLoad(out string) error {
	var res loadResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return fmt.Errorf("the load generator's output: %w", err)
	}
	r.rps, r.requests, r.errors, r.unfinished = res.Achieved, res.Completed, res.Errors, res.Unfinished
	r.p50, r.p99, r.p999, r.max = res.Latency.P50, res.Latency.P99, res.Latency.P999, res.Latency.Max
	r.lagP99 = res.StartLag.P99
	return nil
}

// meshCounts are the proxies' HTTP request counters: all of them, and
// those with the other side's identity, which the proxies only know from
// a mesh TLS connection.
type meshCounts struct {
	out, outMesh float64 // the client proxy's outbound requests; with server_id the server's identity
	in, inMesh   float64 // the server proxy's inbound requests; with client_id the client's identity
}

const requestsTotal = "mesh_proxy_http_requests_total"

func (b *bench) meshCounts(ctx context.Context) (meshCounts, error) {
	c, err := b.scrape(ctx, b.client)
	if err != nil {
		return meshCounts{}, err
	}
	s, err := b.scrape(ctx, b.server)
	if err != nil {
		return meshCounts{}, err
	}
	return meshCounts{
		out:     c.Sum(requestsTotal, "direction", "outbound"),
		outMesh: c.Sum(requestsTotal, "direction", "outbound", "server_id", b.serverID.String()),
		in:      s.Sum(requestsTotal, "direction", "inbound"),
		inMesh:  s.Sum(requestsTotal, "direction", "inbound", "client_id", b.clientID.String()),
	}, nil
}

// scrape reads the /metrics of the proxy in pod p.
func (b *bench) scrape(ctx context.Context, p *pod) (metricstest.Families, error) {
	out, err := p.run(ctx, "curl", "-fsS", "--max-time", "5", "http://127.0.0.1:"+strconv.Itoa(names.AdminPort)+"/metrics")
	if err != nil {
		return nil, fmt.Errorf("the %s proxy's metrics: %w", p.name, err)
	}
	fams, err := metricstest.Parse(strings.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("the %s proxy's metrics: %w", p.name, err)
	}
	return fams, nil
}

// checkMesh waits until both proxies have counted the n requests the
// client had answered since before, and checks that they counted at most
// slack more, every one with the other pod's identity. It returns a line
// for the report, ending in ": ok" when all holds.
func (b *bench) checkMesh(ctx context.Context, before meshCounts, n, slack int) (string, error) {
	// A proxy counts a request once its response is done; give them a
	// moment after the client stopped.
	deadline := time.Now().Add(5 * time.Second)
	var d meshCounts
	for {
		after, err := b.meshCounts(ctx)
		if err != nil {
			return err.Error(), err
		}
		d = meshCounts{out: after.out - before.out, outMesh: after.outMesh - before.outMesh,
			in: after.in - before.in, inMesh: after.inMesh - before.inMesh}
		if (d.outMesh >= float64(n) && d.inMesh >= float64(n)) || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err().Error(), ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	line := fmt.Sprintf("the client had %d requests answered; the client proxy counted %.0f outbound, %.0f of them with server_id %s; the server proxy %.0f inbound, %.0f with client_id %s",
		n, d.out, d.outMesh, b.serverID, d.in, d.inMesh, b.clientID)
	var err error
	switch {
	case d.outMesh != d.out || d.inMesh != d.in:
		err = fmt.Errorf("some requests crossed the proxies without mesh TLS identities")
	case d.outMesh < float64(n) || d.inMesh < float64(n):
		err = fmt.Errorf("the proxies counted fewer requests than the client had answered: the traffic did not cross both")
	case d.outMesh > float64(n+slack) || d.inMesh > float64(n+slack):
		err = fmt.Errorf("the proxies counted more than %d requests: something else used the path", n+slack)
	}
	if err != nil {
		return line + ": MISMATCH, " + err.Error(), err
	}
	return line + ": ok", nil
}

// toolVersions describes the binaries the run measures and runs.
func toolVersions(ctx context.Context, proxy string) []string {
	first := func(name string, args ...string) string {
		out, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	nginx := strings.TrimPrefix(first("nginx", "-v"), "nginx version: ")
	if out, err := exec.CommandContext(ctx, "nginx", "-V").CombinedOutput(); err == nil {
		for line := range strings.Lines(string(out)) {
			if ssl, ok := strings.CutPrefix(strings.TrimSpace(line), "built with "); ok {
				nginx += " (built with " + ssl + ")"
			}
		}
	}
	wrk := strings.Fields(first("wrk", "-v"))
	wrkVersion := "wrk"
	if len(wrk) > 1 {
		wrkVersion += " " + wrk[1]
	}
	return []string{"mesh-proxy " + lastField(first(proxy, "--version")) + " (" + fingerprint(proxy) + ")", nginx, wrkVersion}
}

// fingerprint names the binary at path by size and content: the checkout's
// bin/ is shared, and a neighbour's `make build` of another tree may have
// replaced it since the commit the report names.
func fingerprint(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	sum := sha256.Sum256(raw)
	return fmt.Sprintf("%.1f MB, sha256 %x", float64(len(raw))/(1<<20), sum[:6])
}

func lastField(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return "unknown"
	}
	return f[len(f)-1]
}

// loadAvg returns the 1, 5 and 15 minute load averages.
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
