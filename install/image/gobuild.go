package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
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
	// Arch is the GOARCH to build for; empty means the host's (or $GOARCH).
	Arch string
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
	return b.run(ctx, nil, b.BuildIntoArgs(dir, pkgs...)...)
}

// BuildIntoArgs are the go command's arguments BuildInto runs, for a caller
// that runs them itself (with -v, to follow a long build).
func (b GoBuild) BuildIntoArgs(dir string, pkgs ...string) []string {
	return append([]string{"build", "-trimpath", "-tags", Tags, "-ldflags", b.ldflags(), "-o", dir + "/"}, pkgs...)
}

// Command returns the go command with args, set up as GoBuild runs it: in
// Dir, with CGO_ENABLED=0, GOWORK=off and Arch.
func (b GoBuild) Command(ctx context.Context, args ...string) *exec.Cmd {
	goCmd := b.Go
	if goCmd == "" {
		goCmd = FindGo()
	}
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = b.Dir
	// GOWORK=off: a go.work above the checkout must not change what is built.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if b.Arch != "" {
		cmd.Env = append(cmd.Env, "GOOS=linux", "GOARCH="+b.Arch)
	}
	return cmd
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
	cmd := b.Command(ctx, args...)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", cmd.Path, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
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

// CachedTool returns cacheDir/<name>/<version>/linux-<b.Arch>/<name>, first
// building the command pkg at module version version into it when it is not
// there yet. It builds in a throwaway module that requires pkg as a tool
// (`go get -tool pkg@version`, then `go build`), which works where `go
// install pkg@version` does not: for another GOARCH (go install refuses
// GOBIN then) and for modules whose go.mod has replace directives (Jaeger).
// Like CachedCommand it renames a finished binary into place.
func (b GoBuild) CachedTool(ctx context.Context, cacheDir, name, pkg, version string, log io.Writer) (path string, built bool, err error) {
	arch := b.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	dir := filepath.Join(cacheDir, name, version, "linux-"+arch)
	path = filepath.Join(dir, name)
	if info, err := os.Stat(path); err == nil && info.Mode().IsRegular() {
		return path, false, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", false, err
	}
	tmp, err := os.MkdirTemp(cacheDir, name+"-build-")
	if err != nil {
		return "", false, err
	}
	defer os.RemoveAll(tmp)
	mb := b
	mb.Dir = tmp
	if err := mb.run(ctx, nil, "mod", "init", "build.local/"+name); err != nil {
		return "", false, err
	}
	start := time.Now()
	stopGet := reportEvery(log, 10*time.Second, func() string {
		return fmt.Sprintf("images: still resolving %s@%s's modules (%.0fs)", pkg, version, time.Since(start).Seconds())
	})
	err = mb.run(ctx, nil, "get", "-tool", pkg+"@"+version)
	stopGet()
	if err != nil {
		return "", false, err
	}
	stop := reportEvery(log, 10*time.Second, func() string {
		return fmt.Sprintf("images: still building %s %s for %s (%.0fs)", name, version, arch, time.Since(start).Seconds())
	})
	err = mb.run(ctx, nil, "build", "-trimpath", "-ldflags", b.ldflags(), "-o", filepath.Join(tmp, name), pkg)
	stop()
	if err != nil {
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

// reportEvery writes msg() to w every period until the returned stop is
// called: a long build is never silent.
func reportEvery(w io.Writer, period time.Duration, msg func() string) (stop func()) {
	if w == nil || w == io.Discard {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintln(w, msg())
			}
		}
	}()
	return func() { close(done); <-finished }
}
