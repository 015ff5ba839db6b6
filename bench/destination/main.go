// Command destination is the destination service's scale benchmark. It runs
// mesh-controller as a separate process against a real Kubernetes (the
// local cluster of `make cluster-up`), gives it Services whose
// EndpointSlices the benchmark writes itself (10,000 endpoints by default,
// no pods), opens Get streams as 1,000 proxies would, then changes one
// endpoint at a time and measures how long each change takes to reach every
// watcher of its Service, and what the controller's memory does meanwhile.
//
// Run it with `make bench-controller` (BENCH_WRITE=1 also rewrites the
// generated block of docs/benchmarks.md), or directly:
//
//	go run ./bench/destination --services 10 --endpoints 1000 --watchers 100 --changes 20
//
// Everything it makes lives in one namespace (--namespace) that it deletes
// at the end, on failure and on Ctrl-C, and the controller process is
// stopped likewise; nothing else in the cluster is touched.
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

	"github.com/mesh-dev/mesh/install/cluster"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Getenv)
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-destination:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-destination:", err)
		os.Exit(1)
	}
}

// config is what the flags set. Sizes are validated by validate; the
// zero value of a field is only meaningful where its comment says so.
type config struct {
	// Kubeconfig is the cluster to run against: $KUBECONFIG when set, else
	// the local cluster's.
	Kubeconfig string
	// Namespace holds every object the run makes. It must not exist, unless
	// an earlier run left it behind (it carries the benchmark's label).
	Namespace string
	// Controller is the mesh-controller binary; "" builds one into the
	// run's temporary directory.
	Controller string

	Services      int // Services without selectors
	Endpoints     int // endpoints over all Services, spread evenly
	SliceSize     int // endpoints per EndpointSlice at most
	Watchers      int // Get streams, spread evenly over the Services
	Conns         int // gRPC connections the streams share; 0: one per stream, as proxies do
	Changes       int // endpoint changes, alternately an add and a remove
	Interval      time.Duration
	Settle        time.Duration // pause before a memory snapshot
	DrainTimeout  time.Duration // how long after the last change deliveries may still arrive
	StreamTimeout time.Duration // how long the streams may take to receive their first sets

	QPS   float32 // client-side rate limit of the benchmark's API calls
	Burst int
	Seed  uint64 // of the random choice of slices and endpoints

	// Write is a markdown file whose bench-controller block is replaced (or
	// appended) with the results; "" writes none.
	Write string
	// Args is the command line, for the report.
	Args []string
}

func defaultConfig() config {
	return config{
		Kubeconfig:    cluster.DefaultKubeconfig,
		Namespace:     "bench-destination",
		Services:      100,
		Endpoints:     10000,
		SliceSize:     100, // kube-controller-manager's --max-endpoints-per-slice default
		Watchers:      1000,
		Changes:       200,
		Interval:      50 * time.Millisecond,
		Settle:        2 * time.Second,
		DrainTimeout:  10 * time.Second,
		StreamTimeout: 2 * time.Minute,
		QPS:           200,
		Burst:         400,
		Seed:          1,
	}
}

// parseFlags maps args, and KUBECONFIG from getenv, to a config.
func parseFlags(args []string, getenv func(string) string) (config, error) {
	cfg := defaultConfig()
	if kc := getenv("KUBECONFIG"); kc != "" {
		cfg.Kubeconfig = kc
	}
	fs := pflag.NewFlagSet("bench-destination", pflag.ContinueOnError)
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", cfg.Kubeconfig, "kubeconfig of the cluster to run against")
	fs.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "namespace the run creates, fills and deletes")
	fs.StringVar(&cfg.Controller, "controller", cfg.Controller, "mesh-controller binary; empty builds one")
	fs.IntVar(&cfg.Services, "services", cfg.Services, "Services, each with its own EndpointSlices")
	fs.IntVar(&cfg.Endpoints, "endpoints", cfg.Endpoints, "endpoints in total, spread evenly over the Services")
	fs.IntVar(&cfg.SliceSize, "slice-endpoints", cfg.SliceSize, "endpoints per EndpointSlice at most (2-1000)")
	fs.IntVar(&cfg.Watchers, "watchers", cfg.Watchers, "Get streams, spread evenly over the Services")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "gRPC connections the streams share; 0 means one per stream")
	fs.IntVar(&cfg.Changes, "changes", cfg.Changes, "endpoint changes, alternately adding and removing one")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "time between the starts of two changes")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "pause before each memory snapshot")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "how long after the last change to wait for its deliveries")
	fs.DurationVar(&cfg.StreamTimeout, "stream-timeout", cfg.StreamTimeout, "how long the streams may take to receive their first sets")
	fs.Float32Var(&cfg.QPS, "qps", cfg.QPS, "client-side QPS limit of the benchmark's API calls")
	fs.IntVar(&cfg.Burst, "burst", cfg.Burst, "client-side burst of the benchmark's API calls")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the random choice of slices and endpoints")
	fs.StringVar(&cfg.Write, "write", cfg.Write, "markdown file whose bench-controller block to rewrite with the results")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	cfg.Args = args
	return cfg, cfg.validate()
}

// maxAddrs is how many endpoint addresses the run can hand out, from
// 10.200.0.0/14 (see endpointAddr).
const maxAddrs = 1 << 18

func (c config) validate() error {
	switch {
	case c.Services < 1 || c.Watchers < c.Services:
		return fmt.Errorf("need at least one Service and one watcher per Service (--services %d, --watchers %d)", c.Services, c.Watchers)
	case c.Endpoints < 2*c.Services:
		return fmt.Errorf("need at least 2 endpoints per Service, so one can be removed (--endpoints %d)", c.Endpoints)
	case c.SliceSize < 2 || c.SliceSize > 1000:
		return fmt.Errorf("--slice-endpoints %d: want 2-1000 (the API allows 1000)", c.SliceSize)
	case c.Conns < 0 || c.Changes < 1 || c.Interval < 0:
		return errors.New("--conns and --interval must not be negative, --changes must be positive")
	case c.Endpoints+c.Changes > maxAddrs:
		return fmt.Errorf("--endpoints plus --changes must stay within %d addresses", maxAddrs)
	case c.QPS <= 0 || c.Burst < 1:
		return errors.New("--qps and --burst must be positive")
	case c.Namespace == "":
		return errors.New("--namespace must not be empty")
	}
	return nil
}

// conns is the number of gRPC connections the watchers use.
func (c config) conns() int {
	if c.Conns == 0 || c.Conns > c.Watchers {
		return c.Watchers
	}
	return c.Conns
}
