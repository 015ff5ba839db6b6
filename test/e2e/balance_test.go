package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

const balanceNS = "e2e-balance"

// TestBalancing runs the destination service and the proxies' peak-EWMA
// balancing against real EndpointSlices: scaling under load, a slow
// replica, a failing replica, and the controller going away under load.
// The load comes from loadgen Jobs in the meshed namespace; a Job that
// completes proves that none of its requests failed (--max-failures 0).
func TestBalancing(t *testing.T) {
	needEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	mustRun(t, ctx, []byte(namespaceManifest(balanceNS)), e2e.kubectl, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, balanceNS)
	})
	steps := []struct {
		name string
		run  func(*testing.T, context.Context)
	}{
		{"scale up and down under load without a failed request", testScaleUnderLoad},
		{"a replica 50ms slower gets under 10% of requests", testSlowReplica},
		{"a replica answering 503 is ejected and probed back", testFailingReplica},
		{"the controller going away fails no request to known destinations", testControllerDown},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) { s.run(t, ctx) })
	}
}

// installs counts the tests that need the mesh now. The tests that run in
// parallel share one install: the first of them installs, the last
// uninstalls, and no two run `mesh install` or `mesh uninstall` at once.
var installs struct {
	sync.Mutex
	users int
}

// installArgs is the shared install: with the Jaeger of --with-jaeger,
// which every proxy exports its spans to, and a sample rate of 0, so that
// only requests that arrive sampled, or in a namespace that says
// otherwise (TestTracing's), are traced: the other tests' traffic costs
// Jaeger nothing.
var installArgs = []string{"install", "--with-jaeger", "--tracing-sample-rate", "0"}

// ensureInstalled runs `mesh install` (a no-op when installed) and
// uninstalls when the test ends, unless a test running alongside still
// needs the mesh.
func ensureInstalled(t *testing.T, ctx context.Context) {
	t.Helper()
	installs.Lock()
	defer installs.Unlock()
	mustRun(t, ctx, nil, e2e.mesh, installArgs...)
	installs.users++
	t.Cleanup(func() {
		installs.Lock()
		defer installs.Unlock()
		if installs.users--; installs.users > 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if r := command(ctx, nil, nil, e2e.mesh, "uninstall"); r.err != nil {
			t.Errorf("cleanup: mesh uninstall: %v\n%s%s", r.err, r.stdout, r.stderr)
		}
	})
}

func namespaceManifest(name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %s
  annotations:
    %s: %s
`, name, names.AnnotationInject, names.Enabled)
}

// plainNamespaceManifest is a namespace outside the mesh.
func plainNamespaceManifest(name string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", name)
}

// echoManifest is a Deployment of `demo echo` whose pods carry the label
// backend=<backend>, which its Service selects. preStop keeps a stopping
// pod answering while the mesh learns it is gone, as any zero-downtime
// rollout needs.
func echoManifest(name, backend string, replicas int, args ...string) string {
	return echoManifestIn(balanceNS, name, backend, replicas, args...)
}

// echoManifestIn is echoManifest in namespace ns.
func echoManifestIn(ns, name, backend string, replicas int, args ...string) string {
	quoted := []string{`"echo"`}
	for _, a := range args {
		quoted = append(quoted, fmt.Sprintf("%q", a))
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  replicas: %[3]d
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s, backend: %[4]s}
    spec:
      terminationGracePeriodSeconds: 15
      containers:
        - name: echo
          image: ghcr.io/mesh-dev/mesh-demo:%[5]s
          imagePullPolicy: IfNotPresent
          args: [%[6]s]
          env:
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
          ports:
            - {name: http, containerPort: 8080}
            - {name: admin, containerPort: 9900}
          readinessProbe:
            httpGet: {path: /ready, port: admin}
            periodSeconds: 1
          lifecycle:
            preStop:
              sleep: {seconds: 3}
          securityContext:
            runAsNonRoot: true
            runAsUser: 65532
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata:
  name: %[4]s
  namespace: %[2]s
spec:
  selector: {backend: %[4]s}
  ports:
    - {name: http, port: 8080, targetPort: http}
`, name, ns, replicas, backend, e2e.version, strings.Join(quoted, ", "))
}

// loadJob is a loadgen Job sending rps requests per second to service for
// duration. With maxFailures 0 it fails on the first failed request.
func loadJob(name, service string, rps int, duration time.Duration, maxFailures int) string {
	return loadJobIn(balanceNS, name, service, "/", "", rps, duration, maxFailures)
}

// loadJobIn is loadJob in namespace ns, requesting path, with the pod
// annotation config.mesh.dev/opaque-ports=<opaque> unless it is "".
func loadJobIn(ns, name, service, path, opaque string, rps int, duration time.Duration, maxFailures int) string {
	annotations := "{}"
	if opaque != "" {
		annotations = fmt.Sprintf("{%s: %q}", names.AnnotationOpaquePorts, opaque)
	}
	return fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  backoffLimit: 0
  template:
    metadata:
      labels: {job: %[1]s}
      annotations: %[8]s
    spec:
      restartPolicy: Never
      containers:
        - name: loadgen
          image: ghcr.io/mesh-dev/mesh-demo:%[3]s
          imagePullPolicy: IfNotPresent
          args: ["loadgen", "--target", "%[4]s:8080", "--path", "%[9]s", "--rps", "%[5]d", "--concurrency", "4",
                 "--duration", "%[6]s", "--interval", "5s", "--max-failures", "%[7]d", "--admin-addr", ""]
          securityContext:
            runAsNonRoot: true
            runAsUser: 65532
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
`, name, ns, e2e.version, service, rps, duration, maxFailures, annotations, path)
}

// startLoad creates the Job and returns its pod once it runs, with the
// proxy injected (a load that bypassed the mesh would prove nothing).
func startLoad(t *testing.T, ctx context.Context, manifest, job string) *corev1.Pod {
	t.Helper()
	return startLoadIn(t, ctx, balanceNS, manifest, job, true)
}

// startLoadIn is startLoad in namespace ns; meshed says whether the pod
// must have the proxy.
func startLoadIn(t *testing.T, ctx context.Context, ns, manifest, job string, meshed bool) *corev1.Pod {
	t.Helper()
	mustRun(t, ctx, []byte(manifest), e2e.kubectl, "apply", "-f", "-")
	var pod *corev1.Pod
	poll(t, ctx, 2*time.Minute, "pod of job "+job+" running", func(ctx context.Context) (bool, string, error) {
		pods, err := e2e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job=" + job})
		if err != nil || len(pods.Items) == 0 {
			return false, fmt.Sprint("no pod yet: ", err), nil
		}
		pod = &pods.Items[0]
		return pod.Status.Phase == corev1.PodRunning, "phase " + string(pod.Status.Phase), nil
	})
	if _, proxy := sidecars(pod); proxy != meshed {
		t.Fatalf("load pod %s: proxy %v, want %v", pod.Name, proxy, meshed)
	}
	return pod
}

// waitJob waits for job to end and fails the test, with the loadgen's
// output, unless it completed.
func waitJob(t *testing.T, ctx context.Context, job string, timeout time.Duration) {
	t.Helper()
	waitJobIn(t, ctx, balanceNS, job, timeout)
}

// waitJobIn is waitJob in namespace ns.
func waitJobIn(t *testing.T, ctx context.Context, ns, job string, timeout time.Duration) {
	t.Helper()
	var failed string
	poll(t, ctx, timeout, "job "+job+" done", func(ctx context.Context) (bool, string, error) {
		j, err := e2e.client.BatchV1().Jobs(ns).Get(ctx, job, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		for _, c := range j.Status.Conditions {
			if c.Status == corev1.ConditionTrue && c.Type == batchv1.JobComplete {
				return true, "", nil
			}
			if c.Status == corev1.ConditionTrue && c.Type == batchv1.JobFailed {
				failed = c.Reason + ": " + c.Message
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("active=%d", j.Status.Active), nil
	})
	logs := command(ctx, nil, nil, e2e.kubectl, "logs", "-n", ns, "job/"+job, "-c", "loadgen")
	if failed != "" {
		t.Fatalf("job %s failed (%s); loadgen said:\n%s%s", job, failed, logs.stdout, logs.stderr)
	}
	t.Logf("job %s completed with no failed request; loadgen said:\n%s", job, lastLines(logs.stdout, 2))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// proxyDestination is one entry of a proxy's GET /destinations.
type proxyDestination struct {
	Authority string `json:"authority"`
	Endpoints []struct {
		Addr     string  `json:"addr"`
		RTTms    float64 `json:"rtt_estimate_ms"`
		Pending  int64   `json:"pending"`
		Failures int     `json:"consecutive_failures"`
		Ejected  bool    `json:"ejected"`
	} `json:"endpoints"`
}

// destinationOf returns what pod's proxy knows of authority.
func destinationOf(ctx context.Context, pod *corev1.Pod, authority string) (proxyDestination, error) {
	b, err := adminGet(ctx, pod, "/destinations")
	if err != nil {
		return proxyDestination{}, err
	}
	var all []proxyDestination
	if err := json.Unmarshal(b, &all); err != nil {
		return proxyDestination{}, fmt.Errorf("destinations of %s: %w", pod.Name, err)
	}
	for _, d := range all {
		if d.Authority == authority {
			return d, nil
		}
	}
	return proxyDestination{}, nil
}

// serviceAuthority is the ClusterIP:port the apps dial, which the proxy
// asks the controller about.
func serviceAuthority(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	svc, err := e2e.client.CoreV1().Services(balanceNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(svc.Spec.ClusterIP, "8080")
}

// readyEndpoints counts the ready endpoints of service's EndpointSlices.
func readyEndpoints(ctx context.Context, service string) (int, error) {
	slices, err := e2e.client.DiscoveryV1().EndpointSlices(balanceNS).List(ctx,
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range slices.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
				n++
			}
		}
	}
	return n, nil
}

// testScaleUnderLoad scales echo 1 -> 3 -> 1 while loadgen sends to it,
// prints how long each change took to reach the client's proxy after the
// EndpointSlices showed it, and needs the load to complete without one
// failed request.
func testScaleUnderLoad(t *testing.T, ctx context.Context) {
	mustRun(t, ctx, []byte(echoManifest("echo", "echo", 1)), e2e.kubectl, "apply", "-f", "-")
	waitDeployments(t, ctx, balanceNS, 3*time.Minute)
	authority := serviceAuthority(t, ctx, "echo")
	client := startLoad(t, ctx, loadJob("load-scale", "echo", 40, 50*time.Second, 0), "load-scale")
	waitProxySet(t, ctx, client, authority, 1, "echo", time.Now())
	for _, replicas := range []int{3, 1} {
		start := time.Now()
		mustRun(t, ctx, nil, e2e.kubectl, "scale", "-n", balanceNS, "deployment/echo", fmt.Sprintf("--replicas=%d", replicas))
		waitProxySet(t, ctx, client, authority, replicas, "echo", start)
		time.Sleep(5 * time.Second) // let the load run on the new set
	}
	waitJob(t, ctx, "load-scale", 2*time.Minute)
}

// waitProxySet polls the EndpointSlices and the client's proxy until both
// hold want endpoints, and logs how far apart they got there.
func waitProxySet(t *testing.T, ctx context.Context, client *corev1.Pod, authority string, want int, service string, start time.Time) {
	t.Helper()
	var slicesAt, proxyAt time.Time
	poll(t, ctx, 3*time.Minute, fmt.Sprintf("%d endpoints of %s in the proxy", want, service), func(ctx context.Context) (bool, string, error) {
		n, err := readyEndpoints(ctx, service)
		if err != nil {
			return false, err.Error(), nil
		}
		if n == want && slicesAt.IsZero() {
			slicesAt = time.Now()
		}
		d, err := destinationOf(ctx, client, authority)
		if err != nil {
			return false, err.Error(), nil
		}
		if len(d.Endpoints) == want && !slicesAt.IsZero() && proxyAt.IsZero() {
			proxyAt = time.Now()
		}
		return !proxyAt.IsZero(), fmt.Sprintf("EndpointSlices: %d ready, proxy: %d endpoints", n, len(d.Endpoints)), nil
	})
	t.Logf("%s at %d endpoints: EndpointSlices after %s, the client's proxy %s later (polled every 0.5s)",
		service, want, slicesAt.Sub(start).Round(time.Millisecond), proxyAt.Sub(slicesAt).Round(time.Millisecond))
}

// inboundRequests is how many requests pod's own proxy let in on 8080.
func inboundRequests(ctx context.Context, pod *corev1.Pod) (float64, error) {
	m, err := scrape(ctx, pod)
	if err != nil {
		return 0, err
	}
	return m.Sum("mesh_proxy_http_requests_total", "direction", "inbound",
		"target_addr", net.JoinHostPort(pod.Status.PodIP, "8080")), nil
}

// backendPods returns the running pods labelled backend=<backend>.
func backendPods(t *testing.T, ctx context.Context, backend string) []*corev1.Pod {
	t.Helper()
	list, err := e2e.client.CoreV1().Pods(balanceNS).List(ctx, metav1.ListOptions{LabelSelector: "backend=" + backend})
	if err != nil {
		t.Fatal(err)
	}
	var pods []*corev1.Pod
	for i := range list.Items {
		if p := &list.Items[i]; p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			pods = append(pods, p)
		}
	}
	return pods
}

// testSlowReplica: three replicas behind one Service, one answering 50 ms
// later; round robin would send it a third of the requests.
func testSlowReplica(t *testing.T, ctx context.Context) {
	mustRun(t, ctx, []byte(echoManifest("lat-fast", "lat", 2)+"---\n"+echoManifest("lat-slow", "lat", 1, "--latency", "50ms")),
		e2e.kubectl, "apply", "-f", "-")
	waitDeployments(t, ctx, balanceNS, 3*time.Minute)
	startLoad(t, ctx, loadJob("load-lat", "lat", 100, 20*time.Second, 0), "load-lat")
	waitJob(t, ctx, "load-lat", 2*time.Minute)
	var total, slow float64
	for _, pod := range backendPods(t, ctx, "lat") {
		n, err := inboundRequests(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if pod.Labels["app"] == "lat-slow" {
			slow += n
		}
		t.Logf("%s received %.0f requests", pod.Name, n)
	}
	if total == 0 {
		t.Fatal("the backends' proxies counted no request")
	}
	share := slow / total
	t.Logf("the slow replica got %.1f%% of %.0f requests (round robin: 33%%)", 100*share, total)
	if share >= 0.10 {
		t.Errorf("the slow replica got %.1f%% of requests, want under 10%%", 100*share)
	}
}

// setFault changes a demo pod's injected fault through its admin port.
func setFault(t *testing.T, ctx context.Context, pod *corev1.Pod, fault string) {
	t.Helper()
	err := e2e.client.CoreV1().RESTClient().Put().Namespace(pod.Namespace).Resource("pods").
		Name(pod.Name + ":9900").SubResource("proxy").Suffix("fault").Body([]byte(fault)).Do(ctx).Error()
	if err != nil {
		t.Fatalf("PUT /fault %s on %s: %v", fault, pod.Name, err)
	}
}

// testFailingReplica: one of three replicas starts answering 503. The
// client's proxy must eject it (it then gets almost nothing), and once it
// heals, probe it back in.
func testFailingReplica(t *testing.T, ctx context.Context) {
	mustRun(t, ctx, []byte(echoManifest("err", "err", 3, "--fail-status", "503")), e2e.kubectl, "apply", "-f", "-")
	waitDeployments(t, ctx, balanceNS, 3*time.Minute)
	pods := backendPods(t, ctx, "err")
	if len(pods) != 3 {
		t.Fatalf("%d err pods, want 3", len(pods))
	}
	bad := pods[0]
	badAddr := net.JoinHostPort(bad.Status.PodIP, "8080")
	setFault(t, ctx, bad, `{"fail_rate":1}`)
	authority := serviceAuthority(t, ctx, "err")
	client := startLoad(t, ctx, loadJob("load-err", "err", 50, 3*time.Minute, -1), "load-err")

	ejected := func(want bool) func(ctx context.Context) (bool, string, error) {
		return func(ctx context.Context) (bool, string, error) {
			d, err := destinationOf(ctx, client, authority)
			if err != nil {
				return false, err.Error(), nil
			}
			for _, ep := range d.Endpoints {
				if ep.Addr == badAddr {
					return ep.Ejected == want, fmt.Sprintf("ejected=%v", ep.Ejected), nil
				}
			}
			return false, fmt.Sprintf("%s not among %d endpoints", badAddr, len(d.Endpoints)), nil
		}
	}
	poll(t, ctx, time.Minute, "the 503 replica ejected", ejected(true))
	before := counts(t, ctx, pods)
	time.Sleep(10 * time.Second)
	after := counts(t, ctx, pods)
	badGot, othersGot := after[0]-before[0], after[1]+after[2]-before[1]-before[2]
	t.Logf("while ejected, 10s: the 503 replica got %.0f requests (probes), the others %.0f", badGot, othersGot)
	if othersGot == 0 || badGot/(badGot+othersGot) >= 0.05 {
		t.Errorf("while ejected the 503 replica got %.0f of %.0f requests, want under 5%%", badGot, badGot+othersGot)
	}

	setFault(t, ctx, bad, `{"fail_rate":0}`)
	healed := time.Now()
	poll(t, ctx, 90*time.Second, "the healed replica probed back in", ejected(false))
	t.Logf("the healed replica was back in the set %s after it healed", time.Since(healed).Round(100*time.Millisecond))
	// Back in the set, it competes on cost again: peak-EWMA may hold it
	// off for a few seconds after one slow answer (a peak decays with a
	// 10s time constant), so wait for traffic rather than sample a window.
	base := counts(t, ctx, pods)[0]
	poll(t, ctx, 30*time.Second, "the healed replica back in rotation", func(ctx context.Context) (bool, string, error) {
		got := counts(t, ctx, pods)[0] - base
		return got >= 20, fmt.Sprintf("%.0f requests since it was probed back", got), nil
	})
	mustRun(t, ctx, nil, e2e.kubectl, "delete", "job", "-n", balanceNS, "load-err", "--wait=false")
}

// counts reads the inbound request count of each pod's proxy.
func counts(t *testing.T, ctx context.Context, pods []*corev1.Pod) []float64 {
	t.Helper()
	out := make([]float64, len(pods))
	for i, p := range pods {
		n, err := inboundRequests(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = n
	}
	return out
}

// testControllerDown scales the controller to zero while loadgen runs
// against a destination its proxy already knows: the last known endpoints
// keep serving, so no request fails. The controller comes back after.
func testControllerDown(t *testing.T, ctx context.Context) {
	authority := serviceAuthority(t, ctx, "echo")
	client := startLoad(t, ctx, loadJob("load-ctl", "echo", 40, 40*time.Second, 0), "load-ctl")
	waitProxySet(t, ctx, client, authority, 1, "echo", time.Now())
	ns := manifests.DefaultNamespace
	deploy := "deployment/" + manifests.ControllerName
	mustRun(t, ctx, nil, e2e.kubectl, "scale", "-n", ns, deploy, "--replicas=0")
	defer func() {
		mustRun(t, ctx, nil, e2e.kubectl, "scale", "-n", ns, deploy, "--replicas=1")
		mustRun(t, ctx, nil, e2e.kubectl, "rollout", "status", "-n", ns, deploy, "--timeout=3m")
	}()
	poll(t, ctx, time.Minute, "controller pods gone", func(ctx context.Context) (bool, string, error) {
		pods, err := e2e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + manifests.ControllerName})
		if err != nil {
			return false, err.Error(), nil
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d left", len(pods.Items)), nil
	})
	t.Log("controller down; the load keeps running for 15s")
	time.Sleep(15 * time.Second)
	if d, err := destinationOf(ctx, client, authority); err != nil || len(d.Endpoints) != 1 {
		t.Errorf("with the controller down the proxy holds %+v (%v), want the last known endpoint", d, err)
	}
	waitJob(t, ctx, "load-ctl", 2*time.Minute)
}
