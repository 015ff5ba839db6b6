// Command images writes one image tarball per image under --out, each an
// OCI image layout archive holding an image index with a variant per
// architecture (--arches, amd64 and arm64 by default), importable with
// `ctr -n k8s.io images import`:
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
	"runtime"
	"strings"
	"syscall"

	"github.com/mesh-dev/mesh/install/image"
)

func main() {
	o := image.Options{Log: os.Stdout}
	flag.StringVar(&o.OutDir, "out", "build/images", "directory receiving <image>.tar files")
	flag.StringVar(&o.Version, "version", "", "tag of the project's images; empty means the VERSION file")
	flag.StringVar(&o.LDFlags, "ldflags", "", "-ldflags for the project's binaries (default -s -w)")
	flag.StringVar(&o.CacheDir, "cache-dir", image.DefaultCacheDir, "directory caching the CoreDNS and Jaeger binaries and Debian's packages for other architectures")
	arches := flag.String("arches", strings.Join(image.DefaultArches, ","), "comma-separated GOARCHes: one variant of every image each")
	jaegerArches := flag.String("jaeger-arches", runtime.GOARCH, "comma-separated GOARCHes of the Jaeger image (minutes of build each, once per machine)")
	flag.Parse()
	o.Arches = strings.Split(*arches, ",")
	o.JaegerArches = strings.Split(*jaegerArches, ",")
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
