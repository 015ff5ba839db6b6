// Command viz measures what `mesh viz`'s aggregation costs next to a
// Prometheus doing the same job, side by side in one run. It starts --pods
// fake proxies on loopback (127.0.1.1, 127.0.1.2, ...: each an HTTP server
// on --port serving /metrics from the proxy's real registry,
// proxy/metrics, with simulated traffic), then two scrapers of them, each a
// process of its own:
//
//   - controller/viz alone (bench/viz/vizserver, built into the run's
//     temporary directory), its pod cache a fake clientset holding the
//     pods, with its defaults: a scrape every 5s, 16 minutes in memory;
//   - Debian's Prometheus (--prometheus), scraping the same targets every
//     5s into a TSDB in the temporary directory, with its default retention.
//
// For --duration it samples both processes' RSS and CPU time from /proc
// every --sample-every. Then it stops the traffic, waits until both have
// scraped every proxy since, and checks that they count the same responses:
// viz's totalRequests per namespace, deployment and service against
// Prometheus' sums of mesh_proxy_http_responses_total.
//
// Run it with `make bench-viz` (BENCH_WRITE=1 also rewrites the generated
// block of docs/benchmarks.md), or directly:
//
//	go run ./bench/viz --pods 20 --duration 1m
//
// Both processes and the temporary directory are removed at the end, on
// failure and on Ctrl-C.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/mesh-dev/mesh/bench/viz/fleet"
	"github.com/mesh-dev/mesh/internal/names"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-viz:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-viz:", err)
		os.Exit(1)
	}
}

// config is what the flags set; validate checks it.
type config struct {
	Pods      int    // fake proxies, one per pod
	Namespace string // of the pods
	Port      int    // the proxies' admin port, on each pod's address
	// RPS is the requests per second each proxy counts, over its inbound
	// and outbound routes together.
	RPS float64
	// Duration is how long both scrapers run while measured, from the
	// moment both are ready.
	Duration    time.Duration
	SampleEvery time.Duration // between two readings of /proc
	// Interval is both scrapers' scrape interval.
	Interval   time.Duration
	Prometheus string // the binary
	Seed       uint64 // of the simulated traffic

	// Write is a markdown file whose bench-viz block is replaced (or
	// appended) with the results; "" writes none.
	Write string
	// Args is the command line, for the report.
	Args []string
}

func defaultConfig() config {
	return config{
		Pods:        200,
		Namespace:   "bench-viz",
		Port:        names.AdminPort,
		RPS:         20,
		Duration:    5 * time.Minute,
		SampleEvery: 10 * time.Second,
		Interval:    5 * time.Second, // viz.DefaultInterval
		Prometheus:  "/usr/bin/prometheus",
		Seed:        1,
	}
}

// parseFlags maps args to a config.
func parseFlags(args []string) (config, error) {
	cfg := defaultConfig()
	fs := pflag.NewFlagSet("bench-viz", pflag.ContinueOnError)
	fs.IntVar(&cfg.Pods, "pods", cfg.Pods, "fake meshed pods, each a proxy on its own loopback address")
	fs.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "namespace of the pods (nothing is created in a cluster)")
	fs.IntVar(&cfg.Port, "port", cfg.Port, "the proxies' admin port, on every pod address")
	fs.Float64Var(&cfg.RPS, "rps", cfg.RPS, "requests per second each proxy counts, inbound and outbound together")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long both scrapers run while measured")
	fs.DurationVar(&cfg.SampleEvery, "sample-every", cfg.SampleEvery, "interval between readings of RSS and CPU time")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "scrape interval of both viz and Prometheus")
	fs.StringVar(&cfg.Prometheus, "prometheus", cfg.Prometheus, "Prometheus binary (Debian: apt-get install -y prometheus)")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the simulated traffic")
	fs.StringVar(&cfg.Write, "write", cfg.Write, "markdown file whose bench-viz block to rewrite with the results")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	cfg.Args = args
	return cfg, cfg.validate()
}

func (c config) validate() error {
	switch {
	case c.Pods < 1 || c.Pods > fleet.MaxPods:
		return fmt.Errorf("--pods %d: want 1 to %d", c.Pods, fleet.MaxPods)
	case c.RPS <= 0:
		return errors.New("--rps must be positive")
	case c.Interval < 2*time.Second:
		return errors.New("--interval must be at least 2s, both scrapers' scrape timeout")
	case c.Duration < 2*c.Interval:
		return fmt.Errorf("--duration %s: want at least two scrape intervals", c.Duration)
	case c.SampleEvery <= 0 || c.SampleEvery > c.Duration:
		return errors.New("--sample-every must be positive and at most --duration")
	case c.Prometheus == "":
		return errors.New("--prometheus must not be empty")
	}
	return nil
}
