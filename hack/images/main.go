// Command images writes one image tarball per image under --out, each
// importable with `ctr -n k8s.io images import`:
//
//	go run ./hack/images --out build/images --version $(cat VERSION)
//
// See install/image. `make images` runs it. Besides install/image.BuildAll's
// images it writes conformance-echo.tar, the Gateway API conformance echo
// app of test/conformance (conformance.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mesh-dev/mesh/install/image"
)

func main() {
	o := image.Options{Log: os.Stdout}
	flag.StringVar(&o.OutDir, "out", "build/images", "directory receiving <image>.tar files")
	flag.StringVar(&o.Version, "version", "", "tag of the project's images; empty means the VERSION file")
	flag.StringVar(&o.LDFlags, "ldflags", "", "-ldflags for the project's binaries (default -s -w)")
	flag.StringVar(&o.CacheDir, "cache-dir", image.DefaultCacheDir, "directory caching the CoreDNS binary")
	flag.Parse()
	if o.Version == "" {
		b, err := os.ReadFile("VERSION")
		if err != nil {
			fmt.Fprintf(os.Stderr, "images: no --version and %v\n", err)
			os.Exit(2)
		}
		o.Version = strings.TrimSpace(string(b))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := image.BuildAll(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "images: %v\n", err)
		os.Exit(1)
	}
	if _, err := buildEcho(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "images: %v\n", err)
		os.Exit(1)
	}
}
