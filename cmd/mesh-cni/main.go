// Command mesh-cni is the mesh's chained CNI plugin when a container
// runtime runs it (CNI_COMMAND is set), and "mesh-cni install", the
// DaemonSet process that puts the plugin on its node, otherwise.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mesh-dev/mesh/install/cni"
	"github.com/mesh-dev/mesh/internal/version"
)

func main() {
	if os.Getenv("CNI_COMMAND") != "" {
		cni.Main(&cni.Plugin{})
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "mesh-cni:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mesh-cni",
		Short: "The mesh's chained CNI plugin and its installer",
		Long: "Run by a container runtime (CNI_COMMAND set), mesh-cni installs a meshed pod's\n" +
			"interception rules in its network namespace. `mesh-cni install` puts it on a node.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version,
	}
	cmd.AddCommand(newInstallCmd(), newReadyCmd())
	return cmd
}

// newReadyCmd is the DaemonSet's readiness probe: the image has no shell
// to test for the installer's ready file with.
func newReadyCmd() *cobra.Command {
	readyFile := cni.DefaultReadyFile
	cmd := &cobra.Command{
		Use:   "ready",
		Short: "Exit 0 once `mesh-cni install` has chained the plugin (its ready file exists)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return cni.Ready(readyFile)
		},
	}
	cmd.Flags().StringVar(&readyFile, "ready-file", readyFile, "the ready file of `mesh-cni install`")
	return cmd
}

func newInstallCmd() *cobra.Command {
	var cfg cni.InstallConfig
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Copy the plugin onto the node and chain it into the node's CNI configuration until SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Server == "" {
				server, err := cni.ServerFromEnv(os.LookupEnv)
				if err != nil {
					return err
				}
				cfg.Server = server
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			return cni.Install(cmd.Context(), cfg, log)
		},
	}
	cfg.AddFlags(cmd.Flags())
	return cmd
}
