// Command echo is the conformance echo app: the server the Gateway API
// conformance suite's mesh tests send traffic to, and, run as `client`
// (a symlink in the image, or the first argument), the client the suite
// execs inside an echo pod. See test/conformance/mesh/manifests.yaml.
//
//	echo --port=8080 --grpc=7070 --tcp=9090 --port=8443 --tls=8443
//	client http://echo/path --method=GET -H name:value --count=10
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/mesh-dev/mesh/test/conformance/echo/client"
	"github.com/mesh-dev/mesh/test/conformance/echo/server"
)

func main() {
	args := os.Args[1:]
	isClient := filepath.Base(os.Args[0]) == "client"
	if !isClient && len(args) > 0 && args[0] == "client" {
		isClient, args = true, args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if isClient {
		err = runClient(ctx, args)
	} else {
		err = runServer(ctx, args)
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func runClient(ctx context.Context, args []string) error {
	cfg, err := client.ParseArgs(args, os.Stderr)
	if err != nil {
		return err
	}
	return client.Run(ctx, cfg, os.Stdout)
}

func runServer(ctx context.Context, args []string) error {
	cfg, err := server.ParseFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	cfg.Log = os.Stdout
	s, err := server.New(cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}
