// Package cli is the `mesh` command: install, check, inject, uninstall and
// version. Each subcommand lives in its own file as a newXCmd(*Options)
// factory; Options holds what they share, and nothing is package-global.
package cli

import (
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/version"
)

// Options are the settings every command shares: which cluster to talk to,
// where the control plane lives, and where to read and write.
type Options struct {
	// Kubeconfig is the kubeconfig file; empty means $KUBECONFIG, then
	// ~/.kube/config, the way kubectl finds it.
	Kubeconfig string
	// Context is the kubeconfig context; empty means the current one.
	Context string
	// ControlPlaneNamespace is the namespace the control plane is (to be)
	// installed in.
	ControlPlaneNamespace string

	In  io.Reader
	Out io.Writer
	Err io.Writer

	// Now is the clock certificates are made and checked with; nil means
	// time.Now.
	Now func() time.Time
}

// NewOptions returns Options with the defaults of every flag, reading from
// in and writing results to out and diagnostics to errOut.
func NewOptions(in io.Reader, out, errOut io.Writer) *Options {
	return &Options{
		ControlPlaneNamespace: manifests.DefaultNamespace,
		In:                    in,
		Out:                   out,
		Err:                   errOut,
	}
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// NewRootCmd returns the `mesh` command with every subcommand. Its flags
// write into o.
func NewRootCmd(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mesh",
		Short: "Install and operate the mesh service mesh",
		Long: "mesh installs the control plane into a Kubernetes cluster, checks that it works,\n" +
			"and adds the sidecar proxy to workloads. Commands that talk to a cluster use the\n" +
			"same kubeconfig as kubectl.",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.SetIn(o.In)
	cmd.SetOut(o.Out)
	cmd.SetErr(o.Err)
	f := cmd.PersistentFlags()
	f.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&o.Context, "context", o.Context, "kubeconfig context to use (default: the current context)")
	f.StringVar(&o.ControlPlaneNamespace, "control-plane-namespace", o.ControlPlaneNamespace, "namespace of the mesh control plane")

	cmd.AddCommand(
		newInstallCmd(o),
		newUninstallCmd(o),
		newCheckCmd(o),
		newInjectCmd(o),
		newIdentityCmd(o),
		newAuthzCmd(o),
		newDiagnosticsCmd(o),
		newVizCmd(o),
		newVersionCmd(o),
	)
	return cmd
}
