// Command mesh-proxy is the sidecar: with no arguments it runs the proxy,
// and "mesh-proxy init" installs the interception rules in the pod.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mesh-dev/mesh/internal/envflag"
	"github.com/mesh-dev/mesh/internal/version"
	"github.com/mesh-dev/mesh/proxy"
	"github.com/mesh-dev/mesh/proxy/iptables"
)

// envPrefix names the variables that set flags: MESH_PROXY_LOG_LEVEL etc.
const envPrefix = "MESH_PROXY_"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "mesh-proxy:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	cfg := proxy.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "mesh-proxy",
		Short: "The mesh sidecar proxy",
		Long: "mesh-proxy forwards the pod's intercepted traffic, detecting HTTP/1, HTTP/2 and gRPC,\n" +
			"and serves metrics on its admin port. Every flag can also be set by an environment\n" +
			"variable: --log-level is " + envflag.Name(envPrefix, "log-level") + ".",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return envflag.Apply(cmd.Flags(), envPrefix, os.LookupEnv)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return proxy.Run(cmd.Context(), cfg)
		},
	}
	cfg.AddFlags(cmd.Flags())
	cmd.AddCommand(newInitCmd())
	return cmd
}

func newInitCmd() *cobra.Command {
	var cfg iptables.Config
	var cleanup bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Install the iptables rules that send the pod's TCP traffic through the proxy",
		Long: "init runs once per pod, as an init container with NET_ADMIN and NET_RAW. It is\n" +
			"idempotent, and --cleanup removes every rule it installed.",
		Args: cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return envflag.Apply(cmd.Flags(), envPrefix, os.LookupEnv)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := proxy.NewLogger(proxy.DefaultConfig())
			if cleanup {
				return iptables.Cleanup(cmd.Context(), cfg, log)
			}
			return iptables.Install(cmd.Context(), cfg, log)
		},
	}
	cfg.AddFlags(cmd.Flags())
	cmd.Flags().BoolVar(&cleanup, "cleanup", false, "remove the rules instead of installing them")
	return cmd
}
