package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/portforward"

	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// result is what a command printed and how it ended.
type result struct {
	stdout, stderr string
	err            error
}

// command runs a binary as a user would, with KUBECONFIG pointing at the
// local cluster unless env overrides it.
func command(ctx context.Context, stdin []byte, env []string, bin string, args ...string) result {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+e2e.kubeconfig), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return result{stdout: out.String(), stderr: errOut.String(), err: err}
}

// mustRun runs bin and fails the test, with everything it printed, when it
// fails.
func mustRun(t *testing.T, ctx context.Context, stdin []byte, bin string, args ...string) result {
	t.Helper()
	r := command(ctx, stdin, nil, bin, args...)
	if r.err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r
}

var demoImage = regexp.MustCompile(`(ghcr\.io/mesh-dev/mesh-demo):\S+`)

// demoManifest reads a manifest of testdata/demo/k8s with the demo image
// tagged with this tree's VERSION, as `make demo` applies it.
func demoManifest(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e2e.root, "testdata", "demo", "k8s", name))
	if err != nil {
		t.Fatal(err)
	}
	return demoImage.ReplaceAll(b, []byte("${1}:"+e2e.version))
}

// poll calls cond every half second until it reports done, returns an
// error other than errRetry, or timeout passes; the last reason is in the
// failure.
func poll(t *testing.T, ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (done bool, why string, err error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var why string
	for {
		done, w, err := cond(ctx)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if done {
			return
		}
		why = w
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not done after %s: %s", what, timeout, why)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitDeployments waits until every Deployment of ns has all its replicas
// updated and available, and dumps the pods and events when they do not.
func waitDeployments(t *testing.T, ctx context.Context, ns string, timeout time.Duration) {
	t.Helper()
	defer func() {
		if t.Failed() {
			dumpNamespace(t, ns)
		}
	}()
	poll(t, ctx, timeout, "deployments in "+ns+" available", func(ctx context.Context) (bool, string, error) {
		list, err := e2e.client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		if len(list.Items) == 0 {
			return false, "no deployments yet", nil
		}
		var waiting []string
		for _, d := range list.Items {
			if !deploymentDone(d) {
				waiting = append(waiting, fmt.Sprintf("%s %d/%d", d.Name, d.Status.AvailableReplicas, *d.Spec.Replicas))
			}
		}
		return len(waiting) == 0, "waiting for " + strings.Join(waiting, ", "), nil
	})
}

func deploymentDone(d appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want &&
		s.AvailableReplicas == want && s.Replicas == want
}

// waitPodReady waits for one pod to be Ready and returns it.
func waitPodReady(t *testing.T, ctx context.Context, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	defer func() {
		if t.Failed() {
			dumpNamespace(t, ns)
		}
	}()
	poll(t, ctx, 2*time.Minute, "pod "+ns+"/"+name+" ready", func(ctx context.Context) (bool, string, error) {
		p, err := e2e.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		pod = p
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, "", nil
			}
		}
		return false, "phase " + string(p.Status.Phase), nil
	})
	return pod
}

// dumpNamespace logs the pods and events of ns, for a failure's diagnosis.
func dumpNamespace(t *testing.T, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"get", "pods", "-n", ns, "-o", "wide"},
		{"get", "events", "-n", ns, "--sort-by=.lastTimestamp"},
	} {
		r := command(ctx, nil, nil, e2e.kubectl, args...)
		t.Logf("kubectl %s:\n%s%s", strings.Join(args, " "), r.stdout, r.stderr)
	}
}

// sidecars reports whether pod was injected: the init container and the
// proxy as a native sidecar (an init container that restarts Always).
func sidecars(pod *corev1.Pod) (initC, proxy bool) {
	for _, c := range pod.Spec.InitContainers {
		switch c.Name {
		case names.InitContainerName:
			initC = true
		case names.ProxyContainerName:
			proxy = c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == names.ProxyContainerName {
			proxy = false // a plain sidecar would keep a Job running
		}
	}
	return initC, proxy
}

// scrape reads a pod's proxy metrics through the API server's pod proxy,
// the way a user would reach them with `kubectl get --raw`.
func scrape(ctx context.Context, pod *corev1.Pod) (metricstest.Families, error) {
	b, err := e2e.client.CoreV1().Pods(pod.Namespace).
		ProxyGet("http", pod.Name, fmt.Sprint(names.AdminPort), "metrics", nil).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("scrape the proxy of %s: %w", pod.Name, err)
	}
	return metricstest.Parse(bytes.NewReader(b))
}

// adminGet GETs path on the admin port of pod's proxy through a
// port-forward, as `kubectl port-forward` reaches it, and returns the body
// of a 200. The proxy answers every path but /metrics, /ready and /live
// only on its loopback address, which a port-forward dials and the API
// server's pod proxy (the pod's IP) does not.
func adminGet(ctx context.Context, pod *corev1.Pod, path string) ([]byte, error) {
	ref := pod.Namespace + "/" + pod.Name
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	local, forwarded, err := forwardPodPort(ctx, pod, names.AdminPort)
	if err != nil {
		return nil, fmt.Errorf("port-forward to %s: %w", ref, err)
	}
	defer func() {
		cancel()
		<-forwarded
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+local+path, nil)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s of %s through a port-forward: %w", path, ref, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s of %s through a port-forward: %w", path, ref, err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s of %s through a port-forward: %s: %s", path, ref, res.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// forwardPodPort forwards a free port of 127.0.0.1 to port of pod until
// ctx ends, over client-go's WebSocket tunnel (the API server's
// port-forward protocol; SPDY alone is its fallback). It returns the
// local address, and a channel closed once the forward has stopped.
func forwardPodPort(ctx context.Context, pod *corev1.Pod, port int) (string, <-chan struct{}, error) {
	u := e2e.client.CoreV1().RESTClient().Post().Namespace(pod.Namespace).Resource("pods").
		Name(pod.Name).SubResource("portforward").URL()
	dialer, err := portforward.NewSPDYOverWebsocketDialer(u, e2e.rest)
	if err != nil {
		return "", nil, err
	}
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddressesWithContext(ctx, dialer, []string{"127.0.0.1"},
		[]string{fmt.Sprintf("0:%d", port)}, ready, io.Discard, io.Discard)
	if err != nil {
		return "", nil, err
	}
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		defer close(done)
		errc <- pf.ForwardPorts()
	}()
	select {
	case <-ready:
	case err := <-errc:
		return "", nil, err
	case <-ctx.Done():
		<-done
		return "", nil, ctx.Err()
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		return "", done, fmt.Errorf("no local port: %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0].Local), done, nil
}

// deleteNamespace deletes ns and waits until it is gone.
func deleteNamespace(t *testing.T, ctx context.Context, ns string) {
	t.Helper()
	err := e2e.client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Errorf("delete namespace %s: %v", ns, err)
		return
	}
	poll(t, ctx, 3*time.Minute, "namespace "+ns+" deleted", func(ctx context.Context) (bool, string, error) {
		_, err := e2e.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		return false, fmt.Sprint("still there: ", err), nil
	})
}
