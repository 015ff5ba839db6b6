// Command meshpath measures the full mesh path of issue 13 side by side
// with an nginx pair doing the same job, in one run: what a request costs
// when it goes
//
//	client -> outbound mesh-proxy -> mesh TLS -> inbound mesh-proxy -> server
//
// against
//
//	client -> nginx A -> TLS 1.3 with client certificates -> nginx B -> server
//
// and against the client talking to the server directly. `make bench-proxy`
// runs it after the one-hop rows of bench/proxy.sh.
//
// The lab is three network namespaces on a bridge of their own, built the
// way the network-namespace suite builds pods: a client pod and a server
// pod, each with interception installed by `mesh-proxy init` and a real
// bin/mesh-proxy running as UID 2102, and a control-plane pod where this
// program's controller subcommand serves the real identity service
// (identity/certify) and the real destination and inbound policy services
// (controller/destination, controller/policy) over mesh TLS, the way
// mesh-controller does, from a test CA made for the run and a fake
// Kubernetes API (client-go's fake clientset) that knows the two pods. The
// proxies get their certificates through their normal path (a token, a
// CSR, the identity service), and the client proxy learns from the
// destination service that the server's pod IP is meshed with the server
// proxy's SPIFFE ID, so it speaks mesh TLS to it. The run fails unless the
// proxies' own metrics show every measured request with those identities.
//
// The nginx pair lives in the same two pods: nginx A in the client pod on
// loopback, nginx B in the server pod on a port the interception skips,
// both with certificates of the same CA. The server is one nginx worker
// returning 2 bytes; the direct rows reach it on a skipped port.
//
// Loads: the most requests per second (wrk, HTTP/1.1 keep-alive, as the hop
// rows), and fixed rates (1,000 and 5,000 RPS) from this program's load
// subcommand, an open-loop generator that measures every request from the
// moment it was due to be sent, so a stall of the path shows in the
// latency of every request it held up (coordinated omission corrected).
//
// Usage (root: network namespaces, iptables):
//
//	go run ./bench/meshpath --proxy bin/mesh-proxy [--write docs/benchmarks.md]
//
// Ctrl-C stops the run and removes what it made: processes, namespaces
// (their interfaces and iptables rules with them) and the temporary
// directory.
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
	// The lab runs two more modes of this binary inside its pods.
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "controller":
			os.Exit(subcommand("meshpath controller", os.Args[2:], controllerMain))
		case "load":
			os.Exit(subcommand("meshpath load", os.Args[2:], loadMain))
		}
	}
	os.Exit(subcommand("meshpath", os.Args[1:], benchMain))
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
