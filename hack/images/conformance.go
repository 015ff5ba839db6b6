package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/mesh-dev/mesh/install/image"
)

// The conformance echo app (test/conformance/echo) lives in its own Go
// module, so that the Gateway API conformance suite and controller-runtime
// never enter the main one; install/image.BuildAll builds the main
// module's images and this file adds the echo image next to them.
const (
	// echoName is the image's name; test/conformance/mesh/manifests.yaml
	// runs image.Registry/echoName:<version> (conformance_test.go checks).
	echoName = "conformance-echo"
	// echoModule is the nested module's directory and echoPkg its main
	// package, relative to it.
	echoModule = "test/conformance"
	echoPkg    = "./echo"
	// echoBin is the server; echoClient is the command the suite execs in
	// the pod ("client URL ..."), a link to the same binary, which picks
	// its mode from argv[0].
	echoBin    = "/usr/local/bin/echo-server"
	echoClient = "/usr/local/bin/client"
)

// echoSpec describes the conformance echo image around its static binary.
// PATH is set because the suite execs "client" by name and a FROM-scratch
// image has no environment of its own.
func echoSpec(version, binary string) image.Spec {
	return image.Spec{
		Ref:        image.Ref(echoName, version),
		Files:      []image.File{{Path: echoBin, Src: binary, Mode: 0o755}},
		Symlinks:   []image.Symlink{{Path: echoClient, Target: filepath.Base(echoBin)}},
		Dirs:       []string{"/tmp"},
		Entrypoint: []string{echoBin},
		Env:        []string{"PATH=/usr/local/bin"},
		User:       image.NonRootUID,
		Labels: map[string]string{
			"org.opencontainers.image.source":  "https://github.com/mesh-dev/mesh",
			"org.opencontainers.image.version": version,
		},
	}
}

// buildEcho builds the echo binary in the nested module, once per
// architecture of o.Arches, and writes its image index to o.OutDir, as
// BuildAll does for the main module's images. o's empty fields mean what
// they mean for BuildAll.
func buildEcho(ctx context.Context, o image.Options) (image.Built, error) {
	root := o.RepoRoot
	if root == "" {
		root = "."
	}
	bin, err := os.MkdirTemp("", "mesh-conformance-echo-")
	if err != nil {
		return image.Built{}, err
	}
	defer os.RemoveAll(bin)
	if o.OutDir == "" {
		o.OutDir = filepath.Join(root, "build", "images")
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return image.Built{}, err
	}
	return image.BuildMultiArch(ctx, o, echoName, filepath.Join(root, echoModule), echoPkg, bin,
		func(version, binary, arch string) (image.Spec, error) {
			s := echoSpec(version, binary)
			s.Arch = arch
			return s, nil
		})
}
