package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mesh-dev/mesh/bench/internal/benchdoc"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

//go:embed nginx.conf
var nginxConf string

// readyTimeout bounds each wait for a server of the lab to come up.
const readyTimeout = 30 * time.Second

// bench is one run.
type bench struct {
	cfg            benchConfig
	stdout, stderr io.Writer
	dir            string // the run's temporary directory

	lab                *lab
	proxy, controller  *process
	app                *process // nginx's master
	appWorker          int      // and its one worker, which does the work
	gomaxprocs         int      // the proxy's, from its metrics; 0 unknown
	commands           []string // what the lab ran, for the report
	clientCommandsSeen map[string]bool

	res result
}

// result is what the report is made of.
type result struct {
	host                  benchdoc.Host
	versions              []string
	started               time.Time
	loadBefore, loadAfter string
	samples               []sample
}

// sample is one row: one load against one Service, in one round.
type sample struct {
	round int
	load  loadName
	kind  tableKind
	res   clientResult
	wall  time.Duration
	// proxyCPU is the CPU time the proxy used during the row.
	proxyCPU time.Duration
	// clientCores and appCores are the client's and the application's
	// CPU, in cores; otherCores whatever else the machine did meanwhile:
	// other tenants' work, and kernel time charged to no process.
	clientCores, appCores, otherCores float64
	// check is the metrics cross-check's line; failed says it failed.
	check  string
	failed bool
}

func runBench(ctx context.Context, cfg benchConfig, stdout, stderr io.Writer) error {
	if err := preflight(cfg); err != nil {
		return err
	}
	b := &bench{cfg: cfg, stdout: stdout, stderr: stderr, clientCommandsSeen: map[string]bool{}}
	b.res.started = time.Now()
	b.res.host = benchdoc.DescribeHost(ctx, "proxy", "cmd/mesh-proxy", "bench/routes")
	b.res.versions = toolVersions(ctx, cfg.Proxy)
	b.res.loadBefore = loadAvg()

	dir, err := os.MkdirTemp("", "mesh-routes-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// nginx's worker runs as nobody and the proxy as UID 2102.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	b.dir = dir
	// Runs before the RemoveAll above: processes first, then the namespace.
	defer func() {
		if b.lab != nil {
			if err := b.lab.close(ctx); err != nil {
				b.logf("cleanup: %v", err)
			}
		}
	}()
	b.logf("building the lab in %s", dir)
	if err := b.setup(ctx); err != nil {
		return err
	}
	if err := b.measureAll(ctx); err != nil {
		return err
	}
	b.res.loadAfter = loadAvg()
	report := b.report()
	fmt.Fprint(stdout, report)
	for _, s := range b.res.samples {
		if s.failed {
			return fmt.Errorf("a cross-check failed (round %d, %s, %s): %s; not writing %s", s.round, s.load, s.kind, s.check, cfg.Write)
		}
	}
	if cfg.Write != "" {
		if err := docBlock.Update(cfg.Write, docBlock.Begin+": written by bench/routes --write; edits in here are overwritten -->\n\n"+report+"\n"+docBlock.End); err != nil {
			return fmt.Errorf("--write: %w", err)
		}
		b.logf("wrote %s", cfg.Write)
	}
	return nil
}

// preflight checks what the run needs before it makes anything.
func preflight(cfg benchConfig) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (a network namespace, a nat rule in it, a server as UID 2102): sudo make bench-routes")
	}
	tools := []string{"ip", "iptables", "nsenter", "setpriv", "nginx", "curl"}
	for _, l := range cfg.Loads {
		tools = append(tools, clientArgs(l, targets[0], time.Second)[0])
	}
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: sudo make deps", strings.Join(missing, ", "))
	}
	if st, err := os.Stat(cfg.Proxy); err != nil || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is missing or not executable: make build", cfg.Proxy)
	}
	return nil
}

// setup builds the lab and starts its servers: the application, the
// destination service and the proxy; then it checks that every Service
// answers through the proxy, matched to the rule the run expects.
func (b *bench) setup(ctx context.Context) error {
	var err error
	var rules []string
	b.lab, rules, err = newLab(ctx, b.dir)
	if err != nil {
		return err
	}
	b.commands = append(b.commands, rules...)
	for _, step := range []func(context.Context) error{b.startApp, b.startController, b.startProxy, b.checkTargets} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// startApp starts nginx: the application and the decoy.
func (b *bench) startApp(ctx context.Context) error {
	conf := filepath.Join(b.dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(strings.ReplaceAll(nginxConf, "@DIR@", b.dir)), 0o644); err != nil {
		return err
	}
	args := []string{"-p", b.dir + "/", "-c", conf, "-e", filepath.Join(b.dir, "nginx-error.log")}
	if _, err := b.lab.output(ctx, "nginx", append(args, "-t", "-q")...); err != nil {
		return err
	}
	args = append(args, "-g", "daemon off;")
	b.commands = append(b.commands, shellJoin(append([]string{"nginx"}, args...)))
	var err error
	if b.app, err = b.lab.start("nginx", b.lab.command(ctx, "nginx", args...)); err != nil {
		return err
	}
	ok, misrouted := answer{200, "ok"}, answer{421, "misrouted"}
	for _, c := range []struct {
		port int
		want answer
	}{{h1Port, ok}, {h2Port, ok}, {decoyPort(h1Port), misrouted}, {decoyPort(h2Port), misrouted}} {
		url := "http://" + net.JoinHostPort(appIP, strconv.Itoa(c.port)) + "/"
		if err := b.waitAnswer(ctx, b.app, url, c.want, c.port == h2Port || c.port == decoyPort(h2Port)); err != nil {
			return err
		}
	}
	workers, err := children(b.app.pid())
	if err != nil {
		return err
	}
	if len(workers) != 1 {
		return fmt.Errorf("nginx runs %d worker processes, want 1", len(workers))
	}
	b.appWorker = workers[0]
	return nil
}

// startController starts this program's controller subcommand.
func (b *bench) startController(ctx context.Context) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b.commands = append(b.commands, "routes controller --addr "+controllerAddr)
	if b.controller, err = b.lab.start("controller", b.lab.command(ctx, self, "controller", "--addr", controllerAddr)); err != nil {
		return err
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		if err := b.controller.alive(); err != nil {
			return err
		}
		if log, _ := os.ReadFile(b.controller.logPath); strings.Contains(string(log), "ready") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the controller did not start within %v:\n%s", readyTimeout, logTail(b.controller.logPath))
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// startProxy starts a copy of the proxy binary, which UID 2102 can surely
// run wherever the checkout lives, with the destination service and the
// namespace of the lab's Services.
func (b *bench) startProxy(ctx context.Context) error {
	bin := filepath.Join(b.dir, "mesh-proxy")
	raw, err := os.ReadFile(b.cfg.Proxy)
	if err != nil {
		return err
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		return err
	}
	args := []string{"--destination-addr", controllerAddr, "--namespace", appNamespace, "--log-level", "warn"}
	b.commands = append(b.commands, fmt.Sprintf("setpriv --reuid=%d --regid=%d --clear-groups mesh-proxy %s", proxyUID, proxyUID, shellJoin(args)))
	if b.proxy, err = b.lab.start("mesh-proxy", b.lab.commandAs(ctx, proxyUID, bin, args...)); err != nil {
		return err
	}
	return b.waitAnswer(ctx, b.proxy, adminURL+"/ready", answer{code: 200}, false)
}

// checkTargets sends the run's request to every Service over both
// protocols, through the proxy: each must answer "ok", from the
// application, and the proxy's metrics must show the requests to a
// Service with routes matched to the last rule of the last route.
func (b *bench) checkTargets(ctx context.Context) error {
	for _, l := range []loadName{http1, h2c} {
		for _, t := range targets {
			url := "http://" + t.authority(l.port()) + requestPath
			if err := b.waitAnswer(ctx, b.proxy, url, answer{200, "ok"}, l == h2c, "-H", headerName+": "+headerValue); err != nil {
				return fmt.Errorf("%s via the proxy: %w", t.kind, err)
			}
		}
	}
	fams, err := b.scrape(ctx)
	if err != nil {
		return err
	}
	// The proxy sizes its runtime itself (proxy/maxprocs.go): the report
	// says what it chose.
	b.gomaxprocs = int(fams.Sum("go_sched_gomaxprocs_threads"))
	for _, l := range []loadName{http1, h2c} {
		for _, t := range targets {
			all, matched := counts(fams, l, t)
			if all < 1 || matched != all {
				return fmt.Errorf("%s over %s: the proxy counted %.0f requests to %s, %.0f of them with the labels expected (%s); the lab does not route as it should",
					t.kind, l, all, t.authority(l.port()), matched, expectedLabels(t.kind))
			}
		}
	}
	return nil
}

// answer is what waitAnswer waits for: a status, and a body unless it
// is "".
type answer struct {
	code int
	body string
}

// waitAnswer waits until url answers want, while p lives. extra are more
// curl arguments.
func (b *bench) waitAnswer(ctx context.Context, p *process, url string, want answer, h2 bool, extra ...string) error {
	args := []string{"-sS", "--max-time", "2", "-w", "\n%{http_code}"}
	if h2 {
		args = append(args, "--http2-prior-knowledge")
	}
	args = append(append(args, extra...), url)
	deadline := time.Now().Add(readyTimeout)
	for {
		if err := p.alive(); err != nil {
			return err
		}
		out, err := b.lab.output(ctx, "curl", args...)
		if err == nil {
			i := strings.LastIndexByte(out, '\n')
			got := answer{body: out[:max(i, 0)]}
			got.code, err = strconv.Atoi(out[i+1:])
			switch {
			case err != nil:
				err = fmt.Errorf("curl printed no status: %q", out)
			case got.code == want.code && (want.body == "" || got.body == want.body):
				return nil
			default:
				err = fmt.Errorf("answered %d %q, want %d %q", got.code, got.body, want.code, want.body)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer as it should within %v: %w", url, readyTimeout, err)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// requestsTotal counts the proxy's requests.
const requestsTotal = "mesh_proxy_http_requests_total"

// counts returns the requests the proxy counted to t's port of load, and
// those of them whose route labels are what t's table should give.
func counts(fams metricstest.Families, l loadName, t target) (all, matched float64) {
	base := []string{"direction", "outbound", "target_addr", t.authority(l.port())}
	all = fams.Sum(requestsTotal, base...)
	if t.kind == noRoutes {
		return all, fams.Sum(requestsTotal, append(base, "route_name", "")...)
	}
	return all, fams.Sum(requestsTotal, append(base, "route_kind", "HTTPRoute", "route_name", lastRoute, "route_rule", lastRuleName)...)
}

// expectedLabels says in words what counts checks.
func expectedLabels(kind tableKind) string {
	if kind == noRoutes {
		return "no route"
	}
	return "HTTPRoute " + lastRoute + " rule " + lastRuleName
}

// scrape reads the proxy's /metrics.
func (b *bench) scrape(ctx context.Context) (metricstest.Families, error) {
	out, err := b.lab.output(ctx, "curl", "-fsS", "--max-time", "5", adminURL+"/metrics")
	if err != nil {
		return nil, fmt.Errorf("the proxy's metrics: %w", err)
	}
	return metricstest.Parse(strings.NewReader(out))
}

// measureAll warms every load up against every Service, then runs the
// rounds. In a round every load runs against the three Services in turn,
// starting one further along the list each round, so that neither the
// neighbours' load nor a drift of the machine's favours one table.
func (b *bench) measureAll(ctx context.Context) error {
	if b.cfg.Warmup > 0 {
		for _, l := range b.cfg.Loads {
			for _, k := range allKinds {
				b.logf("warm-up: %s against the Service with %s for %v", l, k, b.cfg.Warmup)
				if _, _, err := b.runClient(ctx, clientArgs(l, targetOf(k), b.cfg.Warmup)); err != nil {
					return fmt.Errorf("warm-up %s %s: %w", l, k, err)
				}
			}
		}
	}
	for round := 1; round <= b.cfg.Rounds; round++ {
		for _, l := range b.cfg.Loads {
			for i := range allKinds {
				k := allKinds[(round-1+i)%len(allKinds)]
				b.logf("round %d of %d: %s against the Service with %s for %v", round, b.cfg.Rounds, l, k, b.cfg.Duration)
				s, err := b.measure(ctx, round, l, k)
				if err != nil {
					return fmt.Errorf("round %d, %s, %s: %w", round, l, k, err)
				}
				b.logf("  %.0f req/s, %.2f µs of proxy CPU per request, %d errors; %s", s.res.rps, micros(s.perRequest()), s.res.errors, s.check)
				b.res.samples = append(b.res.samples, s)
			}
		}
	}
	return nil
}

// measure runs one row. The proxy's metrics are read before its CPU clock
// is and after, so that their scrapes are not the row's.
func (b *bench) measure(ctx context.Context, round int, l loadName, k tableKind) (sample, error) {
	t := targetOf(k)
	s := sample{round: round, load: l, kind: k}
	before, err := b.scrape(ctx)
	if err != nil {
		return s, err
	}
	all0, matched0 := counts(before, l, t)
	cpu0, err := cpuTime(b.proxy.pid())
	if err != nil {
		return s, err
	}
	app0, err := cpuTime(b.appWorker)
	if err != nil {
		return s, err
	}
	busy0, err := busyTicks()
	if err != nil {
		return s, err
	}
	args := clientArgs(l, t, b.cfg.Duration)
	if line := shellJoin(args); !b.clientCommandsSeen[line] {
		b.clientCommandsSeen[line] = true
		b.commands = append(b.commands, line)
	}
	out, st, err := b.runClient(ctx, args)
	if err != nil {
		return s, err
	}
	cpu1, err := cpuTime(b.proxy.pid())
	if err != nil {
		return s, err
	}
	app1, err := cpuTime(b.appWorker)
	if err != nil {
		return s, err
	}
	busy1, err := busyTicks()
	if err != nil {
		return s, err
	}
	for _, p := range []*process{b.proxy, b.app, b.controller} {
		if err := p.alive(); err != nil {
			return s, err
		}
	}
	if l == h2c {
		s.res, err = parseH2load(out)
	} else {
		s.res, err = parseWrk(out)
	}
	if err != nil {
		return s, err
	}
	if s.res.requests == 0 {
		return s, fmt.Errorf("no request was answered:\n%s", out)
	}
	s.wall = st.wall
	s.proxyCPU = cpu1 - cpu0
	secs := st.wall.Seconds()
	s.clientCores = st.cpu.Seconds() / secs
	s.appCores = (app1 - app0).Seconds() / secs
	machine := float64(busy1-busy0) / userHZ / secs
	s.otherCores = max(0, machine-s.proxyCPU.Seconds()/secs-s.clientCores-s.appCores)
	s.check, s.failed, err = b.crossCheck(ctx, s, all0, matched0)
	return s, err
}

// crossCheck waits until the proxy has counted the requests the client
// had answered in a row, then checks that it counted no more than the
// client's requests in flight besides, each with the route labels the
// Service's table should give, and that the client saw no error (a
// request matched to any other rule gets the decoy's 421). It returns a
// line for the report, and whether it failed.
func (b *bench) crossCheck(ctx context.Context, s sample, all0, matched0 float64) (string, bool, error) {
	t := targetOf(s.kind)
	n := float64(s.res.requests)
	// A proxy counts a request once its response is done; give it a
	// moment after the client stopped.
	deadline := time.Now().Add(5 * time.Second)
	var all, matched float64
	for {
		fams, err := b.scrape(ctx)
		if err != nil {
			return "", true, err
		}
		a, m := counts(fams, s.load, t)
		all, matched = a-all0, m-matched0
		if all >= n || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return "", true, err
		}
	}
	line := fmt.Sprintf("the client had %d requests answered, %d errors; the proxy counted %.0f to %s, %.0f with %s",
		s.res.requests, s.res.errors, all, t.authority(s.load.port()), matched, expectedLabels(s.kind))
	var problem string
	switch {
	case s.res.errors > 0:
		problem = "the client saw errors"
	case all < n:
		problem = "the proxy counted fewer requests than the client had answered: the load did not cross it"
	case all > n+float64(inflight(s.load)):
		problem = fmt.Sprintf("the proxy counted more than %d requests: something else used the Service", s.res.requests+inflight(s.load))
	case matched != all:
		problem = "some requests did not match the rule they should have"
	}
	if problem != "" {
		return line + ": MISMATCH, " + problem, true, nil
	}
	return line + ": ok", false, nil
}

// clientStats is what a client process used.
type clientStats struct {
	wall, cpu time.Duration
}

// runClient runs a load generator in the namespace and returns its output.
func (b *bench) runClient(ctx context.Context, args []string) (string, clientStats, error) {
	cmd := b.lab.command(ctx, args[0], args[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	st := clientStats{wall: time.Since(start)}
	switch {
	case ctx.Err() != nil:
		return "", st, fmt.Errorf("%s: %w", args[0], ctx.Err())
	case err != nil:
		return "", st, fmt.Errorf("%s: %w: %s%s", shellJoin(args), err, stdout.Bytes(), bytes.TrimSpace(stderr.Bytes()))
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		st.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return stdout.String(), st, nil
}

// perRequest is the proxy's CPU time per request of the row.
func (s sample) perRequest() time.Duration {
	if s.res.requests == 0 {
		return 0
	}
	return s.proxyCPU / time.Duration(s.res.requests)
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "routes: "+format+"\n", args...)
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// toolVersions describes the binaries the run measures and runs.
func toolVersions(ctx context.Context, proxy string) []string {
	first := func(name string, args ...string) string {
		out, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	wrk := strings.Fields(first("wrk", "-v"))
	wrkVersion := "wrk"
	if len(wrk) > 1 {
		wrkVersion += " " + wrk[1]
	}
	return []string{
		"mesh-proxy " + lastField(first(proxy, "--version")) + " (" + fingerprint(proxy) + ")",
		strings.TrimPrefix(first("nginx", "-v"), "nginx version: "),
		wrkVersion,
		first("h2load", "--version"),
	}
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
