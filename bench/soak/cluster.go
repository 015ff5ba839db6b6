package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/mesh-dev/mesh/bench/internal/kubelab"
)

const (
	// namespaceLabel marks the demo namespace as the run's, so a later run
	// may delete one an interrupted run left behind, and no other.
	namespaceLabel = "bench.mesh.dev/soak"
	// nameLabel is how the demo and the control plane name their pods'
	// component.
	nameLabel = kubelab.NameLabel
	// controllerName is the control plane's Deployment, and vizName the
	// viz Deployment's when viz runs on its own.
	controllerName = kubelab.ControllerName
	vizName        = kubelab.VizName
	// clientApp is the demo Deployment the load is sent from.
	clientApp = "loadgen"
	// demoImage is the demo's image without its tag, which follows the
	// repo's VERSION.
	demoImage = "ghcr.io/mesh-dev/mesh-demo"
)

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
			_, err = b.lab.Client.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Service:
			_, err = b.lab.Client.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *appsv1.Deployment:
			_, err = b.lab.Client.AppsV1().Deployments(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		}
		if err != nil {
			return fmt.Errorf("create the demo: %w", err)
		}
	}
	return b.lab.WaitDeployments(ctx, b.cfg.Namespace, 5*time.Minute)
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
	before, err := b.lab.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: nameLabel + "=" + app})
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
		if err := b.lab.Client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return rep, fmt.Errorf("delete pod %s/%s: %w", ns, p.Name, err)
		}
		old[p.Name] = true
		rep.killed = append(rep.killed, p.Name)
	}
	b.logf("deleted pod %s of %s in %s; waiting for its replacement", strings.Join(rep.killed, ", "), app, ns)
	err = kubelab.Poll(ctx, 5*time.Minute, 200*time.Millisecond, "a replacement of "+strings.Join(rep.killed, ", "), func(ctx context.Context) (bool, string, error) {
		list, err := b.lab.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: nameLabel + "=" + app})
		if err != nil {
			return false, "", err
		}
		var left []string
		for _, p := range list.Items {
			switch {
			case old[p.Name]:
				left = append(left, p.Name)
			case rep.ready == 0 && !existed[p.Name] && p.DeletionTimestamp == nil && kubelab.PodReady(&p):
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
