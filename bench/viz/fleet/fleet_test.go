package fleet

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/workload"
)

func TestAddresses(t *testing.T) {
	f, err := New("bench", 501, 4191)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pod  int
		want string
	}{
		{name: "first", pod: 0, want: "127.0.1.1:4191"},
		{name: "last of the first /24", pod: 249, want: "127.0.1.250:4191"},
		{name: "first of the second", pod: 250, want: "127.0.2.1:4191"},
		{name: "last", pod: 500, want: "127.0.3.1:4191"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := f.MetricsAddr(f.Pods[tc.pod]); got != tc.want {
				t.Errorf("MetricsAddr(pod %d) = %s, want %s", tc.pod, got, tc.want)
			}
		})
	}
	seen := map[string]bool{}
	for _, p := range f.Pods {
		if a := f.MetricsAddr(p); seen[a] || !p.IP.IsLoopback() {
			t.Errorf("pod %s: address %s reused or not loopback", p.Name, a)
		}
		seen[f.MetricsAddr(p)] = true
	}
	if got, want := len(f.Deployments), 126; got != want {
		t.Errorf("%d deployments, want %d", got, want)
	}
}

// TestCalls: every call has a caller and a callee, and nobody calls itself.
func TestCalls(t *testing.T) {
	for _, pods := range []int{1, 4, 8, 200} {
		f, err := New("bench", pods, 4191)
		if err != nil {
			t.Fatal(err)
		}
		for d, dep := range f.Deployments {
			if slices.Contains(dep.Callees, d) || len(dep.Callees) != min(Callees, len(f.Deployments)-1) {
				t.Errorf("%d pods: %s calls %v", pods, dep.Name, dep.Callees)
			}
			for _, c := range dep.Callees {
				if !slices.Contains(f.Deployments[c].Callers, d) {
					t.Errorf("%d pods: %s calls %s, which does not list it as a caller", pods, dep.Name, f.Deployments[c].Name)
				}
			}
		}
	}
}

// TestObjects: the pods are what viz scrapes (meshed, Running, an IP) and
// belong to their Deployment.
func TestObjects(t *testing.T) {
	f, err := New("bench", 10, 4191)
	if err != nil {
		t.Fatal(err)
	}
	pods := 0
	for _, o := range f.Objects(time.Now()) {
		pod, ok := o.(*corev1.Pod)
		if !ok {
			continue
		}
		p := f.Pods[pods]
		pods++
		if _, ok := pod.Annotations[names.AnnotationProxyVersion]; !ok || pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP != p.IP.String() {
			t.Errorf("pod %s: not meshed, not Running or not at %s", pod.Name, p.IP)
		}
		want := workload.Ref{Kind: workload.KindDeployment, Name: f.Deployments[p.Deployment].Name}
		if got := workload.Of(pod); got != want {
			t.Errorf("workload.Of(%s) = %v, want %v", pod.Name, got, want)
		}
	}
	if pods != len(f.Pods) {
		t.Errorf("%d pods among the objects, want %d", pods, len(f.Pods))
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ns        string
		pods, prt int
	}{
		{name: "no namespace", ns: "", pods: 1, prt: 4191},
		{name: "no pods", ns: "bench", pods: 0, prt: 4191},
		{name: "more pods than addresses", ns: "bench", pods: MaxPods + 1, prt: 4191},
		{name: "bad port", ns: "bench", pods: 1, prt: 70000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.ns, tc.pods, tc.prt); err == nil {
				t.Error("New succeeded")
			}
		})
	}
}
