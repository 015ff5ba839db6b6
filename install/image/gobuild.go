package image

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// FindGo returns the go command to build with: $GO, then go on PATH, then
// the toolchain's usual place. `sudo` often drops /usr/local/go/bin from
// PATH, hence the fallback.
func FindGo() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	if g, err := exec.LookPath("go"); err == nil {
		return g
	}
	return "/usr/local/go/bin/go"
}

// GoBuild builds static Go binaries (CGO_ENABLED=0) that FROM-scratch
// images can run. The zero value builds in the working directory with the
// go command FindGo returns.
type GoBuild struct {
	// Go is the go command; empty means FindGo().
	Go string
	// Dir is the module directory to build in; empty means the working
	// directory.
	Dir string
	// LDFlags are passed to -ldflags; empty means "-s -w".
	LDFlags string
}

// Tags are the build tags of the project's own binaries (the Makefile's
// GOTAGS says the same): grpcnotrace leaves gRPC's /debug/requests pages,
// which nothing serves, and the x/net/trace and html/template they pull in
// out of the binaries: 3 MB less of mesh-proxy to map and keep resident.
const Tags = "grpcnotrace"

// Build compiles pkg into the file out.
func (b GoBuild) Build(ctx context.Context, out, pkg string) error {
	return b.run(ctx, nil, "build", "-trimpath", "-tags", Tags, "-ldflags", b.ldflags(), "-o", out, pkg)
}

// BuildInto compiles several main packages into the directory dir, one
// binary each, in a single go command so they build in parallel.
func (b GoBuild) BuildInto(ctx context.Context, dir string, pkgs ...string) error {
	args := append([]string{"build", "-trimpath", "-tags", Tags, "-ldflags", b.ldflags(), "-o", dir + "/"}, pkgs...)
	return b.run(ctx, nil, args...)
}

// Install runs `go install mod@version` with GOBIN set to dir: the way to
// build a command from the module proxy outside this module.
func (b GoBuild) Install(ctx context.Context, dir, modVersion string) error {
	return b.run(ctx, []string{"GOBIN=" + dir}, "install", "-trimpath", "-ldflags", b.ldflags(), modVersion)
}

func (b GoBuild) ldflags() string {
	if b.LDFlags == "" {
		return "-s -w"
	}
	return b.LDFlags
}

func (b GoBuild) run(ctx context.Context, env []string, args ...string) error {
	goCmd := b.Go
	if goCmd == "" {
		goCmd = FindGo()
	}
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = b.Dir
	// GOWORK=off: a go.work above the checkout must not change what is built.
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off"), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", goCmd, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CachedCommand returns cacheDir/<name>/<version>/<name>, first building it
// with `go install module@version` when it is not there yet. The binary is
// built in a temporary directory and renamed into place, so an interrupted
// build never leaves a half-written cache.
func (b GoBuild) CachedCommand(ctx context.Context, cacheDir, name, module, version string) (path string, built bool, err error) {
	dir := filepath.Join(cacheDir, name, version)
	path = filepath.Join(dir, name)
	if info, err := os.Stat(path); err == nil && info.Mode().IsRegular() {
		return path, false, nil
	}
	tmp, err := os.MkdirTemp(cacheDir, name+"-build-")
	if err != nil {
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			return "", false, err
		}
		if tmp, err = os.MkdirTemp(cacheDir, name+"-build-"); err != nil {
			return "", false, err
		}
	}
	defer os.RemoveAll(tmp)
	if err := b.Install(ctx, tmp, module+"@"+version); err != nil {
		return "", false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, err
	}
	if err := os.Rename(filepath.Join(tmp, name), path); err != nil {
		return "", false, err
	}
	return path, true, nil
}
