// Command cluster brings the local single-node Kubernetes up and down:
//
//	go run ./hack/cluster up|down|status|load-images|env|prepare
//
// prepare installs the packages and builds the Kubernetes binaries a
// cluster needs, without starting one.
//
// env prints shell exports of KUBECONFIG and a PATH with the cluster's
// kubectl first: eval "$(go run ./hack/cluster env)".
//
// See install/cluster and shared/notes/local-cluster.md. Needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mesh-dev/mesh/install/cluster"
)

func main() {
	var cfg cluster.Config
	fs := flag.NewFlagSet("cluster", flag.ExitOnError)
	fs.StringVar(&cfg.StateDir, "state-dir", cluster.DefaultStateDir, "directory holding every file of the running cluster")
	fs.StringVar(&cfg.CacheDir, "cache-dir", cluster.DefaultCacheDir, "directory caching built binaries across clusters and clones")
	fs.StringVar(&cfg.Name, "name", cluster.DefaultName, "name of the node network namespace, cgroup parent and CNI network")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "how long to wait for each component to become ready")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./hack/cluster [flags] up|down|status|load-images|env|prepare\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:]) // ExitOnError
	if fs.NArg() != 1 {
		fs.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	commands := map[string]func(context.Context, cluster.Config) error{
		"up": cluster.Up, "down": cluster.Down, "status": cluster.Status, "load-images": cluster.LoadImages,
		"env": printEnv, "prepare": cluster.Prepare,
	}
	run, ok := commands[fs.Arg(0)]
	if !ok {
		fs.Usage()
		os.Exit(2)
	}
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "cluster %s: %v\n", fs.Arg(0), err)
		os.Exit(1)
	}
}

// printEnv prints the exports that point kubectl and mesh at the cluster.
func printEnv(_ context.Context, cfg cluster.Config) error {
	a, err := cluster.Inspect(cfg)
	if err != nil {
		return err
	}
	fmt.Printf("export KUBECONFIG=%s\nexport PATH=%s:$PATH\n", a.Kubeconfig, filepath.Dir(a.Kubectl))
	return nil
}
