// Command demo is the demo shop of testdata/demo in one static binary; each
// subcommand is one of its services (see the package doc of testdata/demo):
//
//	demo web       HTTP/1.1 front end on :8080
//	demo catalog   gRPC (h2c) on :9090
//	demo orders    HTTP/2 cleartext on :8081
//	demo payments  line protocol over TCP on :7070
//	demo echo      HTTP/1.1 and h2c on :8080, answers naming the pod
//	demo loadgen   traffic against web:8080 (or echo)
//
// Every server also serves /ready, /live and /fault (GET, and PUT to change
// the fault while it runs) on :9900. Every flag can be set
// from the environment too: --fail-rate is DEMO_FAIL_RATE; a flag given on
// the command line wins.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mesh-dev/mesh/internal/envflag"
	"github.com/mesh-dev/mesh/internal/version"
)

// envPrefix names the variables that set flags: DEMO_FAIL_RATE etc.
const envPrefix = "DEMO_"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := &options{lookupEnv: os.LookupEnv, stdout: os.Stdout, stderr: os.Stderr, run: runComponent}
	if err := newRootCmd(o).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// options is what the commands share: the flags of every subcommand and the
// process's environment, which tests replace.
type options struct {
	lookupEnv func(string) (string, bool)
	stdout    io.Writer // loadgen's summaries
	stderr    io.Writer // logs
	// run runs one component; main uses runComponent, tests record it.
	run func(ctx context.Context, o *options, c component) error

	AdminAddr     string // "" serves no probes
	ShutdownGrace time.Duration
	LogLevel      slog.Level
	LogFormat     string
}

func newRootCmd(o *options) *cobra.Command {
	o.AdminAddr, o.ShutdownGrace, o.LogLevel, o.LogFormat = ":9900", 10*time.Second, slog.LevelInfo, "text"
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "The mesh demo shop: web, catalog, orders, payments, an echo backend and a load generator",
		Long: "demo runs one service of the mesh demo shop. Every flag can also be set by an\n" +
			"environment variable: --fail-rate is " + envflag.Name(envPrefix, "fail-rate") + ".",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version,
		// A container image has no shell to complete in.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := envflag.Apply(cmd.Flags(), envPrefix, o.lookupEnv); err != nil {
				return err
			}
			if o.LogFormat != "json" && o.LogFormat != "text" {
				return fmt.Errorf("log-format must be json or text, got %q", o.LogFormat)
			}
			if o.ShutdownGrace < 0 {
				return fmt.Errorf("shutdown-grace must not be negative, got %s", o.ShutdownGrace)
			}
			return nil
		},
	}
	fs := cmd.PersistentFlags()
	fs.StringVar(&o.AdminAddr, "admin-addr", o.AdminAddr, `address of the probe server (/ready, /live); "" for none`)
	fs.DurationVar(&o.ShutdownGrace, "shutdown-grace", o.ShutdownGrace, "time requests in flight may take to finish after SIGTERM")
	fs.TextVar(&o.LogLevel, "log-level", o.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "log format: text (logfmt) or json")
	cmd.AddCommand(newWebCmd(o), newCatalogCmd(o), newOrdersCmd(o), newPaymentsCmd(o), newEchoCmd(o), newLoadgenCmd(o), newSVIDCmd(o))
	return cmd
}

// logger returns the log of one component, on stderr.
func (o *options) logger(component string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: o.LogLevel}
	var h slog.Handler = slog.NewTextHandler(o.stderr, opts)
	if o.LogFormat == "json" {
		h = slog.NewJSONHandler(o.stderr, opts)
	}
	return slog.New(h).With("component", component)
}
