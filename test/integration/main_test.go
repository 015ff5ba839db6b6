// Package integration is the network-namespace suite: "pods" are network
// namespaces on a bridge (test/netnstest), `mesh-proxy init` installs the
// real iptables rules in each, the real proxy runs as UID 2102, and real
// clients and servers that this project did not write talk through it:
// curl, h2load, the gRPC interop client and server, redis, nats, a
// WebSocket library, openssl-issued TLS.
//
// It needs root. `make test` sets MESH_REQUIRE_ROOT_TESTS=1, which turns
// every would-be skip into a failure.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bins holds the binaries TestMain builds: mesh-proxy from this tree, and
// the gRPC interop client and server at the version go.mod pins.
var bins struct {
	dir, proxy, interopClient, interopServer string
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		// Each test reports this itself (skip, or fail under
		// MESH_REQUIRE_ROOT_TESTS=1); there is nothing to build for it.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "mesh-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The proxy runs as UID 2102, which must be able to reach its binary.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bins.dir = dir
	bins.proxy = filepath.Join(dir, "mesh-proxy")
	bins.interopClient = filepath.Join(dir, "interop-client")
	bins.interopServer = filepath.Join(dir, "interop-server")
	builds := [][]string{
		{"-o", bins.proxy, "github.com/mesh-dev/mesh/cmd/mesh-proxy"},
		{"-o", bins.interopClient, "google.golang.org/grpc/interop/client"},
		{"-o", bins.interopServer, "google.golang.org/grpc/interop/server"},
	}
	for _, b := range builds {
		cmd := exec.Command("go", append([]string{"build"}, b...)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", b[2], err, out)
			return 1
		}
	}
	return m.Run()
}
