package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	catalogv1 "github.com/mesh-dev/mesh/api/demo/catalog/v1"
	"github.com/mesh-dev/mesh/install/cluster"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/testdata/demo/payments"
)

// podClient sends requests from inside a pod's network namespace: the test
// process opens its sockets there (cluster.DialInNetns), so they are the
// pod's own connections. In a meshed pod the interception rules send them
// through the pod's proxy (the test runs as root, not as the proxy's UID),
// which proves the pod's identity to the server; in an unmeshed pod they
// go out in plain text. This lets the test use real clients (net/http,
// grpc-go, the payments line protocol) and read their answers exactly,
// with no client binary in the pod.
type podClient struct {
	pod  *corev1.Pod
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// newPodClient finds the running pod labelled app=<app> in ns and the
// network namespace of its container "app".
func newPodClient(t *testing.T, ctx context.Context, ns, app string) *podClient {
	t.Helper()
	pod := runningPods(t, ctx, ns, "app="+app)[0]
	var id string
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == "app" {
			_, id, _ = strings.Cut(cs.ContainerID, "://")
		}
	}
	if id == "" {
		t.Fatalf("pod %s/%s: no container ID for container app", ns, pod.Name)
	}
	netns, err := containerNetns(id)
	if err != nil {
		t.Fatalf("pod %s/%s: %v", ns, pod.Name, err)
	}
	return &podClient{pod: &pod, dial: cluster.DialInNetns(netns)}
}

// containerNetns returns the network namespace of a process of the
// container with this ID.
func containerNetns(id string) (string, error) {
	proc, err := containerProc(id)
	if err != nil {
		return "", err
	}
	return filepath.Join(proc, "ns", "net"), nil
}

// containerProc returns /proc/<pid> of a process of the container with
// this ID, found by the container's cgroup (whose path ends in its ID
// under containerd, with either cgroup driver).
func containerProc(id string) (string, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return "", err
	}
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cgroup"))
		if err == nil && bytes.Contains(b, []byte(id)) {
			return filepath.Join("/proc", p.Name()), nil
		}
	}
	return "", fmt.Errorf("no process of container %s in /proc", id)
}

// answer is what an HTTP request got: a status and body, or an error when
// the connection failed or closed before an answer.
type answer struct {
	status  int
	body    string
	err     error
	elapsed time.Duration
}

func (a answer) String() string {
	if a.err != nil {
		return fmt.Sprintf("error after %s: %v", a.elapsed.Round(time.Millisecond), a.err)
	}
	return fmt.Sprintf("%d %q after %s", a.status, strings.TrimSpace(a.body), a.elapsed.Round(time.Millisecond))
}

// fromApp reports whether the answer is demo echo's own ("echo from POD").
func (a answer) fromApp() bool {
	return a.err == nil && a.status == http.StatusOK && strings.HasPrefix(a.body, "echo from ")
}

// get sends GET path to addr (an IP:port) with Host host, on a connection
// of its own, as an application of the pod would.
func (c *podClient) get(ctx context.Context, addr, host, path string) answer {
	return c.do(ctx, http.MethodGet, addr, host, path, nil)
}

// do sends method path to addr with Host host (addr's own when "") and
// header, on a connection of its own, within 5 seconds.
func (c *podClient) do(ctx context.Context, method, addr, host, path string, header http.Header) answer {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tr := &http.Transport{DialContext: c.dial, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
	if err != nil {
		return answer{err: err}
	}
	if host != "" {
		req.Host = host
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	start := time.Now()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return answer{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return answer{status: resp.StatusCode, body: string(body), err: err, elapsed: time.Since(start)}
}

// pay sends one PAY line to the payments server at addr and returns its
// answer line; an error means no answer came (closed, reset or timed out).
func (c *podClient) pay(ctx context.Context, addr, orderID string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	conn, err := c.dial(ctx, "tcp", addr)
	if err != nil {
		return "", time.Since(start), err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, payments.Request{OrderID: orderID, Cents: 1999}.Format()); err != nil {
		return "", time.Since(start), fmt.Errorf("send: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return line, time.Since(start), fmt.Errorf("read the answer (got %q): %w", line, err)
	}
	return line, time.Since(start), nil
}

// listProducts calls the catalog's ListProducts with grpc-go over h2c, the
// way the demo's web front end does, and returns how many products came.
func (c *podClient) listProducts(ctx context.Context, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return c.dial(ctx, "tcp", addr) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("catalog:9090"))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	resp, err := catalogv1.NewCatalogClient(conn).ListProducts(ctx, &catalogv1.ListProductsRequest{})
	if err != nil {
		return 0, err
	}
	return len(resp.GetProducts()), nil
}

// policyFixture is testdata/policy.yaml with the test's namespaces.
func policyFixture(t *testing.T) string {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join(e2e.root, "test", "e2e", "testdata", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, map[string]string{"NS": policyNS, "DenyNS": policyDenyNS, "AuditNS": policyAuditNS}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// demoApp is a one-replica Deployment of a demo component, in container
// "app", with a Service of the same name when it serves.
type demoApp struct {
	ns, name string
	// sa is the pod's ServiceAccount; "" is the namespace's default.
	sa   string
	args []string // the demo subcommand and its flags
	// port is the main port, named portName, and the Service's; zero
	// for a client, which serves nothing anyone calls.
	port     int
	portName string
	// annotations go on the pod template.
	annotations map[string]string
	// liveness adds a liveness probe of GET /live on the main port, on top
	// of the readiness probe every server has on the admin port.
	liveness bool
}

func (a demoApp) manifest() string {
	sa := a.sa
	if sa == "" {
		sa = "default"
	}
	annotations, _ := json.Marshal(a.annotations)
	if a.annotations == nil {
		annotations = []byte("{}")
	}
	args := make([]string, len(a.args))
	for i, s := range a.args {
		args[i] = strconv.Quote(s)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata:
      labels: {app: %[1]s}
      annotations: %[3]s
    spec:
      serviceAccountName: %[4]s
      terminationGracePeriodSeconds: 5
      containers:
        - name: app
          image: ghcr.io/mesh-dev/mesh-demo:%[5]s
          imagePullPolicy: IfNotPresent
          args: [%[6]s]
          env:
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
          securityContext:
            runAsNonRoot: true
            runAsUser: 65532
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
`, a.name, a.ns, annotations, sa, e2e.version, strings.Join(args, ", "))
	if a.port == 0 {
		return b.String()
	}
	fmt.Fprintf(&b, `          ports:
            - {name: %[1]s, containerPort: %[2]d}
            - {name: admin, containerPort: 9900}
          readinessProbe:
            httpGet: {path: /ready, port: admin}
            periodSeconds: 1
`, a.portName, a.port)
	if a.liveness {
		fmt.Fprintf(&b, `          livenessProbe:
            httpGet: {path: /live, port: %s}
            periodSeconds: 1
            failureThreshold: 3
`, a.portName)
	}
	fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  selector: {app: %[1]s}
  ports:
    - {name: %[3]s, port: %[4]d, targetPort: %[3]s}
`, a.name, a.ns, a.portName, a.port)
	return b.String()
}

// policyNamespaceManifest is a meshed namespace whose default inbound
// policy is policy.
func policyNamespaceManifest(name, policy string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %s
  annotations:
    %s: %s
    %s: %s
`, name, names.AnnotationInject, names.Enabled, names.AnnotationDefaultInboundPolicy, policy)
}

// serviceAddr is the ClusterIP:port of a Service.
func serviceAddr(t *testing.T, ctx context.Context, ns, name string) string {
	t.Helper()
	svc, err := e2e.client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(svc.Spec.Ports[0].Port))
}

// restartCounts maps "pod/container" to its restart count, sidecars (init
// containers that restart Always) included, for every pod of ns.
func restartCounts(t *testing.T, ctx context.Context, ns string) map[string]int32 {
	t.Helper()
	pods, err := e2e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int32{}
	for _, p := range pods.Items {
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			out[p.Name+"/"+cs.Name] = cs.RestartCount
		}
	}
	return out
}

// proxyLogs is what the mesh-proxy container of pod logged.
func proxyLogs(t *testing.T, ctx context.Context, pod *corev1.Pod) string {
	t.Helper()
	return mustRun(t, ctx, nil, e2e.kubectl, "logs", "-n", pod.Namespace, pod.Name, "-c", names.ProxyContainerName).stdout
}
