package cli

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/install/manifests"
)

// checkVizDeployment: mesh-viz, which mesh viz reads and which relays
// tap, has rolled out and its pods are ready. A pod of it is ready only
// once it holds its own certificate from the identity service, so a
// mesh-viz that never gets ready while the controller is points at
// identity.
func checkVizDeployment(ctx context.Context, c *checker) (string, error) {
	d, err := c.k.client.AppsV1().Deployments(c.ns).Get(ctx, vizName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("no deployment %s in namespace %s, so mesh viz cannot work: run mesh install (it adds %s to a control plane that lacks it)", vizName, c.ns, vizName)
	}
	if err != nil {
		return "", err
	}
	done, detail := rolloutDone(d)
	if done {
		return strings.TrimSpace(d.Labels[manifests.VersionLabel] + ", " + detail), nil
	}
	pods, err := c.k.client.CoreV1().Pods(c.ns).List(ctx, metav1.ListOptions{LabelSelector: vizSelector})
	if err == nil {
		if problem := podProblem(pods.Items); problem != "" {
			detail += "; " + problem
		}
	}
	return "", fmt.Errorf("%s; mesh viz needs it.\n"+
		"A %s pod is ready once its caches are filled and it holds its own certificate from the identity service:\n"+
		"see kubectl -n %s describe deployment %s, and kubectl -n %s logs deployment/%s",
		detail, vizName, c.ns, vizName, c.ns, vizName)
}
