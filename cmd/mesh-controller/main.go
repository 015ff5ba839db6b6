// Command mesh-controller is the control plane: the proxy injector
// webhook, the destination, inbound policy and identity services and the
// admin server (package controller); and, as `mesh-controller viz`, the
// mesh-viz Deployment (controller.RunViz).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/mesh-dev/mesh/controller"
	"github.com/mesh-dev/mesh/internal/envflag"
	"github.com/mesh-dev/mesh/internal/version"
)

// envPrefix names the variables that set flags: MESH_CONTROLLER_LOG_LEVEL etc.
const envPrefix = "MESH_CONTROLLER_"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd(os.LookupEnv, controller.Run, controller.RunViz).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "mesh-controller:", err)
		os.Exit(1)
	}
}

// newRootCmd maps flags and the environment to a controller.Config and
// hands it to run; its viz subcommand does the same with a
// controller.VizConfig and runViz.
func newRootCmd(lookupEnv func(string) (string, bool), run func(context.Context, controller.Config) error,
	runViz func(context.Context, controller.VizConfig) error) *cobra.Command {
	cfg := controller.DefaultConfig()
	// The Downward API sets POD_NAMESPACE in the controller's pod.
	if ns, ok := lookupEnv("POD_NAMESPACE"); ok && ns != "" {
		cfg.Namespace = ns
	}
	cmd := &cobra.Command{
		Use:   "mesh-controller",
		Short: "The mesh control plane",
		Long: "mesh-controller " + version.Version + " runs the proxy injector webhook, the proxies' destination,\n" +
			"inbound policy and identity services and the admin server (/metrics, /ready, /live);\n" +
			"mesh-controller viz runs mesh-viz. Every flag can also be set by an environment variable:\n" +
			"--log-level is " + envflag.Name(envPrefix, "log-level") + ".",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return envflag.Apply(cmd.Flags(), envPrefix, lookupEnv)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			// client-go logs through klog; send it to the same place.
			klog.SetSlogLogger(controller.NewLogger(cfg.LogLevel, cfg.LogFormat, os.Stderr))
			return run(cmd.Context(), cfg)
		},
	}
	cfg.AddFlags(cmd.Flags())
	cmd.AddCommand(newVizCmd(lookupEnv, runViz))
	return cmd
}

// newVizCmd is `mesh-controller viz`: flags and the environment (the same
// MESH_CONTROLLER_ variables) to a controller.VizConfig, handed to run.
func newVizCmd(lookupEnv func(string) (string, bool), run func(context.Context, controller.VizConfig) error) *cobra.Command {
	cfg := controller.DefaultVizConfig()
	if ns, ok := lookupEnv("POD_NAMESPACE"); ok && ns != "" {
		cfg.Namespace = ns
	}
	cmd := &cobra.Command{
		Use:   "viz",
		Short: "Run mesh-viz: live stats of the proxies, and the tap relay",
		Long: "mesh-controller viz runs mesh-viz: it scrapes the proxies' metrics and serves the viz API\n" +
			"on loopback (mesh viz reaches it through a port-forward), relays tap as its own SPIFFE\n" +
			"identity to callers the tap API has authorized, and serves /metrics, /ready and /live.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return envflag.Apply(cmd.Flags(), envPrefix, lookupEnv)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			klog.SetSlogLogger(controller.NewLogger(cfg.LogLevel, cfg.LogFormat, os.Stderr))
			return run(cmd.Context(), cfg)
		},
	}
	cfg.AddFlags(cmd.Flags())
	return cmd
}
