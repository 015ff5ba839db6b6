package main

import (
	"context"
	"net"

	"github.com/spf13/cobra"

	"github.com/mesh-dev/mesh/testdata/demo/catalog"
	"github.com/mesh-dev/mesh/testdata/demo/echo"
	"github.com/mesh-dev/mesh/testdata/demo/fault"
	"github.com/mesh-dev/mesh/testdata/demo/loadgen"
	"github.com/mesh-dev/mesh/testdata/demo/orders"
	"github.com/mesh-dev/mesh/testdata/demo/payments"
	"github.com/mesh-dev/mesh/testdata/demo/web"
)

// component is one service, configured and ready to run.
type component struct {
	name   string
	config any    // the package's Config, for tests
	addr   string // the main listener; "" for loadgen, which listens on nothing
	// faults is the switch the component reads its fault from, served on
	// the admin port's /fault; nil for loadgen, which injects none.
	faults *fault.Switch
	// serve runs the component on ln (nil for loadgen) until ctx ends.
	serve func(ctx context.Context, ln net.Listener) error
}

func newWebCmd(o *options) *cobra.Command {
	cfg := web.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "web",
		Short: "Serve the shop's HTML front end over HTTP/1.1 (default :8080)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Fault.Validate(); err != nil {
				return err
			}
			cfg.FaultSwitch = fault.NewSwitch(cfg.Fault)
			cfg.Logger, cfg.ShutdownGrace = o.logger("web"), o.ShutdownGrace
			return o.run(cmd.Context(), o, component{name: "web", config: cfg, addr: cfg.Addr, faults: cfg.FaultSwitch,
				serve: func(ctx context.Context, ln net.Listener) error { return web.Serve(ctx, ln, cfg) }})
		},
	}
	cfg.AddFlags(cmd.Flags())
	return cmd
}

func newCatalogCmd(o *options) *cobra.Command {
	cfg := catalog.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "catalog",
		Short: "Serve the product catalog over gRPC, h2c (default :9090)",
		Long: "catalog serves mesh.demo.catalog.v1.Catalog over gRPC on h2c. Every answer carries the\n" +
			"header x-served-by: NAME, NAME being $POD_NAME or the hostname.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Fault.Validate(); err != nil {
				return err
			}
			cfg.Name, _ = o.lookupEnv("POD_NAME") // "" means the hostname
			cfg.FaultSwitch = fault.NewSwitch(cfg.Fault)
			cfg.Logger, cfg.ShutdownGrace = o.logger("catalog"), o.ShutdownGrace
			return o.run(cmd.Context(), o, component{name: "catalog", config: cfg, addr: cfg.Addr, faults: cfg.FaultSwitch,
				serve: func(ctx context.Context, ln net.Listener) error { return catalog.Serve(ctx, ln, cfg) }})
		},
	}
	cfg.AddFlags(cmd.Flags())
	return cmd
}

func newOrdersCmd(o *options) *cobra.Command {
	cfg := orders.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "orders",
		Short: "Serve the orders JSON API over HTTP/2 cleartext (default :8081)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Fault.Validate(); err != nil {
				return err
			}
			cfg.FaultSwitch = fault.NewSwitch(cfg.Fault)
			cfg.Logger, cfg.ShutdownGrace = o.logger("orders"), o.ShutdownGrace
			return o.run(cmd.Context(), o, component{name: "orders", config: cfg, addr: cfg.Addr, faults: cfg.FaultSwitch,
				serve: func(ctx context.Context, ln net.Listener) error { return orders.Serve(ctx, ln, cfg) }})
		},
	}
	cfg.AddFlags(cmd.Flags())
	return cmd
}

func newPaymentsCmd(o *options) *cobra.Command {
	cfg := payments.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "payments",
		Short: "Serve payments over a line protocol on plain TCP (default :7070)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Fault.Validate(); err != nil {
				return err
			}
			cfg.FaultSwitch = fault.NewSwitch(cfg.Fault)
			cfg.Logger, cfg.ShutdownGrace = o.logger("payments"), o.ShutdownGrace
			return o.run(cmd.Context(), o, component{name: "payments", config: cfg, addr: cfg.Addr, faults: cfg.FaultSwitch,
				serve: func(ctx context.Context, ln net.Listener) error { return payments.Serve(ctx, ln, cfg) }})
		},
	}
	cfg.AddFlags(cmd.Flags())
	return cmd
}

func newEchoCmd(o *options) *cobra.Command {
	cfg := echo.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "echo",
		Short: "Answer every request with the pod's name, HTTP/1.1 and h2c (default :8080)",
		Long: "echo answers every request with 200 and \"echo from NAME\", NAME being $POD_NAME or\n" +
			"the hostname, over HTTP/1.1 and h2c (prior knowledge) on one port. A request failed by\n" +
			"--fail-rate gets --fail-status. PUT /fault on the admin port changes the fault at runtime.\n" +
			"--exit-on-term makes it stop at once on SIGTERM, cutting requests in flight, like an\n" +
			"application with no graceful shutdown.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Fault.Validate(); err != nil {
				return err
			}
			cfg.Name, _ = o.lookupEnv("POD_NAME") // "" means the hostname
			cfg.FaultSwitch = fault.NewSwitch(cfg.Fault)
			cfg.Logger, cfg.ShutdownGrace = o.logger("echo"), o.ShutdownGrace
			return o.run(cmd.Context(), o, component{name: "echo", config: cfg, addr: cfg.Addr, faults: cfg.FaultSwitch,
				serve: func(ctx context.Context, ln net.Listener) error { return echo.Serve(ctx, ln, cfg) }})
		},
	}
	cfg.AddFlags(cmd.Flags())
	return cmd
}

func newLoadgenCmd(o *options) *cobra.Command {
	cfg := loadgen.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "loadgen",
		Short: "Send traffic to the web front end, or any HTTP server, and print summaries",
		Long: "loadgen alternates GET --path and POST /buy?product=ID against --target and prints a\n" +
			"logfmt summary line to stdout every --interval and at the end. A page that lists no\n" +
			"products (echo's, say) gets only GETs; 2xx is a success. With --requests it exits\n" +
			"when they are done, non-zero if more than --max-failures failed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Logger = o.logger("loadgen")
			return o.run(cmd.Context(), o, component{name: "loadgen", config: cfg,
				serve: func(ctx context.Context, _ net.Listener) error {
					_, err := loadgen.Run(ctx, cfg, o.stdout)
					return err
				}})
		},
	}
	cfg.AddFlags(cmd.Flags())
	return cmd
}
