package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/version"
)

// versionInfo is what `mesh version -o json|yaml` prints.
type versionInfo struct {
	Client string `json:"clientVersion"`
	Server string `json:"serverVersion,omitempty"`
	// ServerUnavailable says why there is no server version.
	ServerUnavailable string `json:"serverUnavailable,omitempty"`
}

func newVersionCmd(o *Options) *cobra.Command {
	var (
		clientOnly bool
		output     string
	)
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client and control-plane versions",
		Long: "version prints the version of this mesh binary and of the control plane, read from\n" +
			"the controller Deployment's app.kubernetes.io/version label.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" {
				if err := checkOutput(output, "json", "yaml"); err != nil {
					return err
				}
			}
			info := versionInfo{Client: version.Version}
			if !clientOnly {
				info.Server, info.ServerUnavailable = serverVersion(cmd.Context(), o)
			}
			if output != "" {
				return writeStructured(o.Out, info, output)
			}
			fmt.Fprintf(o.Out, "Client version: %s\n", info.Client)
			switch {
			case clientOnly:
			case info.Server != "":
				fmt.Fprintf(o.Out, "Server version: %s\n", info.Server)
			default:
				fmt.Fprintf(o.Out, "Server version: unavailable (%s)\n", info.ServerUnavailable)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print the client version only; needs no cluster")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml (default: text)")
	return cmd
}

// serverVersion reads the control plane's version, or says why it cannot.
func serverVersion(ctx context.Context, o *Options) (ver, unavailable string) {
	k, err := o.kube()
	if err != nil {
		return "", err.Error()
	}
	ns := o.ControlPlaneNamespace
	d, err := k.client.AppsV1().Deployments(ns).Get(ctx, manifests.ControllerName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", fmt.Sprintf("no deployment %s in namespace %s: run mesh install", manifests.ControllerName, ns)
	case err != nil:
		return "", firstLine(err.Error())
	}
	if v := d.Labels[manifests.VersionLabel]; v != "" {
		return v, ""
	}
	return "", fmt.Sprintf("deployment %s/%s has no %s label", ns, manifests.ControllerName, manifests.VersionLabel)
}
