package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/install/cluster"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

const vizNS = "e2e-viz"

// vizOutsiderNS holds an unmeshed pod, the attacker of issue 12 who read
// every workload's stats from the viz API.
const vizOutsiderNS = "e2e-viz-outsider"

// The known load of the accuracy test: what loadgen sends and what echo
// is told to do to it.
const (
	vizRPS      = 50
	vizFailRate = 0.1
	vizLatency  = 20 * time.Millisecond
	vizLoadFor  = 150 * time.Second
)

var (
	vizLoadID = "spiffe://cluster.local/ns/" + vizNS + "/sa/viz-load"
	vizEchoID = "spiffe://cluster.local/ns/" + vizNS + "/sa/viz-echo"
)

// TestViz checks mesh viz against a load whose truth is known: loadgen
// sends 50 requests per second to echo, which fails 10 % of them with 500
// and answers every one 20 ms late. stat and edges are read with the real
// CLI through its port-forward to the real mesh-viz, tap through the
// Kubernetes API; a real
// Prometheus scraping the same proxies must sum to the same totals; and
// the dashboard is driven in Debian's Chromium over the demo shop.
func TestViz(t *testing.T) {
	needEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	mustRun(t, ctx, []byte(namespaceManifest(vizNS)+"---\n"+vizEchoManifest()), e2e.kubectl, "apply", "-f", "-")
	mustRun(t, ctx, demoManifest(t, "demo.yaml"), e2e.kubectl, "apply", "-f", "-")
	outsider := demoApp{ns: vizOutsiderNS, name: "outsider", args: []string{"echo", "--admin-addr", ""}}
	mustRun(t, ctx, []byte(plainNamespaceManifest(vizOutsiderNS)+"---\n"+outsider.manifest()), e2e.kubectl, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, vizNS)
		deleteNamespace(t, ctx, demoNS)
		deleteNamespace(t, ctx, vizOutsiderNS)
	})
	waitDeployments(t, ctx, vizNS, 3*time.Minute)
	waitDeployments(t, ctx, vizOutsiderNS, 3*time.Minute)
	t.Run("no pod reaches the viz API", func(t *testing.T) { testVizOutOfReach(t, ctx) })
	echoPods := runningPods(t, ctx, vizNS, "app=echo")
	prom := startPrometheus(t, ctx, echoPods)

	loadPod := startLoadIn(t, ctx, vizNS, vizLoadJob(), "viz-load", true)
	loadStart := time.Now()

	t.Run("tap shows requests as they happen", func(t *testing.T) { testTap(t, ctx) })
	t.Run("edges show the identities and mTLS", func(t *testing.T) { testEdges(t, ctx) })

	// A full one-minute window of load, and a scrape after it.
	time.Sleep(time.Until(loadStart.Add(75 * time.Second)))
	t.Run("stat reports the known load", func(t *testing.T) { testStatAccuracy(t, ctx) })
	t.Run("stat --from the load pod sees the same edge", func(t *testing.T) { testStatFrom(t, ctx, loadPod) })
	t.Run("routes: the load's requests to echo, without a route", func(t *testing.T) { testRoutes(t, ctx, loadPod) })
	t.Run("dashboard in Chromium", func(t *testing.T) { testDashboard(t, ctx) })
	t.Run("a proxy exports few series", func(t *testing.T) { testSeriesCount(t, ctx) })

	waitJobIn(t, ctx, vizNS, "viz-load", vizLoadFor+2*time.Minute)
	t.Run("Prometheus sums to the same totals", func(t *testing.T) { testPrometheusAgrees(t, ctx, prom) })
}

// vizEchoManifest is echo failing and slowing every request, under its own
// ServiceAccount, and without a readiness probe: kubelet's probes would
// pass through the proxy too, and the test wants loadgen's requests alone.
func vizEchoManifest() string {
	m := echoManifestIn(vizNS, "echo", "echo", 1, "--fail-rate", fmt.Sprint(vizFailRate), "--latency", vizLatency.String())
	m = strings.Replace(m, "      terminationGracePeriodSeconds: 15\n",
		"      serviceAccountName: viz-echo\n      terminationGracePeriodSeconds: 15\n", 1)
	m = regexp.MustCompile(`(?s)          readinessProbe:\n.*?periodSeconds: 1\n`).ReplaceAllString(m, "")
	return serviceAccount(vizNS, "viz-echo") + serviceAccount(vizNS, "viz-load") + m
}

func serviceAccount(ns, name string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: %s\n  namespace: %s\n---\n", name, ns)
}

// vizLoadJob is loadgen at the known rate, which counts failures without
// stopping for them.
func vizLoadJob() string {
	m := loadJobIn(vizNS, "viz-load", "echo", "/", "", vizRPS, vizLoadFor, -1)
	return strings.Replace(m, "      restartPolicy: Never\n", "      serviceAccountName: viz-load\n      restartPolicy: Never\n", 1)
}

func runningPods(t *testing.T, ctx context.Context, ns, selector string) []corev1.Pod {
	t.Helper()
	list, err := e2e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			pods = append(pods, p)
		}
	}
	if len(pods) == 0 {
		t.Fatalf("no running pod in %s matches %s", ns, selector)
	}
	return pods
}

// vizJSON runs a mesh viz command with -o json and decodes its output.
func vizJSON(t *testing.T, ctx context.Context, into any, args ...string) {
	t.Helper()
	r := mustRun(t, ctx, nil, e2e.mesh, append(append([]string{"viz"}, args...), "-o", "json")...)
	if err := json.Unmarshal([]byte(r.stdout), into); err != nil {
		t.Fatalf("mesh viz %s -o json printed %q: %v", strings.Join(args, " "), r.stdout, err)
	}
}

func testStatAccuracy(t *testing.T, ctx context.Context) {
	var list vizv1.StatList
	vizJSON(t, ctx, &list, "stat", "deploy", "echo", "-n", vizNS)
	if len(list.Rows) != 1 {
		t.Fatalf("mesh viz stat deploy echo: %d rows, want 1: %+v", len(list.Rows), list)
	}
	row := list.Rows[0]
	truth := loadgenP50(t, ctx)
	t.Logf("mesh viz stat over %s: %d requests, rps %.1f, success %s, p50 %s p95 %s p99 %s (loadgen's p50: %.1fms), %d TCP connections",
		list.Window, row.Requests, row.RPS, pct(row.SuccessRate), ms(row.LatencyP50), ms(row.LatencyP95), ms(row.LatencyP99), truth, row.TCPConnections)
	if row.MeshedPods != 1 || row.TotalPods != 1 {
		t.Errorf("MESHED %d/%d, want 1/1", row.MeshedPods, row.TotalPods)
	}
	if row.RPS < 45 || row.RPS > 55 {
		t.Errorf("RPS %.1f, want 45-55 (loadgen sends %d)", row.RPS, vizRPS)
	}
	if row.SuccessRate == nil || *row.SuccessRate < 0.88 || *row.SuccessRate > 0.92 {
		t.Errorf("success %s, want 88-92%% (echo fails %.0f%%)", pct(row.SuccessRate), vizFailRate*100)
	}
	if row.LatencyP50 == nil || math.Abs(*row.LatencyP50-truth) > 0.2*truth {
		t.Errorf("p50 %s, want within 20%% of loadgen's %.1fms", ms(row.LatencyP50), truth)
	}
	if row.TCPConnections < 1 {
		t.Errorf("TCP_CONN %d, want loadgen's open connections", row.TCPConnections)
	}

	table := mustRun(t, ctx, nil, e2e.mesh, "viz", "stat", "deploy", "-n", vizNS)
	t.Logf("mesh viz stat deploy -n %s:\n%s", vizNS, table.stdout)
	header := strings.Fields(strings.SplitN(table.stdout, "\n", 2)[0])
	want := []string{"NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN"}
	if strings.Join(header, " ") != strings.Join(want, " ") {
		t.Errorf("table header %v, want %v", header, want)
	}
	if !regexp.MustCompile(`(?m)^echo\s+1/1\s`).MatchString(table.stdout) {
		t.Errorf("no row for echo with MESHED 1/1")
	}
}

var p50Field = regexp.MustCompile(`p50=([0-9.]+)(µs|ms|s)\b`)

// loadgenP50 is the median latency loadgen measured so far, in ms: the
// truth the proxies' histograms are held to.
func loadgenP50(t *testing.T, ctx context.Context) float64 {
	t.Helper()
	logs := mustRun(t, ctx, nil, e2e.kubectl, "logs", "-n", vizNS, "job/viz-load", "-c", "loadgen")
	m := p50Field.FindAllStringSubmatch(logs.stdout, -1)
	if len(m) == 0 {
		t.Fatalf("no p50 in loadgen's output:\n%s", logs.stdout)
	}
	last := m[len(m)-1]
	var v float64
	fmt.Sscan(last[1], &v)
	switch last[2] {
	case "µs":
		v /= 1000
	case "s":
		v *= 1000
	}
	return v
}

func testStatFrom(t *testing.T, ctx context.Context, loadPod *corev1.Pod) {
	var list vizv1.StatList
	vizJSON(t, ctx, &list, "stat", "deploy", "echo", "-n", vizNS, "--from", "po/"+loadPod.Name)
	if len(list.Rows) != 1 {
		t.Fatalf("stat --from: %d rows, want 1: %+v", len(list.Rows), list)
	}
	row := list.Rows[0]
	t.Logf("mesh viz stat deploy echo --from po/%s: rps %.1f success %s p50 %s", loadPod.Name, row.RPS, pct(row.SuccessRate), ms(row.LatencyP50))
	if row.RPS < 45 || row.RPS > 55 {
		t.Errorf("RPS from the load pod %.1f, want 45-55", row.RPS)
	}
	if row.SuccessRate == nil || *row.SuccessRate < 0.88 || *row.SuccessRate > 0.92 {
		t.Errorf("success from the load pod %s, want 88-92%%", pct(row.SuccessRate))
	}
}

// testRoutes: the load pod's requests to echo, whose Service has no
// route, are one [default] route whose parent is svc/echo, with the
// whole load on it (the client's view, from the load pod's proxy).
func testRoutes(t *testing.T, ctx context.Context, loadPod *corev1.Pod) {
	var list vizv1.RouteList
	vizJSON(t, ctx, &list, "routes", "po/"+loadPod.Name, "-n", vizNS)
	if len(list.Routes) != 1 {
		t.Fatalf("routes of po/%s: %+v, want one", loadPod.Name, list.Routes)
	}
	r := list.Routes[0]
	t.Logf("route %v rule %q to %v: rps %.1f success %s p50 %s", r.Route, r.Rule, r.Parent, r.RPS, pct(r.SuccessRate), ms(r.LatencyP50))
	if r.Route != nil || r.Parent == nil || r.Parent.Name != "echo" || r.RPS < 45 || r.RPS > 55 {
		t.Errorf("route %v to %v at %.1f rps, want [default] to svc/echo at 45-55", r.Route, r.Parent, r.RPS)
	}
}

func testEdges(t *testing.T, ctx context.Context) {
	var found vizv1.Edge
	poll(t, ctx, 90*time.Second, "an edge from the load to echo", func(ctx context.Context) (bool, string, error) {
		var list vizv1.EdgeList
		vizJSON(t, ctx, &list, "edges", "-n", vizNS)
		for _, e := range list.Edges {
			if e.Src.Name == "viz-load" && e.Dst.Name == "echo" {
				found = e
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("edges: %+v", list.Edges), nil
	})
	t.Logf("edge %s/%s -> %s/%s: %s -> %s, mTLS %v, rps %.1f", found.Src.Kind, found.Src.Name, found.Dst.Kind, found.Dst.Name, found.SrcID, found.DstID, found.MTLS, found.RPS)
	if found.Src.Kind != "job" || found.Dst.Kind != "deployment" {
		t.Errorf("edge kinds %s -> %s, want job -> deployment", found.Src.Kind, found.Dst.Kind)
	}
	if found.SrcID != vizLoadID || found.DstID != vizEchoID || !found.MTLS {
		t.Errorf("edge identities %q -> %q, mTLS %v; want %s -> %s over mTLS", found.SrcID, found.DstID, found.MTLS, vizLoadID, vizEchoID)
	}
	table := mustRun(t, ctx, nil, e2e.mesh, "viz", "edges", "-n", vizNS)
	t.Logf("mesh viz edges -n %s:\n%s", vizNS, table.stdout)
	if !strings.Contains(table.stdout, vizLoadID) || !strings.Contains(table.stdout, vizEchoID) {
		t.Errorf("the edges table does not show both identities")
	}
}

// testTap reads `mesh viz tap` live: it must show loadgen's requests and
// their responses, each within seconds of when the proxy saw it, with the
// client's identity proven over mTLS.
func testTap(t *testing.T, ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2e.mesh, "viz", "tap", "deploy/echo", "-n", vizNS, "--path", "/", "-o", "json")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e2e.kubeconfig)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()
	var requests, failures int
	var lag time.Duration
	sc := bufio.NewScanner(out)
	for sc.Scan() && (requests < 20 || failures < 1) {
		var ev vizv1.TapEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("tap printed %q: %v", sc.Text(), err)
		}
		lag = max(lag, time.Since(ev.Time))
		switch ev.Type {
		case "request":
			requests++
			if ev.Method != "GET" || ev.Path != "/" || ev.ClientID != vizLoadID || ev.ServerID != vizEchoID ||
				ev.Direction != "inbound" || !strings.HasPrefix(ev.Pod, "echo-") {
				t.Errorf("request event %+v, want GET / inbound at an echo pod, %s -> %s", ev, vizLoadID, vizEchoID)
			}
		case "response":
			if ev.LatencyMs == nil || *ev.LatencyMs < float64(vizLatency.Milliseconds()) {
				t.Errorf("response event %+v, want a latency of at least %s", ev, vizLatency)
			}
			if ev.Status == 500 && ev.Success != nil && !*ev.Success {
				failures++
			}
		default:
			t.Errorf("tap event %+v", ev)
		}
	}
	t.Logf("tap: %d requests and %d failed responses seen; the oldest was %s old when read", requests, failures, lag.Round(time.Millisecond))
	if requests < 20 || failures < 1 {
		t.Fatalf("tap ended after %d requests and %d failures (want 20 and 1): %v\nstderr: %s", requests, failures, sc.Err(), stderr.String())
	}
	if lag > 5*time.Second {
		t.Errorf("events arrived up to %s after the proxy saw them, want live (under 5s)", lag)
	}

	// Anyone else is refused: curl, without mesh-viz's certificate,
	// reaches the tap port from the node and completes its side of TLS
	// 1.3, then the proxy, which requires the certificate, drops the
	// connection before any HTTP/2 answer.
	pod := runningPods(t, ctx, vizNS, "app=echo")[0]
	r := command(ctx, nil, nil, "nsenter", "--net=/var/run/netns/"+cluster.DefaultName,
		"curl", "-sSkv", "--max-time", "10", fmt.Sprintf("https://%s:%d/", pod.Status.PodIP, names.TapPort))
	reached := strings.Contains(r.stderr, "SSL connection using TLSv1.3")
	answered := strings.Contains(r.stderr, "< HTTP/")
	t.Logf("curl to the tap port without mesh-viz's certificate: %v; TLS reached: %v, answered: %v", r.err, reached, answered)
	if r.err == nil || !reached || answered {
		t.Errorf("a client without mesh-viz's certificate: %v\n%s\nwant the TLS handshake to reach the proxy and the connection dropped unanswered", r.err, r.stderr)
	}
}

// testVizOutOfReach is issue 12's attack: an unmeshed pod of another
// namespace, which got 200 from /api/v1/stat on the controller's pod IP,
// now finds nothing listening on 8085, neither on mesh-viz's pod IP (its
// API is on loopback) nor on the controller's (viz left it); mesh-viz's
// admin port answers the same pod, so the refusal is the listener's, not
// the network's.
func testVizOutOfReach(t *testing.T, ctx context.Context) {
	outsider := newPodClient(t, ctx, vizOutsiderNS, "outsider")
	vizPod := runningPods(t, ctx, manifests.DefaultNamespace, manifests.NameLabel+"=mesh-viz")[0]
	controller := runningPods(t, ctx, manifests.DefaultNamespace, manifests.NameLabel+"="+manifests.ControllerName)[0]
	if a := outsider.get(ctx, net.JoinHostPort(vizPod.Status.PodIP, "9990"), "mesh-viz", "/ready"); a.status != http.StatusOK {
		t.Fatalf("outsider -> mesh-viz's admin port: %v; want 200, or the test proves nothing", a)
	}
	for _, p := range []corev1.Pod{vizPod, controller} {
		addr := net.JoinHostPort(p.Status.PodIP, fmt.Sprint(vizv1.Port))
		a := outsider.get(ctx, addr, "mesh-viz", vizv1.PathStat+"?kind=deploy")
		t.Logf("outsider -> %s (%s) %s: %v", p.Name, addr, vizv1.PathStat, a)
		if !errors.Is(a.err, syscall.ECONNREFUSED) {
			t.Errorf("outsider -> %s (%s): %v, want the connection refused", p.Name, addr, a)
		}
	}
}

// testDashboard serves `mesh viz dashboard` and drives it in headless
// Chromium with playwright-core (test/e2e/dashboard/check.mjs): the demo's
// deployments show, a chart updates, the graph has edges, tap streams. The
// screenshot is kept under build/artifacts.
func testDashboard(t *testing.T, ctx context.Context) {
	waitDeployments(t, ctx, demoNS, 4*time.Minute)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2e.mesh, "viz", "dashboard", "--port", "0", "--show=false")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e2e.kubeconfig)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()
	url := ""
	sc := bufio.NewScanner(out)
	for url == "" && sc.Scan() {
		url = regexp.MustCompile(`http://127\.0\.0\.1:[0-9]+`).FindString(sc.Text())
	}
	if url == "" {
		t.Fatalf("mesh viz dashboard printed no URL: %v\nstderr: %s", sc.Err(), stderr.String())
	}
	go func() {
		for sc.Scan() { // keep draining, so the command never blocks on stdout
		}
	}()
	shot := filepath.Join(e2e.root, "build", "artifacts", "dashboard.png")
	if err := os.MkdirAll(filepath.Dir(shot), 0o755); err != nil {
		t.Fatal(err)
	}
	check := exec.CommandContext(ctx, "node", filepath.Join(e2e.root, "test", "e2e", "dashboard", "check.mjs"),
		"--url", url, "--namespace", demoNS, "--deployments", "web,catalog,orders,payments,loadgen",
		"--screenshot", shot, "--tap-resource", "deploy/web")
	check.Dir = filepath.Join(e2e.root, "test", "e2e", "dashboard")
	b, err := check.CombinedOutput()
	t.Logf("check.mjs against %s:\n%s", url, b)
	if err != nil {
		t.Fatalf("the dashboard check failed: %v\nmesh viz dashboard said: %s", err, stderr.String())
	}
	t.Logf("screenshot: %s", shot)
}

// testSeriesCount counts what the demo's busiest proxy, web's (inbound
// from loadgen, outbound to catalog over gRPC and to orders over h2c),
// exports: docs/metrics.md promises a few hundred series at most.
func testSeriesCount(t *testing.T, ctx context.Context) {
	pod := runningPods(t, ctx, demoNS, "app.kubernetes.io/name=web")[0]
	raw, err := e2e.client.CoreV1().Pods(pod.Namespace).
		ProxyGet("http", pod.Name, fmt.Sprint(names.AdminPort), "metrics", nil).DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Prometheus' own linter, on what a live proxy exports.
	lint := exec.CommandContext(ctx, "promtool", "check", "metrics")
	lint.Stdin = bytes.NewReader(raw)
	if out, err := lint.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics on web's proxy: %v\n%s", err, out)
	}
	fams, err := metricstest.Parse(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	mesh, all := 0, 0
	for name, f := range fams {
		n := len(f.GetMetric())
		if f.GetType().String() == "HISTOGRAM" {
			n *= len(f.GetMetric()[0].GetHistogram().GetBucket()) + 2 // _bucket, _sum, _count
		}
		all += n
		if strings.HasPrefix(name, "mesh_proxy_") {
			mesh += n
		}
	}
	t.Logf("web's proxy exports %d series, %d of them mesh_proxy_*", all, mesh)
	if mesh > 500 {
		t.Errorf("%d mesh_proxy_* series on one demo proxy, want a few hundred at most (docs/metrics.md)", mesh)
	}
}

// prometheus is a real Prometheus (Debian's package) scraping the echo
// pods' proxies every 5 s from inside the node's network namespace.
type prometheus struct {
	url string
}

func startPrometheus(t *testing.T, ctx context.Context, pods []corev1.Pod) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found: install Debian's prometheus package (make deps)")
	}
	dir := t.TempDir()
	var targets strings.Builder
	for _, p := range pods {
		fmt.Fprintf(&targets, "      - targets: ['%s:%d']\n        labels: {namespace: %s, pod: %s}\n", p.Status.PodIP, names.AdminPort, p.Namespace, p.Name)
	}
	config := "global:\n  scrape_interval: 5s\nscrape_configs:\n  - job_name: mesh-proxy\n    static_configs:\n" + targets.String()
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	// Its port must be free in the node's namespace, which this process is
	// not in: try a few random ones.
	for range 5 {
		addr := fmt.Sprintf("%s:%d", cluster.NodeIP, 20000+rand.IntN(20000))
		cmd := exec.CommandContext(ctx, "nsenter", "--net=/var/run/netns/"+cluster.DefaultName, bin,
			"--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address="+addr)
		var log lockedBuffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Kill()
			<-exited
		}
		deadline := time.After(30 * time.Second)
	wait:
		for !strings.Contains(log.String(), "Server is ready to receive web requests") {
			select {
			case <-exited:
				break wait
			case <-deadline:
				stop()
				t.Fatalf("prometheus not ready after 30s:\n%s", log.String())
			case <-time.After(200 * time.Millisecond):
			}
		}
		select {
		case <-exited:
			if strings.Contains(log.String(), "address already in use") {
				continue
			}
			t.Fatalf("prometheus exited:\n%s", log.String())
		default:
		}
		t.Cleanup(stop)
		t.Logf("prometheus at http://%s scraping %d pod(s)", addr, len(pods))
		return &prometheus{url: "http://" + addr}
	}
	t.Fatal("no free port for prometheus after 5 tries")
	return nil
}

// query returns the value of an instant query that yields one sample.
func (p *prometheus) query(ctx context.Context, q string) (float64, error) {
	r := command(ctx, nil, nil, "curl", "-sf", "--max-time", "10", "--get", "--data-urlencode", "query="+q, p.url+"/api/v1/query")
	if r.err != nil {
		return 0, fmt.Errorf("query %s: %v %s", q, r.err, r.stderr)
	}
	var res struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		return 0, fmt.Errorf("query %s: %v in %q", q, err, r.stdout)
	}
	if len(res.Data.Result) != 1 {
		return 0, fmt.Errorf("query %s: %d samples, want 1: %s", q, len(res.Data.Result), r.stdout)
	}
	var v float64
	if s, ok := res.Data.Result[0].Value[1].(string); ok {
		fmt.Sscan(s, &v)
	}
	return v, nil
}

// testPrometheusAgrees compares, once the load has ended and both have
// scraped since, the number of responses Prometheus sums over echo's
// proxies with the total mesh viz reports: the counters no longer move,
// so they must be equal.
func testPrometheusAgrees(t *testing.T, ctx context.Context, prom *prometheus) {
	const q = `sum(mesh_proxy_http_responses_total{namespace="` + vizNS + `", direction="inbound"})`
	var fromProm float64
	var row vizv1.StatRow
	poll(t, ctx, 60*time.Second, "Prometheus and mesh viz agree on the total", func(ctx context.Context) (bool, string, error) {
		v, err := prom.query(ctx, q)
		if err != nil {
			return false, err.Error(), nil
		}
		var list vizv1.StatList
		vizJSON(t, ctx, &list, "stat", "deploy", "echo", "-n", vizNS)
		if len(list.Rows) != 1 {
			return false, fmt.Sprintf("%d rows", len(list.Rows)), nil
		}
		fromProm, row = v, list.Rows[0]
		return fromProm == float64(row.TotalRequests) && fromProm > 0,
			fmt.Sprintf("prometheus %v, mesh viz %d", fromProm, row.TotalRequests), nil
	})
	t.Logf("after the load: Prometheus sums %v responses over echo's proxies, mesh viz %d", fromProm, row.TotalRequests)
	want := float64(vizRPS) * vizLoadFor.Seconds()
	if math.Abs(fromProm-want) > 0.1*want {
		t.Errorf("%v responses in all, want about %v (%d rps for %s)", fromProm, want, vizRPS, vizLoadFor)
	}
}

func pct(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", *p*100)
}

func ms(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.1fms", *p)
}
