package kubelab

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// ControllerName is the control plane's Deployment, and VizName the
	// viz Deployment's when viz runs on its own.
	ControllerName = "mesh-controller"
	VizName        = "mesh-viz"
)

// Mesh is the control plane a run found or installed.
type Mesh struct {
	Namespace string
	// Installed says the run installed it, so the run uninstalls it.
	Installed bool
	// Version is the controller Deployment's app.kubernetes.io/version.
	Version string
	// Notes say what the run goes on without: the rest of the control
	// plane (mesh-viz) when it was not ready in time.
	Notes []string
}

// meshState is what the control plane's namespace holds.
type meshState struct {
	exists  bool   // the controller's Deployment
	version string // its app.kubernetes.io/version
	// controller says why the controller's Deployment is not ready, others
	// why the first other one (mesh-viz) is not; "" when ready.
	controller, others string
}

func (l *Lab) meshState(ctx context.Context, ns string) (meshState, error) {
	list, err := l.Client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return meshState{}, err
	}
	var st meshState
	for i := range list.Items {
		d := &list.Items[i]
		why := DeploymentNotReady(d)
		switch {
		case d.Name == ControllerName:
			st.exists, st.controller, st.version = true, why, d.Labels["app.kubernetes.io/version"]
		case st.others == "":
			st.others = why
		}
	}
	if !st.exists {
		st.controller = "deployment " + ControllerName + " does not exist"
	}
	return st, nil
}

// EnsureMesh installs the mesh into namespace ns with the mesh CLI unless a
// control plane runs there, and waits until the controller is ready. The
// rest of the control plane (mesh-viz) gets two minutes more; when it is
// not ready by then the run goes on without it, and Mesh.Notes says so.
// On an error after the install, the Mesh returned still says Installed,
// so the caller uninstalls it.
func (l *Lab) EnsureMesh(ctx context.Context, ns string) (Mesh, error) {
	m := Mesh{Namespace: ns}
	if err := l.waitNotTerminating(ctx, ns); err != nil {
		return m, err
	}
	st, err := l.meshState(ctx, ns)
	if err != nil {
		return m, err
	}
	if !st.exists {
		l.logf("no control plane in %s: mesh install", ns)
		m.Installed = true
		if err := l.MeshCmd(ctx, ns, "install"); err != nil {
			return m, err
		}
	}
	err = Poll(ctx, 3*time.Minute, time.Second, "the controller in "+ns+" ready", func(ctx context.Context) (bool, string, error) {
		st, err := l.meshState(ctx, ns)
		m.Version = st.version
		return st.controller == "", st.controller, err
	})
	if err != nil {
		return m, err
	}
	err = Poll(ctx, 2*time.Minute, time.Second, "the rest of the control plane ready", func(ctx context.Context) (bool, string, error) {
		st, err := l.meshState(ctx, ns)
		return st.others == "", st.others, err
	})
	if err != nil && ctx.Err() == nil {
		l.logf("%v: going on without it", err)
		m.Notes = append(m.Notes, err.Error())
		err = nil
	}
	return m, err
}

// waitNotTerminating waits until namespace ns is not being deleted (an
// uninstall that ended just before the run, such as an end-to-end test's,
// leaves it terminating for a while).
func (l *Lab) waitNotTerminating(ctx context.Context, ns string) error {
	logged := false
	return Poll(ctx, 5*time.Minute, time.Second, "namespace "+ns+" deleted", func(ctx context.Context) (bool, string, error) {
		got, err := l.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return true, "", nil
		case err != nil:
			return false, "", err
		case got.DeletionTimestamp == nil:
			return true, "", nil
		}
		if !logged {
			l.logf("namespace %s is being deleted: waiting until it is gone", ns)
			logged = true
		}
		return false, "still terminating", nil
	})
}

// MeshCmd runs the mesh CLI against the cluster's control plane in
// namespace ns, its output in the log.
func (l *Lab) MeshCmd(ctx context.Context, ns string, args ...string) error {
	args = append([]string{"--kubeconfig", l.Kubeconfig, "--control-plane-namespace", ns}, args...)
	cmd := exec.CommandContext(ctx, l.MeshCLI, args...)
	cmd.Stdout, cmd.Stderr = l.log, l.log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mesh %s: %w", strings.Join(args, " "), err)
	}
	return nil
}
