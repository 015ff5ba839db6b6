// Command soak measures the reliability figures of issue 12 on the local
// Kubernetes (the cluster of `make cluster-up`): a steady load through the
// meshed demo shop for a long time, then the controller killed under that
// load, then a server pod killed under it.
//
// It imports the images of `make images`, installs the mesh when none runs
// (and uninstalls it again at the end), deploys the demo shop into a
// namespace of its own (--namespace, deleted at the end) with --replicas
// pods of the --kill Deployment, and drives --rps requests per second at the
// web Service from inside the demo loadgen pod's network namespace: the
// benchmark's own sockets, opened there, are intercepted by that pod's proxy
// exactly like the loadgen's, so every request crosses the meshed path
// loadgen proxy -> web proxy -> web -> catalog (gRPC) and orders (HTTP/2)
// -> payments (TCP), each hop between two proxies over mesh TLS. Every
// request is counted, and every failure kept with its error.
//
// The run has four phases, the load never pausing between them:
//
//  1. warm-up (--warmup): connections and caches fill; failures counted.
//  2. steady (--duration): every --sample-every it reads
//     process_resident_memory_bytes and go_goroutines from the /metrics of
//     each proxy on the path, of mesh-controller and of mesh-viz (when it
//     runs as its own Deployment), through the API server's pod proxy; a
//     least-squares line through each series gives its slope per hour.
//  3. controller: every mesh-controller pod is deleted; the phase lasts until
//     a new one is Ready, plus --settle.
//  4. server: one pod of the --kill Deployment is deleted; the phase lasts
//     until it is gone and a replacement is Ready, plus --settle.
//
// The goals (issue 12): no failed request in phases 2 and 3, under 0.1 %
// in phase 4, and RSS and goroutines flat. The report is a markdown table on
// stdout; --write replaces the bench-soak block of a file such as
// docs/benchmarks.md with it.
//
// It needs root (it enters a pod's network namespace and imports images)
// and the whole local cluster: on a shared machine run it as
//
//	flock /tmp/mesh-e2e.lock make soak SOAK_FLAGS='--duration 1m --rps 200'
//
// or directly, after `make images build`:
//
//	go run ./bench/soak --mesh bin/mesh --duration 1m --rps 200
//
// Ctrl-C stops the load and removes what the run made.
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

	"github.com/mesh-dev/mesh/install/manifests"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-soak:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-soak:", err)
		os.Exit(1)
	}
}

// config is what the flags set; validate checks it.
type config struct {
	// Mesh is the mesh CLI that installs the mesh when none runs; ""
	// builds one from this tree into the run's temporary directory.
	Mesh string
	// Namespace is where the run deploys the demo shop. It must not exist,
	// unless an earlier run left it behind (it carries the run's label).
	Namespace string
	// MeshNamespace is the control plane's namespace.
	MeshNamespace string

	RPS float64 // requests per second, over the whole run
	// Concurrency bounds the requests in flight; when every one is taken
	// the schedule falls behind and catches up once they return.
	Concurrency int
	Timeout     time.Duration // of one request
	Warmup      time.Duration // load before the steady phase
	Duration    time.Duration // the steady phase
	SampleEvery time.Duration // between two readings of the components' /metrics
	// Settle is how long a kill phase lasts after the replacement pod is
	// Ready: failures of the reconnection still count in it.
	Settle time.Duration
	// Kill is the demo Deployment a pod of which phase 4 deletes; Replicas
	// is its size (at least 2, so the Service keeps an endpoint).
	Kill     string
	Replicas int
	// Keep leaves the demo namespace, and a mesh the run installed, in
	// place at the end.
	Keep bool

	// Write is a markdown file whose bench-soak block is replaced (or
	// appended) with the results; "" writes none.
	Write string
	// Args is the command line, for the report.
	Args []string
}

// servers are the demo Deployments on the path that answer requests; Kill
// must name one of them.
var servers = []string{"web", "catalog", "orders", "payments"}

func defaultConfig() config {
	return config{
		Namespace:     "mesh-soak",
		MeshNamespace: manifests.DefaultNamespace,
		RPS:           1000,
		Concurrency:   256,
		Timeout:       5 * time.Second, // the demo loadgen's
		Warmup:        30 * time.Second,
		Duration:      10 * time.Minute,
		SampleEvery:   5 * time.Second,
		Settle:        30 * time.Second,
		Kill:          "web",
		Replicas:      2,
	}
}

// parseFlags maps args to a config.
func parseFlags(args []string) (config, error) {
	cfg := defaultConfig()
	fs := pflag.NewFlagSet("bench-soak", pflag.ContinueOnError)
	fs.StringVar(&cfg.Mesh, "mesh", cfg.Mesh, "mesh CLI to install the mesh with when none runs; empty builds one")
	fs.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "namespace the run deploys the demo shop into and deletes")
	fs.StringVar(&cfg.MeshNamespace, "mesh-namespace", cfg.MeshNamespace, "namespace of the control plane")
	fs.Float64Var(&cfg.RPS, "rps", cfg.RPS, "requests per second through the demo, in every phase")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "requests in flight at most")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "timeout of one request; a request that takes longer failed")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "load before the steady phase, not sampled")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of the steady phase")
	fs.DurationVar(&cfg.SampleEvery, "sample-every", cfg.SampleEvery, "interval between readings of RSS and goroutines")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "how long a kill phase goes on after the replacement pod is Ready")
	fs.StringVar(&cfg.Kill, "kill", cfg.Kill, "demo Deployment whose pod the server phase deletes: "+strings.Join(servers, ", "))
	fs.IntVar(&cfg.Replicas, "replicas", cfg.Replicas, "pods of the --kill Deployment (at least 2)")
	fs.BoolVar(&cfg.Keep, "keep", cfg.Keep, "leave the demo namespace (and a mesh the run installed) in place")
	fs.StringVar(&cfg.Write, "write", cfg.Write, "markdown file whose bench-soak block to rewrite with the results")
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
	case c.RPS <= 0 || c.RPS > 100000:
		return fmt.Errorf("--rps %v: want more than 0 and at most 100000", c.RPS)
	case c.Concurrency < 1:
		return errors.New("--concurrency must be at least 1")
	case c.Timeout <= 0 || c.Warmup < 0 || c.Settle < 0:
		return errors.New("--timeout must be positive, --warmup and --settle not negative")
	case c.SampleEvery <= 0:
		return errors.New("--sample-every must be positive")
	case c.Duration < 3*c.SampleEvery:
		return fmt.Errorf("--duration %v: want at least three readings (3 x --sample-every %v) for a slope", c.Duration, c.SampleEvery)
	case c.Replicas < 2:
		return fmt.Errorf("--replicas %d: want at least 2, so that the Service keeps a pod while one is killed", c.Replicas)
	case c.Namespace == "" || c.MeshNamespace == "":
		return errors.New("--namespace and --mesh-namespace must not be empty")
	case c.Namespace == c.MeshNamespace:
		return errors.New("--namespace must differ from --mesh-namespace: the run deletes it")
	}
	for _, s := range servers {
		if c.Kill == s {
			return nil
		}
	}
	return fmt.Errorf("--kill %q: want one of %s", c.Kill, strings.Join(servers, ", "))
}
