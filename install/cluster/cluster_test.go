//go:build cluster

// The end-to-end check of the local cluster. It needs root and, on a cold
// machine, about ten minutes (Kubernetes and CoreDNS builds), so it is
// behind the "cluster" build tag: run it with `make test-cluster`
// (go test -tags cluster ./install/cluster). With MESH_REQUIRE_ROOT_TESTS=1
// it fails instead of skipping when it cannot run.

package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/install/image"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := "the local cluster test needs root (namespaces, mounts, cgroups)"
	if os.Getenv("MESH_REQUIRE_ROOT_TESTS") == "1" {
		t.Fatal(msg + "; MESH_REQUIRE_ROOT_TESTS=1 forbids skipping it")
	}
	t.Skip(msg)
}

// testLog sends the progress lines to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Helper()
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestCluster brings the cluster up (or reuses a running one), runs a
// two-pod Deployment of an image built FROM scratch, and checks node
// readiness, EndpointSlices, DNS through CoreDNS from a pod, and ClusterIP
// reachability from a pod and from the node namespace. It tears down only
// what it created.
func TestCluster(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	cfg := Config{Log: testLog{t}}
	c, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	p := newPaths(c)
	version, err := K8sVersion(c.RepoRoot)
	if err != nil {
		t.Fatal(err)
	}
	k8sBin := k8sBinDir(c, version)
	if state(p, components(p, k8sBin)).allRunning() {
		t.Log("reusing the running cluster")
	} else {
		if err := Up(ctx, cfg); err != nil {
			t.Fatalf("Up: %v", err)
		}
		t.Cleanup(func() {
			if err := Down(context.Background(), cfg); err != nil {
				t.Errorf("Down: %v", err)
			}
			if left := Leftovers(c.StateDir, c.Name); len(left) > 0 {
				t.Errorf("left after Down: %v", left)
			}
		})
	}
	k := func(args ...string) string {
		t.Helper()
		out, err := kubectl(ctx, p, k8sBin, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if err := nodeReady(ctx, p, k8sBin); err != nil {
		t.Fatal(err)
	}

	ns := "cluster-test-" + randomSuffix(t)
	ref := loadEchoImage(t, ctx, p)
	k("create", "namespace", ns)
	t.Cleanup(func() { _, _ = kubectl(context.Background(), p, k8sBin, "delete", "namespace", ns, "--wait=false") })
	manifest := filepath.Join(t.TempDir(), "echo.yaml")
	if err := os.WriteFile(manifest, []byte(echoManifest(ref)), 0o644); err != nil {
		t.Fatal(err)
	}
	k("-n", ns, "apply", "-f", manifest)
	k("-n", ns, "rollout", "status", "deployment/echo", "--timeout=120s")

	t.Run("EndpointSlices", func(t *testing.T) {
		out := k("-n", ns, "get", "endpointslices", "-l", "kubernetes.io/service-name=echo",
			"-o", `jsonpath={range .items[*].endpoints[*]}{.addresses[0]} {.conditions.ready}{"\n"}{end}`)
		if n := strings.Count(out, " true"); n != 2 {
			t.Errorf("ready endpoints = %d, want 2:\n%s", n, out)
		}
	})
	clusterIP := strings.TrimSpace(k("-n", ns, "get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}"))
	pod := strings.TrimSpace(k("-n", ns, "get", "pods", "-l", "app=echo", "-o", "jsonpath={.items[0].metadata.name}"))
	name := "echo." + ns + ".svc." + Domain

	t.Run("DNSFromPod", func(t *testing.T) {
		out := k("-n", ns, "exec", pod, "--", "/app", "-lookup", name)
		if strings.TrimSpace(out) != clusterIP {
			t.Errorf("%s resolved to %q in a pod, want the ClusterIP %s", name, out, clusterIP)
		}
	})
	t.Run("ClusterIPFromPod", func(t *testing.T) {
		out := k("-n", ns, "exec", pod, "--", "/app", "-get", "http://"+name+"/")
		if !strings.HasPrefix(out, "hello from echo-") {
			t.Errorf("GET through the Service from a pod = %q", out)
		}
	})
	t.Run("ClusterIPFromNode", func(t *testing.T) {
		seen := getFromNode(t, ctx, p, "http://"+clusterIP+"/")
		if len(seen) != 2 {
			t.Errorf("the ClusterIP answered from %v, want both pods", seen)
		}
	})
}

func randomSuffix(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// loadEchoImage builds testdata/echo into a FROM-scratch image and imports
// it into the cluster's containerd.
func loadEchoImage(t *testing.T, ctx context.Context, p paths) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "echo")
	if err := (image.GoBuild{Dir: "."}).Build(ctx, bin, "./testdata/echo"); err != nil {
		t.Fatal(err)
	}
	ref := image.Ref("cluster-test-echo", "v1")
	tar := filepath.Join(dir, "echo.tar")
	if err := image.Write(tar, image.Static(ref, bin)); err != nil {
		t.Fatal(err)
	}
	if err := ctr(ctx, p, "images", "import", tar); err != nil {
		t.Fatal(err)
	}
	return ref
}

func echoManifest(ref string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 2
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      containers:
      - name: echo
        image: %s
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
`, ref)
}

// getFromNode GETs url from inside the node namespace until both pods have
// answered or 40 requests were made, and returns the answers seen.
func getFromNode(t *testing.T, ctx context.Context, p paths, url string) map[string]bool {
	t.Helper()
	client := &http.Client{
		Timeout:   3 * time.Second,
		Transport: &http.Transport{DialContext: DialInNetns(p.netns), DisableKeepAlives: true},
	}
	seen := map[string]bool{}
	for i := 0; i < 40 && len(seen) < 2; i++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s from the node namespace: %v", url, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		seen[strings.TrimSpace(string(body))] = true
	}
	return seen
}
