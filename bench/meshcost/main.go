// Command meshcost measures what the mesh costs a request on the local
// Kubernetes (the cluster of `make cluster-up`), the cluster figures of
// issue 13: the CPU the two proxies of a request spend on it, the latency
// they add, and their memory, meshed against unmeshed in one run.
//
// It imports the images of `make images`, installs the mesh when none runs
// (and uninstalls it again at the end), and deploys the same pair twice: a
// client and a server, both the demo image (`demo echo`, an HTTP/1.1
// server that answers every request with one line), once in a namespace
// annotated mesh.dev/inject=enabled and once in one that is not. The load
// leaves from inside the client pod's network namespace, so in the meshed
// pair the client's proxy intercepts it like the pod's own traffic and
// carries it over mesh TLS to the server's proxy; in the unmeshed pair it
// goes straight to the server. Both pairs get their load at the Service's
// ClusterIP, over HTTP/1.1 keep-alive connections.
//
// The run:
//
//  1. idle (--idle): no load; each proxy's process_cpu_seconds_total and
//     process_resident_memory_bytes are read from its /metrics, through the
//     API server's pod proxy, every --slice: the idle CPU (kubelet probes,
//     control-plane streams, the runtime's own wake-ups) and the idle RSS.
//  2. for each of --rates: the two pairs take turns of --slice at that
//     fixed rate, the unmeshed pair first, for --warmup and then for
//     --duration each, so that what else the shared machine does meanwhile
//     falls on both pairs alike. The load is open loop: request i is due at
//     its time whatever happened before, and its latency runs from that due
//     time to the end of its answer, so a stall counts in every request it
//     delayed (coordinated omission corrected). The proxies are read at the
//     start and end of each of the meshed pair's measured turns; CPU per
//     request is the CPU they spent in those turns over the requests sent
//     in them.
//
// The goals (issue 13): the two proxies together under 0.2 ms of CPU per
// request at 500 RPS, under 1 ms added to p99 at 200 RPS, each proxy under
// 10 MB RSS idle and 20 MB at 500 RPS; done when they are under 0.4 ms and
// 20 MB. The report is a markdown table on stdout; --write replaces the
// bench-mesh block of a file such as docs/benchmarks.md with it.
//
// It needs root (it enters a pod's network namespace and imports images)
// and the local cluster, which the end-to-end suite shares: run it as
//
//	sudo flock /tmp/mesh-e2e.lock make bench-mesh
//
// or directly, after `make images build`:
//
//	go run ./bench/meshcost --mesh bin/mesh --duration 30s
//
// Ctrl-C stops the load and removes what the run made.
package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"slices"
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
		fmt.Fprintln(os.Stderr, "bench-mesh:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-mesh:", err)
		os.Exit(1)
	}
}

// config is what the flags set; validate checks it.
type config struct {
	// Mesh is the mesh CLI that installs the mesh when none runs; ""
	// builds one from this tree into the run's temporary directory.
	Mesh string
	// Namespace prefixes the run's two namespaces: Namespace+"-meshed"
	// and Namespace+"-plain". Neither may exist, unless an earlier run
	// left it behind (it carries the run's label).
	Namespace string
	// MeshNamespace is the control plane's namespace.
	MeshNamespace string

	// Rates are the fixed rates, in requests per second, each pair is
	// measured at, in this order.
	Rates []float64
	// Slice is the length of one turn of a pair: the pairs take turns so
	// that the machine's other work falls on both alike. The proxies are
	// read at every turn's ends, and every Slice in the idle window.
	Slice time.Duration
	// Warmup is each pair's load before it is measured, at each rate
	// (connections, pools and the runtime's heap settle); Duration is
	// each pair's measured load at each rate. Both are whole turns.
	Warmup, Duration time.Duration
	// Idle is the quiet window the proxies' idle cost is measured over;
	// Settle is the wait before it, once every pod is ready.
	Idle, Settle time.Duration
	// Conns is the keep-alive connections the load shares; a request due
	// while every one is busy waits, and the wait counts in its latency.
	Conns int
	// Timeout bounds one request; one that takes longer failed.
	Timeout time.Duration
	// Keep leaves the two namespaces, and a mesh the run installed, in
	// place at the end.
	Keep bool

	// Write is a markdown file whose bench-mesh block is replaced (or
	// appended) with the results; "" writes none.
	Write string
	// Args is the command line, for the report.
	Args []string
}

func defaultConfig() config {
	return config{
		Namespace:     "mesh-cost",
		MeshNamespace: manifests.DefaultNamespace,
		Rates:         []float64{200, 500},
		Slice:         10 * time.Second,
		Warmup:        20 * time.Second,
		Duration:      time.Minute,
		Idle:          30 * time.Second,
		Settle:        15 * time.Second,
		Conns:         16,
		Timeout:       5 * time.Second,
	}
}

// parseFlags maps args to a config.
func parseFlags(args []string) (config, error) {
	cfg := defaultConfig()
	fs := pflag.NewFlagSet("bench-mesh", pflag.ContinueOnError)
	fs.StringVar(&cfg.Mesh, "mesh", cfg.Mesh, "mesh CLI to install the mesh with when none runs; empty builds one")
	fs.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "prefix of the run's two namespaces, NAME-meshed and NAME-plain, deleted at the end")
	fs.StringVar(&cfg.MeshNamespace, "mesh-namespace", cfg.MeshNamespace, "namespace of the control plane")
	fs.Float64SliceVar(&cfg.Rates, "rates", cfg.Rates, "fixed rates in requests per second, each measured meshed and unmeshed")
	fs.DurationVar(&cfg.Slice, "slice", cfg.Slice, "length of one turn: the two pairs take turns at each rate")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "each pair's load before it is measured, at each rate; whole turns")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "each pair's measured load at each rate; whole turns")
	fs.DurationVar(&cfg.Idle, "idle", cfg.Idle, "quiet window over which the proxies' idle CPU and RSS are measured")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "wait between the pods being ready and the idle window")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "keep-alive connections the load shares")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "timeout of one request; a request that takes longer failed")
	fs.BoolVar(&cfg.Keep, "keep", cfg.Keep, "leave the two namespaces (and a mesh the run installed) in place")
	fs.StringVar(&cfg.Write, "write", cfg.Write, "markdown file whose bench-mesh block to rewrite with the results")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	cfg.Args = args
	return cfg, cfg.validate()
}

// maxRate bounds --rates: one process drives the load, and a rate it
// cannot keep up with measures the generator, not the mesh.
const maxRate = 20000

func (c config) validate() error {
	if len(c.Rates) == 0 {
		return errors.New("--rates: want at least one rate")
	}
	for i, r := range c.Rates {
		if r <= 0 || r > maxRate {
			return fmt.Errorf("--rates %v: want more than 0 and at most %d", r, maxRate)
		}
		if slices.Contains(c.Rates[:i], r) {
			return fmt.Errorf("--rates: %v twice", r)
		}
		if math.Round(r*c.Slice.Seconds()) < 1 {
			return fmt.Errorf("--rates %v: a turn of --slice %v holds no request", r, c.Slice)
		}
	}
	switch {
	case c.Slice < time.Second:
		return fmt.Errorf("--slice %v: want at least 1s", c.Slice)
	case c.Duration < c.Slice || c.Duration%c.Slice != 0:
		return fmt.Errorf("--duration %v: want whole turns of --slice %v, at least one", c.Duration, c.Slice)
	case c.Warmup < 0 || c.Warmup%c.Slice != 0:
		return fmt.Errorf("--warmup %v: want whole turns of --slice %v", c.Warmup, c.Slice)
	case c.Idle < time.Second:
		return fmt.Errorf("--idle %v: want at least 1s: the idle cost is part of the report", c.Idle)
	case c.Settle < 0:
		return errors.New("--settle must not be negative")
	case c.Conns < 1:
		return errors.New("--conns must be at least 1")
	case c.Timeout <= 0:
		return errors.New("--timeout must be positive")
	case c.Namespace == "" || c.MeshNamespace == "":
		return errors.New("--namespace and --mesh-namespace must not be empty")
	}
	for _, ns := range []string{c.meshedNamespace(), c.plainNamespace()} {
		if ns == c.MeshNamespace {
			return fmt.Errorf("--namespace %s: the run's namespace %s is the control plane's, and the run deletes it", c.Namespace, ns)
		}
		if len(ns) > 63 {
			return fmt.Errorf("--namespace %s: %s is longer than the 63 characters of a namespace name", c.Namespace, ns)
		}
	}
	return nil
}

func (c config) meshedNamespace() string { return c.Namespace + "-meshed" }
func (c config) plainNamespace() string  { return c.Namespace + "-plain" }
