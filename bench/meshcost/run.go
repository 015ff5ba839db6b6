package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/bench/internal/benchdoc"
	"github.com/mesh-dev/mesh/bench/internal/kubelab"
	"github.com/mesh-dev/mesh/install/cluster"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// pause separates two rates: the last one's connections close and the
// proxies go quiet before the next one starts.
const pause = 3 * time.Second

// bench is one run: what it was told, what it drives, what it measured.
// Its methods run on run's goroutine.
type bench struct {
	cfg   config
	out   io.Writer // the report
	log   io.Writer // progress
	began time.Time
	lab   *kubelab.Lab
	res   result
}

// result is what a run measured.
type result struct {
	host                  benchdoc.Host
	k8sVersion            string
	mesh                  kubelab.Mesh
	loadBefore, loadAfter string
	sides                 []*side  // unmeshed, meshed
	proxies               []*proxy // the meshed pair's: client's, server's
	idle                  []usage  // of each of proxies, over the idle window
	runs                  []*sideRun
}

// side is one pair, ready to be loaded.
type side struct {
	meshed    bool
	ns        string
	clientPod string
	addr      string // the server Service's ClusterIP:port
	host      string // the requests' Host header
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (s *side) name() string {
	if s.meshed {
		return "meshed"
	}
	return "unmeshed"
}

// sideRun is one side at one rate.
type sideRun struct {
	side *side
	rate float64
	lat  latencies // of the requests due in the measured window
	// failures and firstErr are of the whole schedule, warm-up included.
	failures int
	firstErr string
	// usage is each proxy's over the measured window (meshed only), and
	// sent the requests due between its first and last reading.
	usage []usage
	sent  []int
}

// run is the whole benchmark. Whether it succeeds, fails or is interrupted
// (ctx), it stops the load and removes what it made before it returns,
// unless cfg.Keep.
func run(ctx context.Context, cfg config, out, log io.Writer) (err error) {
	tmp, err := os.MkdirTemp("", "mesh-bench-meshcost-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b := &bench{cfg: cfg, out: out, log: log, began: time.Now()}
	b.res.host = benchdoc.DescribeHost(ctx, "proxy", "identity", "controller", "install", "bench/meshcost")
	b.res.loadBefore = loadAvg()
	b.lab, err = kubelab.Connect(ctx, kubelab.Config{Mesh: cfg.Mesh, TempDir: tmp, Target: "make bench-mesh", Log: log, Logf: b.logf})
	if err != nil {
		return err
	}
	b.res.k8sVersion = b.lab.K8sVersion
	// Cleanups run on a context of their own: Ctrl-C must not stop them.
	cleanup := func(what string, fn func(ctx context.Context) error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 6*time.Minute)
		defer cancel()
		if cerr := fn(ctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %s: %w", what, cerr))
		}
	}
	b.res.mesh, err = b.lab.EnsureMesh(ctx, cfg.MeshNamespace)
	if b.res.mesh.Installed && !cfg.Keep {
		defer cleanup("mesh uninstall", func(ctx context.Context) error {
			b.logf("mesh uninstall (the run installed it)")
			return b.lab.MeshCmd(ctx, cfg.MeshNamespace, "uninstall")
		})
	}
	if err != nil {
		return err
	}
	pairs := []pair{
		newPair(cfg.plainNamespace(), b.lab.Version, false),
		newPair(cfg.meshedNamespace(), b.lab.Version, true),
	}
	// Namespaces an earlier run left go first; one that is not a run's
	// stops the run before anything is made.
	for _, p := range pairs {
		if err := b.lab.DeleteNamespace(ctx, p.ns.Name, namespaceLabel, true); err != nil {
			return err
		}
	}
	if !cfg.Keep {
		defer cleanup("delete the run's namespaces", func(ctx context.Context) error {
			var errs []error
			for _, p := range pairs {
				errs = append(errs, b.lab.DeleteNamespace(ctx, p.ns.Name, namespaceLabel, false))
			}
			return errors.Join(errs...)
		})
	}
	if err := b.deploy(ctx, pairs); err != nil {
		return err
	}
	if err := b.measureAll(ctx); err != nil {
		return err
	}
	b.res.loadAfter = loadAvg()
	return b.publish()
}

// deploy creates both pairs, waits until they are ready, and prepares the
// sides and the meshed pair's proxies.
func (b *bench) deploy(ctx context.Context, pairs []pair) error {
	for _, p := range pairs {
		b.logf("deploying the %s client and server into namespace %s", sideName(p.meshed), p.ns.Name)
		if err := p.create(ctx, b.lab); err != nil {
			return err
		}
	}
	for _, p := range pairs {
		if err := b.lab.WaitDeployments(ctx, p.ns.Name, 5*time.Minute); err != nil {
			return err
		}
		s, err := b.prepare(ctx, p)
		if err != nil {
			return err
		}
		b.res.sides = append(b.res.sides, s)
		if s.meshed {
			if err := b.findProxies(ctx, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// measureAll measures the proxies idle, then both sides at each rate.
func (b *bench) measureAll(ctx context.Context) error {
	if err := b.idle(ctx); err != nil {
		return err
	}
	for _, rate := range b.cfg.Rates {
		if err := kubelab.Sleep(ctx, pause); err != nil {
			return err
		}
		if err := b.measure(ctx, rate); err != nil {
			return err
		}
	}
	return nil
}

func sideName(meshed bool) string {
	return (&side{meshed: meshed}).name()
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%7.1fs  %s\n", time.Since(b.began).Seconds(), fmt.Sprintf(format, args...))
}

// prepare finds pair p's pods, checks that they are meshed or not as p
// is, and returns the side that sends from the client pod's network
// namespace to the server's ClusterIP; one request must get through
// before it is measured.
func (b *bench) prepare(ctx context.Context, p pair) (*side, error) {
	s := &side{meshed: p.meshed, ns: p.ns.Name, host: serverApp + ":" + strconv.Itoa(serverPort)}
	var clientNetns string
	for _, app := range []string{clientApp, serverApp} {
		pods, err := b.lab.RunningPods(ctx, s.ns, app)
		if err != nil {
			return nil, err
		}
		if len(pods) != 1 {
			return nil, fmt.Errorf("%d running pods of %s in %s, want 1", len(pods), app, s.ns)
		}
		pod := &pods[0]
		switch has := kubelab.HasProxy(pod); {
		case s.meshed && !has:
			return nil, fmt.Errorf("pod %s/%s has no proxy: the injector did not mesh it (mesh check says why)", s.ns, pod.Name)
		case !s.meshed && has:
			return nil, fmt.Errorf("pod %s/%s has a proxy though its namespace does not opt in: it cannot be the unmeshed baseline", s.ns, pod.Name)
		}
		if app == clientApp {
			s.clientPod = pod.Name
			netns, err := kubelab.PodNetns(pod, clientApp)
			if err != nil {
				return nil, err
			}
			clientNetns = netns
		}
	}
	svc, err := b.lab.Client.CoreV1().Services(s.ns).Get(ctx, serverApp, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	s.addr = net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(serverPort))
	s.dial = cluster.DialInNetns(clientNetns)
	b.logf("%s: load leaves from pod %s for the server at %s", s.name(), s.clientPod, s.addr)
	err = kubelab.Poll(ctx, time.Minute, time.Second, "a first request through the "+s.name()+" pair", func(ctx context.Context) (bool, string, error) {
		if err := s.probe(ctx, b.cfg.Timeout); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
	return s, err
}

// probe sends one request the way the load does, on a connection of its
// own, and checks that the server answered it.
func (s *side) probe(ctx context.Context, timeout time.Duration) error {
	tr := &http.Transport{DialContext: s.dial, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/", nil)
	if err != nil {
		return err
	}
	req.Host = s.host
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "echo from ") {
		return fmt.Errorf("answered %s: %.80q", resp.Status, body)
	}
	return nil
}

// findProxies names the meshed pair's two proxies, with their resources
// and why they chose their GOMAXPROCS.
func (b *bench) findProxies(ctx context.Context, meshed *side) error {
	for _, app := range []string{clientApp, serverApp} {
		pods, err := b.lab.RunningPods(ctx, meshed.ns, app)
		if err != nil {
			return err
		}
		if len(pods) != 1 {
			return fmt.Errorf("%d running pods of %s in %s, want 1", len(pods), app, meshed.ns)
		}
		p := &proxy{name: app + " proxy", ns: meshed.ns, pod: pods[0].Name, dir: metrics.Inbound}
		if app == clientApp {
			p.dir = metrics.Outbound
		}
		c := kubelab.ProxyContainer(&pods[0])
		if c == nil {
			return fmt.Errorf("pod %s/%s has no proxy", meshed.ns, pods[0].Name)
		}
		p.resources = resourcesOf(c)
		if n, reason, err := p.sizing(ctx, b.lab); err != nil {
			b.logf("%s: %v: the reason for its GOMAXPROCS is unknown", p.name, err)
		} else {
			p.logMaxProcs, p.maxProcsReason = n, reason
		}
		b.res.proxies = append(b.res.proxies, p)
	}
	return nil
}

// idle measures the proxies with no load, after cfg.Settle.
func (b *bench) idle(ctx context.Context) error {
	b.logf("idle: %v to settle, then %v measured", b.cfg.Settle, b.cfg.Idle)
	from := time.Now().Add(b.cfg.Settle)
	var times []time.Time
	for t := from; t.Before(from.Add(b.cfg.Idle)); t = t.Add(b.cfg.Slice) {
		times = append(times, t)
	}
	rs, err := b.readAt(ctx, append(times, from.Add(b.cfg.Idle)))
	if err != nil {
		return fmt.Errorf("idle window: %w", err)
	}
	for i, p := range b.res.proxies {
		u := usageOf(rs[i])
		b.res.idle = append(b.res.idle, u)
		b.logf("idle: %s %.2f ms CPU per second, RSS %s MB, GOMAXPROCS %.0f", p.name, 1e3*u.cpuRate(), mb(u.rssLast), u.maxProcs)
	}
	return nil
}

// measure runs both sides at rate, taking turns of cfg.Slice in the
// order of b.res.sides, and reads the meshed side's proxies at the ends of
// its measured turns.
func (b *bench) measure(ctx context.Context, rate float64) error {
	warm := int(b.cfg.Warmup / b.cfg.Slice)
	turns := warm + int(b.cfg.Duration/b.cfg.Slice)
	b.logf("%v RPS: the pairs take turns of %v, %s first: %d turns each of warm-up, then %d measured",
		rate, b.cfg.Slice, b.res.sides[0].name(), warm, turns-warm)
	loadCtx, stop := context.WithCancel(ctx)
	defer stop()
	loads := make([]*load, len(b.res.sides))
	for i, s := range b.res.sides {
		ld, err := newLoad(loadCtx, loadConfig{
			Addr: s.addr, Host: s.host, Rate: rate, Slice: b.cfg.Slice, Turns: turns, Phase: i,
			Conns: b.cfg.Conns, Timeout: b.cfg.Timeout, Dial: s.dial,
		})
		if err != nil {
			for _, ld := range loads[:i] {
				ld.close()
			}
			return fmt.Errorf("%s pair at %v RPS: %w", s.name(), rate, err)
		}
		loads[i] = ld
	}
	// Both schedules start together, a moment from now.
	start := time.Now().Add(100 * time.Millisecond)
	for _, ld := range loads {
		ld.Start(loadCtx, start)
	}
	var rs [][]reading
	var err error
	for i, s := range b.res.sides {
		if s.meshed {
			rs, err = b.readAt(ctx, turnEnds(start, b.cfg.Slice, i, warm, turns))
		}
	}
	if err != nil {
		stop()
		for _, ld := range loads {
			ld.Wait()
		}
		return fmt.Errorf("at %v RPS: %w", rate, err)
	}
	results := make([]loadResult, len(loads))
	for i, ld := range loads {
		results[i] = ld.Wait()
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	for i, s := range b.res.sides {
		res := results[i]
		from, to := time.Duration(2*warm)*b.cfg.Slice, time.Duration(2*turns)*b.cfg.Slice
		r := &sideRun{side: s, rate: rate, failures: res.failures, lat: summarize(inWindow(res.samples, from, to))}
		if res.firstErr != nil {
			r.firstErr = res.firstErr.Error()
		}
		if s.meshed {
			for _, readings := range rs {
				r.usage = append(r.usage, turnUsage(readings))
				r.sent = append(r.sent, sentInTurns(res.samples, readings, start))
			}
		}
		b.logf("%s pair at %v RPS: %d requests measured, %d failed; p50 %s ms, p99 %s ms, p99.9 %s ms%s",
			s.name(), rate, r.lat.requests, r.lat.failed, ms(r.lat.p50), ms(r.lat.p99), ms(r.lat.p999), b.cpuNote(r))
		b.res.runs = append(b.res.runs, r)
	}
	return nil
}

// turnEnds are the times at which the turns [warm, turns) of the load of
// phase (loadConfig.Phase) that starts at start begin and end, in order:
// a reading at each bounds those turns.
func turnEnds(start time.Time, slice time.Duration, phase, warm, turns int) []time.Time {
	var out []time.Time
	for t := warm; t < turns; t++ {
		begin := start.Add(time.Duration(2*t+phase) * slice)
		out = append(out, begin, begin.Add(slice))
	}
	return out
}

// sentInTurns counts the samples due in the turns readings bound
// (readings 2m and 2m+1 are turn m's ends); start is the schedule's.
func sentInTurns(samples []sample, readings []reading, start time.Time) int {
	var n int
	for m := 0; m+1 < len(readings); m += 2 {
		n += len(inWindow(samples, readings[m].at.Sub(start), readings[m+1].at.Sub(start)))
	}
	return n
}

// cpuNote is the proxies' CPU per request of r, for progress.
func (b *bench) cpuNote(r *sideRun) string {
	var s string
	for i, u := range r.usage {
		s += fmt.Sprintf("; %s %s µs CPU per request, RSS %s MB", b.res.proxies[i].name, us(perRequest(u.cpu, r.sent[i])), mb(u.rssLast))
	}
	return s
}

// scrapeTries is how often a reading of a proxy is tried before the
// window fails: a single scrape through the API server may time out on a
// busy machine.
const scrapeTries = 3

// readAt reads every proxy at each of times, which are in order, and
// returns each one's readings.
func (b *bench) readAt(ctx context.Context, times []time.Time) ([][]reading, error) {
	rs := make([][]reading, len(b.res.proxies))
	for _, t := range times {
		if err := kubelab.Sleep(ctx, time.Until(t)); err != nil {
			return nil, err
		}
		for i, p := range b.res.proxies {
			r, err := b.readOne(ctx, p)
			if err != nil {
				return nil, err
			}
			rs[i] = append(rs[i], r)
		}
	}
	return rs, nil
}

// readOne reads p, trying scrapeTries times.
func (b *bench) readOne(ctx context.Context, p *proxy) (reading, error) {
	var err error
	for try := range scrapeTries {
		if try > 0 {
			if err := kubelab.Sleep(ctx, 500*time.Millisecond); err != nil {
				return reading{}, err
			}
		}
		var r reading
		if r, err = p.read(ctx, b.lab); err == nil {
			return r, nil
		}
	}
	return reading{}, err
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
