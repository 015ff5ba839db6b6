// Command routes measures what outbound route tables cost the proxy per
// request (issue 14, docs/traffic.md 4.3): the CPU time the real
// mesh-proxy uses per request to a Service with 100 HTTPRoutes of 10
// rules each, against the same to a Service with none, side by side in
// one run, and the ratio of the two. `make bench-routes` runs it.
//
// The lab is one network namespace: on its loopback, the application
// (nginx), a destination service (this program's controller subcommand,
// serving route tables from api/destination/v1 built for the run), the
// proxy as UID 2102, and the client, whose connections to a Service's
// cluster IP a nat REDIRECT sends to the proxy's outbound listener. Three
// Services have the same endpoint and differ by their table: none, 100×10
// rules by path prefix, and 100×10 rules on the root prefix told apart by
// a header. Every row sends the same request, which the last rule of both
// tables matches; the rows run in turn, round after round, and every row
// is checked against the proxy's metrics.
//
// Usage (root: a network namespace, a nat rule in it, a server as UID
// 2102):
//
//	go run ./bench/routes --proxy bin/mesh-proxy [--rounds 8] [--duration 5s] [--write docs/benchmarks.md]
//
// Ctrl-C stops the run and removes what it made: processes, the namespace
// (its nat rule with it) and the temporary directory.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

func main() {
	// The lab runs this binary as its destination service too.
	if len(os.Args) > 1 && os.Args[1] == "controller" {
		os.Exit(subcommand("routes controller", os.Args[2:], controllerMain))
	}
	os.Exit(subcommand("routes", os.Args[1:], benchMain))
}

// subcommand runs one mode with a context that ends on Ctrl-C or SIGTERM,
// and returns the exit code: 2 for bad flags, 1 for a failure.
func subcommand(name string, args []string, run func(context.Context, []string) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, args)
	var usage usageError
	switch {
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	case err != nil:
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}

// usageError is a bad command line.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// benchMain parses the benchmark's flags and runs it.
func benchMain(ctx context.Context, args []string) error {
	cfg, err := parseBenchFlags(args)
	if err != nil {
		return err
	}
	return runBench(ctx, cfg, os.Stdout, os.Stderr)
}
