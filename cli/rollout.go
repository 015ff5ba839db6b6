package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/mesh-dev/mesh/install/manifests"
)

// pollInterval is how often a wait looks at the cluster again.
const pollInterval = time.Second

// controllerSelector selects the controller's pods.
var controllerSelector = labels.SelectorFromSet(labels.Set{
	manifests.NameLabel:   manifests.ControllerName,
	manifests.PartOfLabel: manifests.PartOf,
}).String()

// poll calls cond every pollInterval until it is done or fails, reporting
// its progress through status. When ctx ends first the error says what
// cond last reported, so a timeout explains itself. A cond that could not
// tell this time (a blip of the API server) returns an empty detail.
func poll(ctx context.Context, status func(string), cond func(context.Context) (done bool, detail string, err error)) (string, error) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	last := "no answer from the API server yet"
	for {
		done, detail, err := cond(ctx)
		// A call cut short by the deadline says nothing new: keep the last
		// detail for the timeout error.
		if ctx.Err() == nil {
			if err != nil {
				return "", err
			}
			if done {
				return detail, nil
			}
			if detail != "" {
				last = detail
				status(detail)
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return "", fmt.Errorf("timed out: %s", last)
			}
			return "", fmt.Errorf("interrupted: %s", last)
		case <-tick.C:
		}
	}
}

// rolloutDone tells whether a Deployment's latest rollout is complete, the
// test `kubectl rollout status` uses, and if not, how far it got.
func rolloutDone(d *appsv1.Deployment) (bool, string) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	for _, c := range st.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return false, "rollout stalled: " + c.Message
		}
	}
	switch {
	case d.Generation > st.ObservedGeneration:
		return false, "waiting for the deployment controller"
	case st.UpdatedReplicas < want:
		return false, fmt.Sprintf("%d of %d pods updated", st.UpdatedReplicas, want)
	case st.Replicas > st.UpdatedReplicas:
		return false, fmt.Sprintf("%d old pods terminating", st.Replicas-st.UpdatedReplicas)
	case st.AvailableReplicas < st.UpdatedReplicas:
		return false, fmt.Sprintf("%d of %d pods available", st.AvailableReplicas, want)
	}
	return true, fmt.Sprintf("%d of %d pods available", st.AvailableReplicas, want)
}

// podProblem describes the first reason found that keeps one of pods from
// running, with a hint, or returns "".
func podProblem(pods []corev1.Pod) string {
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return fmt.Sprintf("pod %s cannot be scheduled: %s", p.Name, c.Message)
			}
		}
		statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
		for _, cs := range statuses {
			w := cs.State.Waiting
			if w == nil {
				continue
			}
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull":
				return fmt.Sprintf("pod %s: %s for %s; load the image on the nodes (make images writes it) or pass --registry", p.Name, w.Reason, cs.Image)
			case "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "RunContainerError":
				msg := fmt.Sprintf("pod %s: container %s: %s", p.Name, cs.Name, w.Reason)
				if t := cs.LastTerminationState.Terminated; t != nil {
					msg += fmt.Sprintf(" (exit code %d)", t.ExitCode)
				}
				return msg + fmt.Sprintf("; see kubectl -n %s logs %s -c %s", p.Namespace, p.Name, cs.Name)
			}
		}
	}
	return ""
}

// readyEndpoints counts the ready endpoints of Service name, read from its
// EndpointSlices (the Endpoints API is deprecated).
func readyEndpoints(ctx context.Context, k *kube, namespace, name string) (int, error) {
	slices, err := k.client.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + name,
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			// A nil Ready means ready (discovery/v1 EndpointConditions).
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				n += len(e.Addresses)
			}
		}
	}
	return n, nil
}

// injectorEndpoint is a poll condition: the webhook Service has a ready
// endpoint, so the API server can reach the injector.
func injectorEndpoint(k *kube, namespace string) func(context.Context) (bool, string, error) {
	return func(ctx context.Context) (bool, string, error) {
		n, err := readyEndpoints(ctx, k, namespace, manifests.InjectorServiceName)
		if err != nil {
			return false, "", fatal(err)
		}
		if n == 0 {
			return false, "no ready endpoint yet", nil
		}
		return true, fmt.Sprintf("%d ready %s", n, plural(n, "endpoint", "endpoints")), nil
	}
}

// fatal keeps the errors a retry cannot fix (no rights), and drops the
// rest (a blip of the API server) so that a wait goes on.
func fatal(err error) error {
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		return err
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// firstLine keeps the first line of s, for one-line hints.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
