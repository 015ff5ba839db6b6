package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/mesh-dev/mesh/internal/names"
)

const (
	// namespaceLabel marks the demo namespace as the run's, so a later run
	// may delete one an interrupted run left behind, and no other.
	namespaceLabel = "bench.mesh.dev/soak"
	// nameLabel is how the demo and the control plane name their pods'
	// component.
	nameLabel = "app.kubernetes.io/name"
	// controllerName is the control plane's Deployment, and vizName the
	// viz Deployment's when viz runs on its own.
	controllerName = "mesh-controller"
	vizName        = "mesh-viz"
	// clientApp is the demo Deployment the load is sent from.
	clientApp = "loadgen"
	// demoImage is the demo's image without its tag, which follows the
	// repo's VERSION.
	demoImage = "ghcr.io/mesh-dev/mesh-demo"
)

// poll calls cond every interval until it reports done, fails, or timeout
// passes; the error then carries cond's last reason. cond gets ctx itself,
// not one that ends with the timeout: client-go's rate limiter fails a
// call at once when it could not finish before its context's deadline.
func poll(ctx context.Context, timeout, interval time.Duration, what string, cond func(ctx context.Context) (done bool, why string, err error)) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(interval)
	defer t.Stop()
	var why string
	for {
		done, w, err := cond(ctx)
		switch {
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case err != nil:
			return fmt.Errorf("%s: %w", what, err)
		case done:
			return nil
		case w != "":
			why = w
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not done after %v: %s", what, timeout, why)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
	}
}

// meshState is what the control plane's namespace holds.
type meshState struct {
	exists bool // the controller's Deployment
	// controller says why the controller's Deployment is not ready, others
	// why the first other one (mesh-viz) is not; "" when ready.
	controller, others string
}

func (b *bench) meshState(ctx context.Context) (meshState, error) {
	list, err := b.kc.AppsV1().Deployments(b.cfg.MeshNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return meshState{}, err
	}
	var st meshState
	for i := range list.Items {
		d := &list.Items[i]
		why := deploymentNotReady(d)
		switch {
		case d.Name == controllerName:
			st.exists, st.controller = true, why
			b.res.meshVersion = d.Labels["app.kubernetes.io/version"]
		case st.others == "":
			st.others = why
		}
	}
	if !st.exists {
		st.controller = "deployment " + controllerName + " does not exist"
	}
	return st, nil
}

// ensureMesh installs the mesh with the mesh CLI unless a control plane
// runs, and waits until the controller is ready. It reports whether it
// installed it. The rest of the control plane (mesh-viz) gets two minutes
// more; when it is not ready by then the run goes on without it, and the
// report says so.
func (b *bench) ensureMesh(ctx context.Context, kubeconfig string) (installed bool, err error) {
	if err := b.waitNotTerminating(ctx); err != nil {
		return false, err
	}
	st, err := b.meshState(ctx)
	if err != nil {
		return false, err
	}
	if !st.exists {
		b.logf("no control plane in %s: mesh install", b.cfg.MeshNamespace)
		if err := b.meshCLI(ctx, kubeconfig, "install"); err != nil {
			return true, err
		}
		installed = true
	}
	err = poll(ctx, 3*time.Minute, time.Second, "the controller in "+b.cfg.MeshNamespace+" ready", func(ctx context.Context) (bool, string, error) {
		st, err := b.meshState(ctx)
		return st.controller == "", st.controller, err
	})
	if err != nil {
		return installed, err
	}
	err = poll(ctx, 2*time.Minute, time.Second, "the rest of the control plane ready", func(ctx context.Context) (bool, string, error) {
		st, err := b.meshState(ctx)
		return st.others == "", st.others, err
	})
	if err != nil && ctx.Err() == nil {
		b.logf("%v: going on without it", err)
		b.res.notes = append(b.res.notes, err.Error())
		err = nil
	}
	return installed, err
}

// waitNotTerminating waits until the control plane's namespace is not
// being deleted (an uninstall that ended just before the run, such as an
// end-to-end test's, leaves it terminating for a while).
func (b *bench) waitNotTerminating(ctx context.Context) error {
	logged := false
	return poll(ctx, 5*time.Minute, time.Second, "namespace "+b.cfg.MeshNamespace+" deleted", func(ctx context.Context) (bool, string, error) {
		ns, err := b.kc.CoreV1().Namespaces().Get(ctx, b.cfg.MeshNamespace, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return true, "", nil
		case err != nil:
			return false, "", err
		case ns.DeletionTimestamp == nil:
			return true, "", nil
		}
		if !logged {
			b.logf("namespace %s is being deleted: waiting until it is gone", b.cfg.MeshNamespace)
			logged = true
		}
		return false, "still terminating", nil
	})
}

// meshCLI runs the mesh CLI against the cluster, its output in the log.
func (b *bench) meshCLI(ctx context.Context, kubeconfig string, args ...string) error {
	args = append([]string{"--kubeconfig", kubeconfig, "--control-plane-namespace", b.cfg.MeshNamespace}, args...)
	cmd := exec.CommandContext(ctx, b.meshBin, args...)
	cmd.Stdout, cmd.Stderr = b.log, b.log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mesh %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// demoObjects reads the demo shop's manifest and rewrites it for the run:
// its namespace, labelled as the run's; the demo image at version; and
// replicas pods of the Deployment named kill.
func demoObjects(manifest io.Reader, ns, version, kill string, replicas int) ([]runtime.Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(manifest))
	var objs []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("demo manifest: %w", err)
		}
		if onlyComments(doc) {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("demo manifest: %w", err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			o.Name = ns
			if o.Labels == nil {
				o.Labels = map[string]string{}
			}
			o.Labels[namespaceLabel] = "true"
		case *corev1.Service:
			o.Namespace = ns
		case *appsv1.Deployment:
			o.Namespace = ns
			for i, c := range o.Spec.Template.Spec.Containers {
				if image, _, ok := strings.Cut(c.Image, ":"); ok && image == demoImage {
					o.Spec.Template.Spec.Containers[i].Image = demoImage + ":" + version
				}
			}
			if o.Name == kill {
				o.Spec.Replicas = new(int32(replicas))
			}
		default:
			return nil, fmt.Errorf("demo manifest: unexpected %T", obj)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

func onlyComments(doc []byte) bool {
	for line := range strings.Lines(string(doc)) {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// deployDemo creates the demo shop in cfg.Namespace, which must not exist,
// and waits until every Deployment is ready.
func (b *bench) deployDemo(ctx context.Context, root, version string) error {
	manifest, err := os.ReadFile(filepath.Join(root, "testdata", "demo", "k8s", "demo.yaml"))
	if err != nil {
		return err
	}
	objs, err := demoObjects(bytes.NewReader(manifest), b.cfg.Namespace, version, b.cfg.Kill, b.cfg.Replicas)
	if err != nil {
		return err
	}
	b.logf("deploying the demo shop into namespace %s (%d pods of %s)", b.cfg.Namespace, b.cfg.Replicas, b.cfg.Kill)
	for _, obj := range objs {
		var err error
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = b.kc.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Service:
			_, err = b.kc.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *appsv1.Deployment:
			_, err = b.kc.AppsV1().Deployments(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		}
		if err != nil {
			return fmt.Errorf("create the demo: %w", err)
		}
	}
	return poll(ctx, 5*time.Minute, time.Second, "the demo's Deployments ready", func(ctx context.Context) (bool, string, error) {
		list, err := b.kc.AppsV1().Deployments(b.cfg.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, "", err
		}
		for i := range list.Items {
			if why := deploymentNotReady(&list.Items[i]); why != "" {
				return false, why, nil
			}
		}
		return len(list.Items) > 0, "no Deployments yet", nil
	})
}

// deleteNamespace deletes the run's namespace and waits until it is gone.
// With leftover set it is the start of a run: a namespace of that name
// without the run's label is an error, not deleted.
func (b *bench) deleteNamespace(ctx context.Context, leftover bool) error {
	ns, err := b.kc.CoreV1().Namespaces().Get(ctx, b.cfg.Namespace, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.Labels[namespaceLabel] != "true" {
		return fmt.Errorf("namespace %s exists and is not a soak run's (no label %s): choose another --namespace", b.cfg.Namespace, namespaceLabel)
	}
	if leftover {
		b.logf("deleting namespace %s, left behind by an earlier run", b.cfg.Namespace)
	} else {
		b.logf("deleting namespace %s", b.cfg.Namespace)
	}
	err = b.kc.CoreV1().Namespaces().Delete(ctx, b.cfg.Namespace, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return poll(ctx, 3*time.Minute, time.Second, "namespace "+b.cfg.Namespace+" gone", func(ctx context.Context) (bool, string, error) {
		_, err := b.kc.CoreV1().Namespaces().Get(ctx, b.cfg.Namespace, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		return false, "still terminating", err
	})
}

// deploymentNotReady says why d is not fully rolled out and ready, or "".
func deploymentNotReady(d *appsv1.Deployment) string {
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

// runningPods returns the pods labelled app.kubernetes.io/name=app in ns
// that run, are ready and are not being deleted, by name.
func runningPods(ctx context.Context, kc kubernetes.Interface, ns, app string) ([]corev1.Pod, error) {
	list, err := kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: nameLabel + "=" + app})
	if err != nil {
		return nil, err
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(&p) {
			pods = append(pods, p)
		}
	}
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// hasProxy reports whether the injector added the proxy to p, as a native
// sidecar or a plain container.
func hasProxy(p *corev1.Pod) bool {
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if c.Name == names.ProxyContainerName {
			return true
		}
	}
	return false
}

// podNetns returns the network namespace of pod p as /proc/PID/ns/net of a
// process of its container named container. The process is found by its
// cgroup, whose path ends in the container's ID under containerd with
// either cgroup driver; the benchmark runs in the node's PID namespace.
func podNetns(p *corev1.Pod, container string) (string, error) {
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

// replacement is how a kill went: when the replacement pod was Ready and
// when the killed pods were gone, both from the delete.
type replacement struct {
	killed          []string
	ready, gone     time.Duration
	replacementName string
}

// killAndWait deletes pods (with their normal grace period) and waits
// until a pod of app created since is Ready and every one of them is gone
// from the API.
func (b *bench) killAndWait(ctx context.Context, ns, app string, pods []corev1.Pod) (replacement, error) {
	var rep replacement
	// Pods of app that run already are not replacements: only one made
	// after the delete is.
	before, err := b.kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: nameLabel + "=" + app})
	if err != nil {
		return rep, err
	}
	existed := map[string]bool{}
	for _, p := range before.Items {
		existed[p.Name] = true
	}
	old := map[string]bool{}
	t0 := time.Now()
	for _, p := range pods {
		if err := b.kc.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return rep, fmt.Errorf("delete pod %s/%s: %w", ns, p.Name, err)
		}
		old[p.Name] = true
		rep.killed = append(rep.killed, p.Name)
	}
	b.logf("deleted pod %s of %s in %s; waiting for its replacement", strings.Join(rep.killed, ", "), app, ns)
	err = poll(ctx, 5*time.Minute, 200*time.Millisecond, "a replacement of "+strings.Join(rep.killed, ", "), func(ctx context.Context) (bool, string, error) {
		list, err := b.kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: nameLabel + "=" + app})
		if err != nil {
			return false, "", err
		}
		var left []string
		for _, p := range list.Items {
			switch {
			case old[p.Name]:
				left = append(left, p.Name)
			case rep.ready == 0 && !existed[p.Name] && p.DeletionTimestamp == nil && podReady(&p):
				rep.ready, rep.replacementName = time.Since(t0), p.Name
				b.logf("replacement %s Ready after %.1fs", p.Name, rep.ready.Seconds())
			}
		}
		if len(left) == 0 && rep.gone == 0 {
			rep.gone = time.Since(t0)
			b.logf("%s gone after %.1fs", strings.Join(rep.killed, ", "), rep.gone.Seconds())
		}
		return rep.ready > 0 && rep.gone > 0, fmt.Sprintf("replacement Ready: %v, still there: %v", rep.ready > 0, left), nil
	})
	return rep, err
}
