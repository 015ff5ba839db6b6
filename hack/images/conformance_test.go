package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/install/image"
)

// TestManifestsRunTheEchoImage ties the image name here to the one the
// conformance manifests run (test/conformance/mesh renders the tag).
func TestManifestsRunTheEchoImage(t *testing.T) {
	b, err := os.ReadFile("../../test/conformance/mesh/manifests.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := "image: " + image.Ref(echoName, "${MESH_VERSION}")
	if n := strings.Count(string(b), want); n != 3 {
		t.Errorf("manifests.yaml has %q %d times, want once per echo Deployment (3)", want, n)
	}
}

// TestEchoImage builds the image as `make images` does and runs what is in
// it: the server, and the client by the name the suite execs.
func TestEchoImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the echo binary (-short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out := t.TempDir()
	built, err := buildEcho(ctx, image.Options{RepoRoot: "../..", OutDir: out, Version: "v0.0.0-test"})
	if err != nil {
		t.Fatal(err)
	}
	if built.Ref != "ghcr.io/mesh-dev/conformance-echo:v0.0.0-test" || built.Path != filepath.Join(out, "conformance-echo.tar") {
		t.Errorf("built %+v", built)
	}
	idx, ann, err := image.ReadIndex(built.Path, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if ann[image.AnnotationImageName] != built.Ref {
		t.Errorf("the archive names the image %q, want %q", ann[image.AnnotationImageName], built.Ref)
	}
	arches, imgs, err := image.Platforms(idx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(arches, image.DefaultArches) {
		t.Errorf("variants %q, want %q", arches, image.DefaultArches)
	}
	img := imgs[runtime.GOARCH]
	if img == nil {
		t.Fatalf("no variant for this machine's %s", runtime.GOARCH)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{echoBin}) || !slices.Contains(cfg.Config.Env, "PATH=/usr/local/bin") || cfg.Config.User != image.NonRootUID {
		t.Errorf("config: entrypoint %q env %q user %q", cfg.Config.Entrypoint, cfg.Config.Env, cfg.Config.User)
	}
	paths, err := image.Paths(img)
	if err != nil {
		t.Fatal(err)
	}
	// Paths lists directories with a slash and links with their target.
	for _, p := range []string{echoBin, echoClient + " -> echo-server", "/tmp/"} {
		if !slices.Contains(paths, p) {
			t.Errorf("image has no %s; it has %q", p, paths)
		}
	}
	bin, err := image.ReadFile(img, echoBin)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the echo binary is dynamically linked; FROM scratch cannot run it")
		}
	}

	// The binary under the image's two names.
	dir := t.TempDir()
	server := filepath.Join(dir, filepath.Base(echoBin))
	if err := os.WriteFile(server, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(echoBin), filepath.Join(dir, "client")); err != nil {
		t.Fatal(err)
	}
	srv := exec.CommandContext(ctx, server, "--port=0")
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
	})
	// The server logs each listener as "echo: http on [::]:PORT".
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	m := regexp.MustCompile(`^echo: http on .*:(\d+)\n$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("server logged %q", line)
	}
	// As the suite execs it: by the name client, the URL first.
	cl := exec.CommandContext(ctx, filepath.Join(dir, "client"), "http://127.0.0.1:"+m[1]+"/hello", "--method=GET", "-H", "version:one")
	got, err := cl.CombinedOutput()
	if err != nil {
		t.Fatalf("client: %v\n%s", err, got)
	}
	for _, want := range []string{"[0] StatusCode=200\n", "[0 body] URL=/hello\n", "[0 body] RequestHeader=Version:one\n", "[0 body] Hostname="} {
		if !strings.Contains(string(got), want) {
			t.Errorf("client output lacks %q:\n%s", want, got)
		}
	}
}
