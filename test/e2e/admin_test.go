package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/internal/names"
)

// The namespaces of TestAdminPort: a meshed one with a server, and one
// outside the mesh with the client that plays an ordinary pod.
const (
	adminNS      = "e2e-admin"
	adminPlainNS = "e2e-admin-plain"
)

// TestAdminPort is issue 12's admin port, attacked from an unmeshed pod in
// another namespace: on a meshed pod's IP, port 4191, /metrics and /ready
// answer (kubelet and scrapers need them) while /destinations, /identity
// and /shutdown get 404, and the proxy does not shut down. Through a
// port-forward, which reaches the proxy on the pod's loopback, the same
// endpoints answer: the 404s are the guard, not missing endpoints.
func TestAdminPort(t *testing.T) {
	needEnv(t)
	t.Parallel() // alongside the other tests that leave the mesh as they found it (main_test.go)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	server := demoApp{ns: adminNS, name: "echo", args: []string{"echo"}, port: 8080, portName: "http"}
	client := demoApp{ns: adminPlainNS, name: "outsider", args: []string{"echo", "--admin-addr", ""}}
	manifest := strings.Join([]string{
		namespaceManifest(adminNS), plainNamespaceManifest(adminPlainNS), server.manifest(), client.manifest(),
	}, "---\n")
	mustRun(t, ctx, []byte(manifest), e2e.kubectl, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		for _, ns := range []string{adminNS, adminPlainNS} {
			deleteNamespace(t, ctx, ns)
		}
	})
	for _, ns := range []string{adminNS, adminPlainNS} {
		waitDeployments(t, ctx, ns, 3*time.Minute)
	}
	pod := runningPods(t, ctx, adminNS, "app=echo")[0]
	outsider := newPodClient(t, ctx, adminPlainNS, "outsider")
	admin := net.JoinHostPort(pod.Status.PodIP, fmt.Sprint(names.AdminPort))
	restarts := restartCounts(t, ctx, adminNS)

	for _, path := range []string{"/destinations", "/identity"} {
		if _, err := adminGet(ctx, &pod, path); err != nil {
			t.Errorf("through a port-forward: %v; want 200", err)
		}
	}
	tests := []struct {
		method, path string
		wantStatus   int
		wantBody     string
	}{
		{method: "GET", path: "/metrics", wantStatus: 200, wantBody: "mesh_proxy_"},
		{method: "GET", path: "/ready", wantStatus: 200, wantBody: "ready"},
		{method: "GET", path: "/live", wantStatus: 200, wantBody: "live"},
		{method: "GET", path: "/destinations", wantStatus: 404},
		{method: "GET", path: "/identity", wantStatus: 404},
		{method: "POST", path: "/shutdown", wantStatus: 404},
	}
	for _, tc := range tests {
		got := outsider.request(ctx, tc.method, admin, tc.path)
		if got.err != nil || got.status != tc.wantStatus || !strings.Contains(got.body, tc.wantBody) {
			t.Errorf("%s %s from %s/%s to %s: %s; want %d with %q",
				tc.method, tc.path, adminPlainNS, outsider.pod.Name, admin, got, tc.wantStatus, tc.wantBody)
		}
	}

	// A proxy told to shut down stops being ready at once and logs why;
	// this one must stay ready, and say nothing of it.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if got := outsider.request(ctx, "GET", admin, "/ready"); got.status != 200 {
			t.Fatalf("GET /ready after POST /shutdown from the network: %s; the proxy is shutting down", got)
		}
	}
	if logs := proxyLogs(t, ctx, &pod); strings.Contains(logs, "/shutdown requested") {
		t.Errorf("the proxy of %s logged a /shutdown from the network:\n%s", pod.Name, lastLines(logs, 5))
	}
	for c, n := range restartCounts(t, ctx, adminNS) {
		if n != restarts[c] {
			t.Errorf("%s restarted (%d restarts, %d before)", c, n, restarts[c])
		}
	}
}

// request sends method path to addr (an IP:port) on a connection of its
// own from the client's pod, with no body.
func (c *podClient) request(ctx context.Context, method, addr, path string) answer {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tr := &http.Transport{DialContext: c.dial, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
	if err != nil {
		return answer{err: err}
	}
	start := time.Now()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return answer{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return answer{status: resp.StatusCode, body: string(body), err: err, elapsed: time.Since(start)}
}
