package cli

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mesh-dev/mesh/install/manifests"
)

// TestCheckInvalidAnnotations checks that mesh check warns about the
// annotations the injector and the route index reported ignoring, the
// newest first, and about nothing else.
func TestCheckInvalidAnnotations(t *testing.T) {
	now := time.Date(2026, 12, 7, 20, 0, 0, 0, time.UTC)
	event := func(name, reporter, reason, kind, obj, msg string, age time.Duration) *corev1.Event {
		return &corev1.Event{
			ObjectMeta:          metav1.ObjectMeta{Namespace: "shop", Name: name},
			InvolvedObject:      corev1.ObjectReference{Kind: kind, Namespace: "shop", Name: obj},
			Reason:              reason,
			Type:                corev1.EventTypeWarning,
			Message:             msg,
			ReportingController: reporter,
			EventTime:           metav1.MicroTime{Time: now.Add(-age)},
		}
	}
	for _, tc := range []struct {
		name    string
		objects []runtime.Object
		want    string // in the warning; "" means the check passes
	}{{
		name: "none",
		objects: []runtime.Object{
			event("a", "kubelet", "BackOff", "Pod", "web-0", "back-off restarting", time.Minute),
			event("b", "someone-else", invalidAnnotationReason, "Pod", "web-0", "not ours", time.Minute),
		},
	}, {
		name: "route and injector",
		objects: []runtime.Object{
			event("old", injectorReporter, invalidAnnotationReason, "Deployment", "web",
				`pod web-1: config.mesh.dev/proxy-cpu-limit "lots": not a quantity`, 10*time.Minute),
			event("new", routeReporter, invalidAnnotationReason, "Service", "orders",
				`retry.mesh.dev/http "5xz": not a status class`, time.Minute),
		},
		// Messages are quoted when they hold quotes (safeValue): an
		// annotation's value is the user's, and may be anything.
		want: `the control plane ignored 2 annotations lately: Service shop/orders: "retry.mesh.dev/http \"5xz\": not a status class", ` +
			`Deployment shop/web: "pod web-1: config.mesh.dev/proxy-cpu-limit \"lots\": not a quantity"; ` +
			`fix them (kubectl -n shop describe Service orders shows the Event)`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := &checker{k: &kube{client: fake.NewClientset(tc.objects...)}, ns: manifests.DefaultNamespace}
			msg, err := checkInvalidAnnotations(context.Background(), c)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("warned: %v", err)
				}
				if !strings.Contains(msg, "no annotation") {
					t.Errorf("message %q", msg)
				}
				return
			}
			var w *warning
			if !errors.As(err, &w) {
				t.Fatalf("got %q, %v; want a warning", msg, err)
			}
			if w.msg != tc.want {
				t.Errorf("warning:\n%s\nwant:\n%s", w.msg, tc.want)
			}
		})
	}
}
