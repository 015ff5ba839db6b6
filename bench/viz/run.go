package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mesh-dev/mesh/bench/viz/fleet"
)

// bench is one run: what it was told, what it runs, what it measured. Its
// methods run on run's goroutine.
type bench struct {
	cfg   config
	out   io.Writer // the report
	log   io.Writer // progress
	f     *fleet.Fleet
	began time.Time

	viz, prom *process
	vizc      vizClient
	promc     promClient
	vizAdmin  string // http://addr of vizserver's /metrics
	promData  string // Prometheus' TSDB directory

	res result
}

// run is the whole benchmark. Whether it succeeds, fails or is interrupted
// (ctx), it stops both scrapers and the proxies and removes its temporary
// directory before it returns.
func run(ctx context.Context, cfg config, out, log io.Writer) (err error) {
	f, err := fleet.New(cfg.Namespace, cfg.Pods, cfg.Port)
	if err != nil {
		return err
	}
	if _, err := exec.LookPath(cfg.Prometheus); err != nil {
		return fmt.Errorf("prometheus: %w (on Debian: apt-get install -y prometheus, or make deps)", err)
	}
	b := &bench{cfg: cfg, out: out, log: log, f: f, began: time.Now()}
	b.describe(ctx)
	dir, err := os.MkdirTemp("", "mesh-bench-viz-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	b.logf("building vizserver")
	vizBin := filepath.Join(dir, "vizserver")
	// Built as `make build` builds mesh-controller.
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", vizBin, "github.com/mesh-dev/mesh/bench/viz/vizserver")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build vizserver: %w\n%s", err, out)
	}

	b.logf("starting %d proxies on 127.0.1.1-%s, port %d", cfg.Pods, f.Pods[len(f.Pods)-1].IP, cfg.Port)
	ps, err := startProxies(ctx, f)
	if err != nil {
		return err
	}
	defer ps.close()
	stopTraffic := ps.simulate(ctx, cfg.RPS, cfg.Seed)
	defer stopTraffic()

	// Before they start: startScrapers may fail after starting one.
	defer func() { err = errors.Join(err, b.stopScrapers(err != nil)) }()
	if err := b.startScrapers(ctx, dir, vizBin); err != nil {
		return err
	}
	if err := b.measure(ctx); err != nil {
		return err
	}
	b.logf("stopping the traffic; waiting for both to scrape every proxy since")
	stopTraffic()
	if err := b.compare(ctx, ps); err != nil {
		return err
	}
	// The report comes after a clean stop: a scraper that had died
	// would not have been measured to the end.
	if err := b.stopScrapers(false); err != nil {
		return err
	}
	b.res.loadAfter = loadAvg()
	return b.publish()
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%6.1fs  %s\n", time.Since(b.began).Seconds(), fmt.Sprintf(format, args...))
}

// startScrapers starts vizserver and Prometheus, both scraping the fleet
// every cfg.Interval, and waits until both are ready.
func (b *bench) startScrapers(ctx context.Context, dir, vizBin string) error {
	addrs, err := freeAddrs(3)
	if err != nil {
		return err
	}
	b.vizc = vizClient{base: "http://" + addrs[0], http: &http.Client{Timeout: 10 * time.Second}}
	b.vizAdmin = "http://" + addrs[1]
	b.promc = promClient{base: "http://" + addrs[2], http: &http.Client{Timeout: 30 * time.Second}}
	b.promData = filepath.Join(dir, "prometheus-data")
	promCfg := filepath.Join(dir, "prometheus.yml")
	if err := writePromConfig(promCfg, b.f, b.cfg.Interval); err != nil {
		return err
	}

	b.logf("starting vizserver and prometheus")
	t0 := time.Now()
	b.viz, err = startProcess("vizserver", filepath.Join(dir, "vizserver.log"), vizBin,
		"--namespace="+b.cfg.Namespace,
		"--pods="+strconv.Itoa(b.cfg.Pods),
		"--port="+strconv.Itoa(b.cfg.Port),
		"--addr="+addrs[0],
		"--admin-addr="+addrs[1],
		"--interval="+b.cfg.Interval.String(),
	)
	if err != nil {
		return err
	}
	b.prom, err = startPrometheus(b.cfg.Prometheus, promCfg, b.promData, addrs[2], filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return err
	}
	if err := b.viz.waitHTTP(ctx, b.vizc.statURL(b.cfg.Namespace, "ns"), time.Minute); err != nil {
		return err
	}
	b.res.vizReady = time.Since(t0)
	if err := b.prom.waitHTTP(ctx, b.promc.base+"/-/ready", time.Minute); err != nil {
		return err
	}
	b.res.promReady = time.Since(t0)
	b.logf("vizserver ready after %v, prometheus after %v", b.res.vizReady.Round(time.Millisecond), b.res.promReady.Round(time.Millisecond))
	return nil
}

// stopScrapers stops both scrapers, printing the end of their logs when
// failed or when they did not stop cleanly. Later calls do nothing.
func (b *bench) stopScrapers(failed bool) error {
	var errs []error
	for _, p := range []*process{b.viz, b.prom} {
		if p == nil {
			continue
		}
		err := p.stop()
		if failed || err != nil {
			fmt.Fprintf(b.log, "last lines of %s's log:\n%s\n", p.name, p.logTail(15))
		}
		errs = append(errs, err)
	}
	b.viz, b.prom = nil, nil
	return errors.Join(errs...)
}

// measure lets both scrapers run for cfg.Duration, reading their usage at
// the start, every cfg.SampleEvery and at the end.
func (b *bench) measure(ctx context.Context) error {
	b.logf("measuring for %v, a reading every %v", b.cfg.Duration, b.cfg.SampleEvery)
	t0 := time.Now()
	end := time.NewTimer(b.cfg.Duration)
	defer end.Stop()
	tick := time.NewTicker(b.cfg.SampleEvery)
	defer tick.Stop()
	if err := b.sample(t0); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
			if err := b.sample(t0); err != nil {
				return err
			}
			r := b.res.readings[len(b.res.readings)-1]
			b.logf("RSS: viz %s MB, prometheus %s MB; CPU: viz %.1f s, prometheus %.1f s",
				mb(r.viz.RSS), mb(r.prom.RSS), r.viz.CPU.Seconds(), r.prom.CPU.Seconds())
		case <-end.C:
			return b.sample(t0)
		}
	}
}

// reading is both scrapers' usage at one moment of the measurement, and
// the CPU time the rest took.
type reading struct {
	at        time.Duration // since the measurement started
	viz, prom usage
	// self is the benchmark's own CPU time (the proxies and their
	// traffic), machine the time all CPUs were busy.
	self, machine time.Duration
}

// sample reads both scrapers' usage now.
func (b *bench) sample(t0 time.Time) error {
	r := reading{at: time.Since(t0)}
	var err error
	if r.self, err = procCPU(os.Getpid()); err != nil {
		return err
	}
	if r.machine, err = machineBusy(); err != nil {
		return err
	}
	if r.viz, err = b.viz.read(); err != nil {
		return fmt.Errorf("vizserver: %w", err)
	}
	if r.prom, err = b.prom.read(); err != nil {
		return fmt.Errorf("prometheus: %w", err)
	}
	b.res.readings = append(b.res.readings, r)
	return nil
}
