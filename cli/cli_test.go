package cli

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// client-go's process-wide workers, started on first use.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*loggingT).flushDaemon"),
		goleak.IgnoreAnyFunction("k8s.io/client-go/util/workqueue.(*Type).updateUnfinishedWorkLoop"),
		goleak.IgnoreAnyFunction("k8s.io/client-go/util/workqueue.(*delayingType).waitingLoop"),
	)
}

// run executes the mesh command with args and stdin, returning its output.
// The test's clock is fixed, and no kubeconfig of the machine is seen:
// KUBECONFIG and HOME point into a temporary directory.
func run(t testing.TB, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	isolateKubeconfig(t)
	var out, errOut bytes.Buffer
	o := NewOptions(strings.NewReader(stdin), &out, &errOut)
	o.Now = func() time.Time { return testNow }
	cmd := NewRootCmd(o)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

var testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func isolateKubeconfig(t testing.TB) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("KUBECONFIG", filepath.Join(dir, "kubeconfig"))
	t.Setenv("HOME", dir)
}

// unreachableKubeconfig writes a kubeconfig naming an API server on a
// loopback port nothing listens on, and returns its path.
func unreachableKubeconfig(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters:
- name: gone
  cluster:
    server: https://` + addr + `
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: secret
contexts:
- name: gone
  context:
    cluster: gone
    user: admin
current-context: gone
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
