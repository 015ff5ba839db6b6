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
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
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
	cfg, err := parseServerFlags(args, os.Stderr)
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

// parseServerFlags maps the flags of the suite's manifests to a Config.
// SERVICE_VERSION and CLUSTER in the environment are the defaults of
// --version and --cluster.
func parseServerFlags(args []string, stderr io.Writer) (server.Config, error) {
	var cfg server.Config
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ports := func(name, usage string, dst *[]int) {
		fs.Func(name, usage+" (repeatable)", func(s string) error {
			p, err := strconv.Atoi(s)
			if err != nil || p < 0 || p > 65535 {
				return fmt.Errorf("%q is not a port", s)
			}
			*dst = append(*dst, p)
			return nil
		})
	}
	ports("port", "HTTP/1.1 and h2c `port`", &cfg.HTTPPorts)
	ports("grpc", "gRPC `port`", &cfg.GRPCPorts)
	ports("tcp", "TCP echo `port`", &cfg.TCPPorts)
	ports("tls", "a --port that serves TLS instead", &cfg.TLSPorts)
	fs.StringVar(&cfg.CertFile, "crt", "", "PEM certificate `file` of the TLS ports; none means self-signed")
	fs.StringVar(&cfg.KeyFile, "key", "", "PEM key `file` of the TLS ports")
	fs.StringVar(&cfg.Version, "version", os.Getenv("SERVICE_VERSION"), "reported as ServiceVersion")
	fs.StringVar(&cfg.Cluster, "cluster", os.Getenv("CLUSTER"), "reported as Cluster")
	if err := fs.Parse(args); err != nil {
		return server.Config{}, err
	}
	if fs.NArg() > 0 {
		return server.Config{}, fmt.Errorf("echo: unexpected arguments %q", fs.Args())
	}
	return cfg, nil
}
