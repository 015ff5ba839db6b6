package image

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestJaegerImage builds the Jaeger image as `make images` does (the binary
// from the cache after a first build of minutes) and runs what it holds:
// the binary with the embedded configuration, as the image's entrypoint and
// command say, in a network namespace of its own so its fixed ports meet
// nothing else on the machine; its query API must answer on :16686 and its
// health on :13133/status. It needs root (unshare).
func TestJaegerImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Jaeger (-short)")
	}
	if os.Geteuid() != 0 {
		msg := "unshare --net needs root"
		if os.Getenv("MESH_REQUIRE_ROOT_TESTS") == "1" {
			t.Fatal(msg + "; MESH_REQUIRE_ROOT_TESTS=1 forbids skipping it")
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "jaeger.tar")
	var log bytes.Buffer
	built, err := BuildJaeger(ctx, GoBuild{}, DefaultCacheDir, out, &log)
	t.Logf("BuildJaeger: %s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	if built.Ref != "ghcr.io/mesh-dev/jaeger:1.75.0" {
		t.Errorf("ref %q", built.Ref)
	}
	idx, _, err := ReadIndex(out, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, imgs, err := Platforms(idx)
	if err != nil {
		t.Fatal(err)
	}
	img := imgs[runtime.GOARCH]
	if len(imgs) != 1 || img == nil {
		t.Fatalf("variants %v, want the host's %s alone", imgs, runtime.GOARCH)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checkVariant(t, JaegerName, runtime.GOARCH, img, buildPaths(t, root))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != NonRootUID || !slices.Equal(cf.Config.Cmd, []string{"--config", JaegerConfigPath}) ||
		!slices.Contains(cf.Config.Env, "JAEGER_LISTEN_HOST=0.0.0.0") {
		t.Errorf("config: user %q cmd %q env %q", cf.Config.User, cf.Config.Cmd, cf.Config.Env)
	}
	dir := t.TempDir()
	for _, p := range []string{cf.Config.Entrypoint[0], JaegerConfigPath} {
		b, err := ReadFile(img, p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Loopback only; the namespace and jaeger end with the shell.
	script := `set -e
ip link set lo up
cd "$1"
JAEGER_LISTEN_HOST=127.0.0.1 ./jaeger --config ./config.yaml >jaeger.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for i in $(seq 120); do
	if out=$(curl -fsS http://127.0.0.1:16686/api/services 2>/dev/null); then
		echo "$out"
		# The health endpoint the manifests' probes ask (install/manifests/60-jaeger.yaml).
		curl -fsS -o /dev/null -w 'health %{http_code}\n' http://127.0.0.1:13133/status
		exit 0
	fi
	kill -0 $pid 2>/dev/null || { echo "jaeger exited"; cat jaeger.log; exit 1; }
	sleep 0.5
done
echo "no answer on :16686 in 60 s"; cat jaeger.log; exit 1`
	got, err := exec.CommandContext(ctx, "unshare", "--net", "sh", "-c", script, "sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("jaeger: %v\n%s", err, got)
	}
	// No spans were sent: the query API answers with no services.
	if !strings.Contains(string(got), `"data"`) || !strings.Contains(string(got), "health 200") {
		t.Errorf("/api/services and /status answered %s", got)
	}
}
