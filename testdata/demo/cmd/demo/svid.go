package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// newSVIDCmd is what any SPIFFE-aware application does with no
// configuration: go-spiffe's Workload API client finds the socket from
// SPIFFE_ENDPOINT_SOCKET (which the mesh's injector sets) and fetches the
// workload's X.509-SVID from its mesh-proxy.
func newSVIDCmd(o *options) *cobra.Command {
	timeout := 30 * time.Second
	cmd := &cobra.Command{
		Use:   "svid",
		Short: "Fetch this workload's X.509-SVID from the SPIFFE Workload API and print it",
		Long: "svid fetches the workload's X.509-SVID with go-spiffe's workloadapi client, using\n" +
			"SPIFFE_ENDPOINT_SOCKET, and prints its SPIFFE ID, expiry and the trust domain's\n" +
			"bundle size, then exits 0; non-zero when none arrives within --timeout.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			ctxs, err := workloadapi.FetchX509Context(ctx)
			if err != nil {
				return fmt.Errorf("workload API: %w", err)
			}
			svid := ctxs.DefaultSVID()
			bundle, err := ctxs.Bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
			if err != nil {
				return fmt.Errorf("workload API: no bundle for %s: %w", svid.ID.TrustDomain(), err)
			}
			fmt.Fprintf(o.stdout, "spiffe_id=%s not_after=%s bundle_authorities=%d\n",
				svid.ID, svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339), len(bundle.X509Authorities()))
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "how long to wait for the SVID")
	return cmd
}
