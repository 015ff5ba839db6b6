// Command vizserver runs controller/viz alone, in a process of its own, so
// that the viz benchmark (bench/viz) can measure its memory and CPU apart
// from everything else. Its pod cache is a fake clientset holding the pods
// of fleet.New(--namespace, --pods, --port), and it scrapes their proxies,
// which the benchmark runs on loopback, at ip:--port/metrics like the
// controller does in a cluster. It serves the viz API on --addr and its own
// metrics (the component's and the Go runtime's) and net/http/pprof's
// profiles on --admin-addr.
//
// The benchmark builds and starts it; by hand:
//
//	go run ./bench/viz/vizserver --pods 20 --addr 127.0.0.1:8085
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mesh-dev/mesh/bench/viz/fleet"
	"github.com/mesh-dev/mesh/controller/viz"
	"github.com/mesh-dev/mesh/internal/httpserver"
	"github.com/mesh-dev/mesh/internal/names"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vizserver:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vizserver:", err)
		os.Exit(1)
	}
}

// config is what the flags set.
type config struct {
	Namespace string
	Pods      int
	Port      int    // the proxies' admin port
	Addr      string // of the viz API
	AdminAddr string // of /metrics; "" serves none
	// Interval and Retention of the store; 0 means viz's defaults.
	Interval, Retention time.Duration
}

func parseFlags(args []string) (config, error) {
	cfg := config{Namespace: "bench-viz", Pods: 200, Port: names.AdminPort, Addr: "127.0.0.1:8085"}
	fs := pflag.NewFlagSet("vizserver", pflag.ContinueOnError)
	fs.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "namespace of the pods")
	fs.IntVar(&cfg.Pods, "pods", cfg.Pods, "meshed pods in the pod cache")
	fs.IntVar(&cfg.Port, "port", cfg.Port, "the proxies' admin port, scraped at /metrics")
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "address of the viz API")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", cfg.AdminAddr, "address of /metrics; empty serves none")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "scrape interval; 0 means viz's default")
	fs.DurationVar(&cfg.Retention, "retention", cfg.Retention, "store retention; 0 means viz's default")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return cfg, nil
}

// run serves the viz API over the fleet's pods until ctx is done.
func run(ctx context.Context, cfg config) error {
	f, err := fleet.New(cfg.Namespace, cfg.Pods, cfg.Port)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// The proxies started long before: their counts up to the first
	// scrape are history, as in a cluster the controller joins. The simple
	// fake serves lists and watches from a plain tracker, like an API
	// server would; NewClientset's field-managed tracker also builds a
	// converter of every API type, about 20 MB of heap that no controller
	// has and that would be counted as viz's.
	factory := informers.NewSharedInformerFactory(fake.NewSimpleClientset(f.Objects(time.Now().Add(-time.Hour))...), 0)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	v, err := viz.New(viz.Config{
		Addr:       cfg.Addr,
		Informers:  factory,
		Interval:   cfg.Interval,
		Retention:  cfg.Retention,
		Registerer: reg,
		Log:        log,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory.Start(ctx.Done())
	defer factory.Shutdown() // after cancel: waits for the informers

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return v.Run(ctx) })
	if cfg.AdminAddr != "" {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", cfg.AdminAddr)
		if err != nil {
			cancel()
			return errors.Join(fmt.Errorf("admin: %w", err), g.Wait())
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		// To see where viz's CPU and memory go while the benchmark runs.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			return httpserver.Run(ctx, srv, func() error { return srv.Serve(ln) }, 2*time.Second)
		})
	}
	return g.Wait()
}
