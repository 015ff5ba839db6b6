package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/install/cluster"
)

const (
	meshedNS = "e2e-mtls"
	plainNS  = "e2e-plain"
)

// TestMeshTLS checks on the wire that meshed pods never talk in plain
// text: a marker sent in HTTP requests (and in an opaque TCP stream) is
// captured with tcpdump on the node's interfaces. Between meshed pods the
// marker must not appear; between the same pods outside the mesh it must,
// which proves the capture sees the traffic at all.
func TestMeshTLS(t *testing.T) {
	needEnv(t)
	t.Parallel() // alongside the other tests that leave the mesh as they found it (main_test.go)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	for _, ns := range []string{meshedNS, plainNS} {
		manifest := plainNamespaceManifest(ns)
		if ns == meshedNS {
			manifest = namespaceManifest(ns)
		}
		mustRun(t, ctx, []byte(manifest+"---\n"+echoManifestIn(ns, "echo", "echo", 1)), e2e.kubectl, "apply", "-f", "-")
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			deleteNamespace(t, ctx, ns)
		})
	}
	for _, ns := range []string{meshedNS, plainNS} {
		waitDeployments(t, ctx, ns, 3*time.Minute)
	}
	tests := []struct {
		name, ns, opaque string
		wantPlain        bool
	}{
		{name: "meshed HTTP is encrypted", ns: meshedNS},
		{name: "meshed opaque TCP is encrypted", ns: meshedNS, opaque: "8080"},
		{name: "unmeshed HTTP is plain text (the capture works)", ns: plainNS, wantPlain: true},
	}
	t.Run("mesh identity shows a pod's certificate", func(t *testing.T) {
		want := "spiffe://cluster.local/ns/" + meshedNS + "/sa/default"
		r := mustRun(t, ctx, nil, e2e.mesh, "identity", "-n", meshedNS, "-l", "backend=echo")
		if !strings.Contains(r.stdout, want) {
			t.Errorf("mesh identity printed:\n%s\nwant %s", r.stdout, want)
		}
		t.Logf("mesh identity:\n%s", r.stdout)
		r = command(ctx, nil, nil, e2e.mesh, "identity", "-n", plainNS, "-l", "backend=echo")
		if r.err == nil || !strings.Contains(r.stderr, "not meshed") {
			t.Errorf("mesh identity on an unmeshed pod: %v\n%s%s; want an error saying it is not meshed", r.err, r.stdout, r.stderr)
		}
	})
	t.Run("an application gets its SVID from the Workload API with no configuration", func(t *testing.T) {
		startLoadIn(t, ctx, meshedNS, svidJob(meshedNS), "svid", true)
		waitJobIn(t, ctx, meshedNS, "svid", 2*time.Minute)
		logs := mustRun(t, ctx, nil, e2e.kubectl, "logs", "-n", meshedNS, "job/svid", "-c", "loadgen")
		if want := "spiffe_id=spiffe://cluster.local/ns/" + meshedNS + "/sa/default "; !strings.Contains(logs.stdout, want) {
			t.Errorf("demo svid printed %q, want %s...", logs.stdout, want)
		}
	})
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			marker := "mesh-marker-" + randomHex(t)
			capture := startCapture(t, ctx)
			job := fmt.Sprintf("marker-%d", i)
			startLoadIn(t, ctx, tc.ns, loadJobIn(tc.ns, job, "echo", "/"+marker, tc.opaque, 20, 3*time.Second, 0), job, tc.ns == meshedNS)
			waitJobIn(t, ctx, tc.ns, job, 2*time.Minute)
			seen, packets := capture.stop(t, marker)
			t.Logf("captured %d lines on port 8080; marker seen: %v", packets, seen)
			if packets == 0 {
				t.Fatal("tcpdump captured nothing on port 8080: the check would prove nothing")
			}
			if seen != tc.wantPlain {
				t.Errorf("marker %s in the capture: %v, want %v", marker, seen, tc.wantPlain)
			}
		})
	}
}

func randomHex(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// capture is tcpdump printing every TCP packet to or from port 8080 in
// ASCII, on every interface of the node's network namespace (each pod's
// veth included).
type capture struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

func startCapture(t *testing.T, ctx context.Context) *capture {
	return startCaptureFilter(t, ctx, "tcp port 8080")
}

// startCaptureFilter is a capture of what the tcpdump filter selects.
func startCaptureFilter(t *testing.T, ctx context.Context, filter string) *capture {
	t.Helper()
	c := &capture{}
	args := append([]string{"--net=/var/run/netns/" + cluster.DefaultName, "tcpdump", "-i", "any", "-nn", "-A", "-s", "0", "-l", "-U"},
		strings.Fields(filter)...)
	c.cmd = exec.CommandContext(ctx, "nsenter", args...)
	c.cmd.Stdout = &c.out
	var stderr lockedBuffer
	c.cmd.Stderr = &stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("tcpdump (Debian's tcpdump package, `make deps`): %v", err)
	}
	t.Cleanup(func() { c.cmd.Process.Kill(); c.cmd.Wait() })
	// tcpdump says "listening on" once the capture runs.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "listening on") {
		if time.Now().After(deadline) {
			t.Fatalf("tcpdump did not start: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

// stop ends the capture and says whether marker went by in clear, and how
// many lines tcpdump printed.
// lockedBuffer is a bytes.Buffer tcpdump writes to while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (c *capture) stop(t *testing.T, marker string) (bool, int) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGINT)
	c.cmd.Wait()
	out := c.out.String()
	return strings.Contains(out, marker), strings.Count(out, "\n")
}

// svidJob runs `demo svid`: go-spiffe's Workload API client with nothing
// but the SPIFFE_ENDPOINT_SOCKET the injector sets. Its container is named
// loadgen so that startLoadIn and waitJobIn serve it too.
func svidJob(ns string) string {
	return fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata:
  name: svid
  namespace: %s
spec:
  backoffLimit: 0
  template:
    metadata:
      labels: {job: svid}
    spec:
      restartPolicy: Never
      containers:
        - name: loadgen
          image: ghcr.io/mesh-dev/mesh-demo:%s
          imagePullPolicy: IfNotPresent
          args: ["svid", "--timeout", "60s"]
          securityContext:
            runAsNonRoot: true
            runAsUser: 65532
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
`, ns, e2e.version)
}
