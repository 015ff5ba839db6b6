package kubelab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// NameLabel is how the demo, the control plane and the benchmarks' own
// workloads name their pods' component.
const NameLabel = "app.kubernetes.io/name"

// DeleteNamespace deletes namespace ns and waits until it is gone. A
// namespace of that name that does not carry label=true is not the
// benchmark's: it is left alone and is an error. leftover says the run is
// starting, so a namespace found is one an earlier run left behind.
func (l *Lab) DeleteNamespace(ctx context.Context, ns, label string, leftover bool) error {
	got, err := l.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if got.Labels[label] != "true" {
		return fmt.Errorf("namespace %s exists and is not this benchmark's (no label %s=true): choose another namespace", ns, label)
	}
	if leftover {
		l.logf("deleting namespace %s, left behind by an earlier run", ns)
	} else {
		l.logf("deleting namespace %s", ns)
	}
	err = l.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return Poll(ctx, 3*time.Minute, time.Second, "namespace "+ns+" gone", func(ctx context.Context) (bool, string, error) {
		_, err := l.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		return false, "still terminating", err
	})
}

// WaitDeployments waits until every Deployment in namespace ns is rolled
// out and ready, and there is at least one.
func (l *Lab) WaitDeployments(ctx context.Context, ns string, timeout time.Duration) error {
	return Poll(ctx, timeout, time.Second, "the Deployments of "+ns+" ready", func(ctx context.Context) (bool, string, error) {
		list, err := l.Client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, "", err
		}
		for i := range list.Items {
			if why := DeploymentNotReady(&list.Items[i]); why != "" {
				return false, why, nil
			}
		}
		return len(list.Items) > 0, "no Deployments yet", nil
	})
}

// DeploymentNotReady says why d is not fully rolled out and ready, or "".
func DeploymentNotReady(d *appsv1.Deployment) string {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	switch {
	case s.ObservedGeneration < d.Generation:
		return fmt.Sprintf("deployment %s: its controller has not seen the latest spec", d.Name)
	case s.UpdatedReplicas != want || s.ReadyReplicas != want || s.AvailableReplicas != want:
		return fmt.Sprintf("deployment %s: %d of %d pods updated, %d ready, %d available", d.Name, s.UpdatedReplicas, want, s.ReadyReplicas, s.AvailableReplicas)
	}
	return ""
}

// RunningPods returns the pods labelled NameLabel=app in ns that run, are
// ready and are not being deleted, by name.
func (l *Lab) RunningPods(ctx context.Context, ns, app string) ([]corev1.Pod, error) {
	list, err := l.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: NameLabel + "=" + app})
	if err != nil {
		return nil, err
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && PodReady(&p) {
			pods = append(pods, p)
		}
	}
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods, nil
}

// PodReady reports whether p's Ready condition is true.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// HasProxy reports whether the injector added the proxy to p, as a native
// sidecar or a plain container.
func HasProxy(p *corev1.Pod) bool {
	return ProxyContainer(p) != nil
}

// ProxyContainer returns p's proxy container, or nil when it has none.
func ProxyContainer(p *corev1.Pod) *corev1.Container {
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range cs {
			if cs[i].Name == names.ProxyContainerName {
				return &cs[i]
			}
		}
	}
	return nil
}

// PodNetns returns the network namespace of pod p as /proc/PID/ns/net of a
// process of its container named container. The process is found by its
// cgroup, whose path ends in the container's ID under containerd with
// either cgroup driver; the benchmark runs in the node's PID namespace.
func PodNetns(p *corev1.Pod, container string) (string, error) {
	var id string
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container {
			_, id, _ = strings.Cut(s.ContainerID, "://")
		}
	}
	if id == "" {
		return "", fmt.Errorf("pod %s/%s: no ID for container %s yet", p.Namespace, p.Name, container)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return "", err
	}
	for _, proc := range procs {
		if _, err := strconv.Atoi(proc.Name()); err != nil {
			continue
		}
		cg, err := os.ReadFile(filepath.Join("/proc", proc.Name(), "cgroup"))
		if err == nil && bytes.Contains(cg, []byte(id)) {
			return filepath.Join("/proc", proc.Name(), "ns", "net"), nil
		}
	}
	return "", fmt.Errorf("pod %s/%s: no process of container %s (%s) in /proc: does the benchmark run on the cluster's node, as root?", p.Namespace, p.Name, container, id)
}

// Restarts returns the restart count of container in pod ns/pod, or -1
// when the pod or container is gone.
func (l *Lab) Restarts(ctx context.Context, ns, pod, container string) int32 {
	p, err := l.Client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return -1
	}
	for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if s.Name == container {
			return s.RestartCount
		}
	}
	return -1
}

// Metrics reads the Prometheus text a pod serves on port's /metrics,
// through the API server's pod proxy, within five seconds.
func (l *Lab) Metrics(ctx context.Context, ns, pod string, port int) (metricstest.Families, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, err := l.Client.CoreV1().Pods(ns).ProxyGet("http", pod, strconv.Itoa(port), "metrics", nil).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("GET %s/%s:%d/metrics through the API server: %w", ns, pod, port, err)
	}
	fams, err := metricstest.Parse(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", ns, pod, err)
	}
	return fams, nil
}
