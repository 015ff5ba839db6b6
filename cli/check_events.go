package cli

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The Warning Events the control plane records when it ignores an
// annotation: the injector on a pod's owner (a config.mesh.dev/*
// override), the route index on a Service (retry.mesh.dev/*,
// timeout.mesh.dev/*, balancer.mesh.dev/*). Their reason is the same
// string in controller/injector and controller/route, which the CLI does
// not import.
const (
	invalidAnnotationReason = "InvalidAnnotation"
	injectorReporter        = "mesh-injector"
	routeReporter           = "mesh-controller"
)

// checkInvalidAnnotations warns about the annotations the control plane
// ignored lately: a typo in `retry.mesh.dev/http` or a bad proxy override
// otherwise shows only in the controller's log and in the object's
// Events, and the user wonders why nothing retries. Events expire (an
// hour by default), so this sees what the last hour ignored.
func checkInvalidAnnotations(ctx context.Context, c *checker) (string, error) {
	list, err := c.k.client.CoreV1().Events("").List(ctx, metav1.ListOptions{
		FieldSelector: "reason=" + invalidAnnotationReason + ",type=" + corev1.EventTypeWarning,
	})
	if err != nil {
		return "", err
	}
	var found []corev1.Event
	for _, e := range list.Items {
		// Checked again here: the selector is the server's to apply.
		if e.Reason != invalidAnnotationReason || e.Type != corev1.EventTypeWarning {
			continue
		}
		if r := cmp.Or(e.ReportingController, e.Source.Component); r == injectorReporter || r == routeReporter {
			found = append(found, e)
		}
	}
	if len(found) == 0 {
		return "no annotation ignored lately", nil
	}
	// The newest first: the one the user most likely just wrote.
	slices.SortFunc(found, func(a, b corev1.Event) int { return eventTime(b).Time.Compare(eventTime(a).Time) })
	items := make([]string, len(found))
	for i, e := range found {
		o := e.InvolvedObject
		items[i] = fmt.Sprintf("%s %s/%s: %s", o.Kind, o.Namespace, o.Name, safeValue(e.Message))
	}
	first := found[0].InvolvedObject
	return "", warnf("the control plane ignored %d %s lately: %s; fix them (kubectl -n %s describe %s %s shows the Event)",
		len(found), plural(len(found), "annotation", "annotations"), summarize(items, 5), first.Namespace,
		cmp.Or(first.Kind, "pod"), first.Name)
}

// eventTime is when e last happened, whichever API wrote it.
func eventTime(e corev1.Event) metav1.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp
	case !e.EventTime.IsZero():
		return metav1.Time{Time: e.EventTime.Time}
	}
	return e.CreationTimestamp
}
