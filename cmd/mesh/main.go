// Command mesh installs, checks and operates the mesh: see `mesh --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mesh-dev/mesh/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cli.NewRootCmd(cli.NewOptions(os.Stdin, os.Stdout, os.Stderr)).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "mesh:", err)
		os.Exit(1)
	}
}
