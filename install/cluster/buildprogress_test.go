package cluster

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/install/image"
)

// TestBuildProgress builds a module of three new packages (a main and two
// it imports, with a fresh comment so they are not in the build cache) and
// checks the progress lines: the total `go list` found stale, packages
// counted as the go command names them, and the binary built.
func TestBuildProgress(t *testing.T) {
	dir := t.TempDir()
	stamp := time.Now().Format(time.RFC3339Nano)
	files := map[string]string{
		"go.mod":     "module example.com/progress\n\ngo 1.24\n",
		"a/a.go":     "package a\n\n// " + stamp + "\nfunc A() int { return 1 }\n",
		"b/b.go":     "package b\n\nimport \"example.com/progress/a\"\n\n// " + stamp + "\nfunc B() int { return a.A() + 1 }\n",
		"cmd/x/x.go": "package main\n\nimport (\n\t\"os\"\n\n\t\"example.com/progress/b\"\n)\n\nfunc main() { os.Exit(b.B() - 2) }\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var log bytes.Buffer
	pr := &progress{w: &log, start: time.Now()} // written by one goroutine, read once it ended
	gb := image.GoBuild{Dir: dir}
	out := filepath.Join(dir, "bin")
	// A slow compile is not needed to see a report: every millisecond one
	// is written, so the last one must have seen all three packages.
	err := runBuildWithProgress(context.Background(), gb, pr, "building x", gb.BuildIntoArgs(out, "./cmd/x"), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "x")); err != nil {
		t.Errorf("no binary: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	re := regexp.MustCompile(`^\[\s*\d+\.\ds\] building x: (.*), \dm\d\ds elapsed$`)
	for _, l := range lines {
		if !re.MatchString(l) {
			t.Errorf("progress line %q does not match %s", l, re)
		}
	}
	if !strings.Contains(log.String(), "/3 packages") {
		t.Errorf("no line counts 3 stale packages:\n%s", log.String())
	}

	// A compile error comes back with the compiler's message.
	if err := os.WriteFile(filepath.Join(dir, "a/a.go"), []byte("package a\n\nfunc A() int { return nope }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = runBuildWithProgress(context.Background(), gb, pr, "building x", gb.BuildIntoArgs(out, "./cmd/x"), time.Hour)
	if err == nil || !strings.Contains(err.Error(), "undefined: nope") {
		t.Errorf("err = %v, want the compiler's message", err)
	}
}
