package viz

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mesh-dev/mesh/internal/names"
)

// withProxy gives pod what the injector gives a pod: the proxy-version
// annotation and the mesh-proxy native sidecar, its admin port at port.
func withProxy(pod *corev1.Pod, port int32) *corev1.Pod {
	always := corev1.ContainerRestartPolicyAlways
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[names.AnnotationProxyVersion] = "v0.1.0"
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{
		Name: names.ProxyContainerName, Image: "mesh-proxy", RestartPolicy: &always,
		Ports: []corev1.ContainerPort{
			{Name: "mesh-inbound", ContainerPort: names.InboundPort, Protocol: corev1.ProtocolTCP},
			{Name: names.AdminPortName, ContainerPort: port, Protocol: corev1.ProtocolTCP},
		},
	})
	return pod
}

// runningPod returns a Running pod called name at ip with one container.
func runningPod(name, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
}

// TestTargets: viz scrapes the pods that run the injector's proxy, at the
// admin port the proxy declares, and no pod that only claims to be
// meshed: any pod can carry the annotation, or a container named like
// the proxy.
func TestTargets(t *testing.T) {
	pods := map[string]func() *corev1.Pod{
		"injected": func() *corev1.Pod { return withProxy(runningPod("injected", "10.0.0.1"), names.AdminPort) },
		"admin port moved": func() *corev1.Pod {
			return withProxy(runningPod("admin-port-moved", "10.0.0.2"), 9991)
		},
		"proxy as a regular container": func() *corev1.Pod {
			p := withProxy(runningPod("regular-container", "10.0.0.3"), names.AdminPort)
			c := p.Spec.InitContainers[0]
			c.RestartPolicy = nil
			p.Spec.InitContainers, p.Spec.Containers = nil, append(p.Spec.Containers, c)
			return p
		},
		"annotation only": func() *corev1.Pod {
			p := runningPod("annotation-only", "10.0.0.4")
			p.Annotations = map[string]string{names.AnnotationProxyVersion: "v0.1.0"}
			return p
		},
		"container without the annotation": func() *corev1.Pod {
			p := withProxy(runningPod("no-annotation", "10.0.0.5"), names.AdminPort)
			p.Annotations = nil
			return p
		},
		"proxy without an admin port": func() *corev1.Pod {
			p := withProxy(runningPod("no-admin-port", "10.0.0.6"), names.AdminPort)
			p.Spec.InitContainers[0].Ports = p.Spec.InitContainers[0].Ports[:1]
			return p
		},
		"admin port over UDP": func() *corev1.Pod {
			p := withProxy(runningPod("udp-admin-port", "10.0.0.7"), names.AdminPort)
			p.Spec.InitContainers[0].Ports[1].Protocol = corev1.ProtocolUDP
			return p
		},
		"proxy as an init container that ends": func() *corev1.Pod {
			p := withProxy(runningPod("init-container", "10.0.0.8"), names.AdminPort)
			p.Spec.InitContainers[0].RestartPolicy = nil
			return p
		},
		"admin port on another container": func() *corev1.Pod {
			p := withProxy(runningPod("port-elsewhere", "10.0.0.9"), names.AdminPort)
			p.Spec.InitContainers[0].Name = "sidecar"
			return p
		},
		"pending": func() *corev1.Pod {
			p := withProxy(runningPod("pending", "10.0.0.10"), names.AdminPort)
			p.Status.Phase = corev1.PodPending
			return p
		},
		"no IP yet": func() *corev1.Pod { return withProxy(runningPod("no-ip", ""), names.AdminPort) },
		"deleting": func() *corev1.Pod {
			p := withProxy(runningPod("deleting", "10.0.0.12"), names.AdminPort)
			p.DeletionTimestamp = &metav1.Time{Time: time.Now()}
			return p
		},
	}
	want := map[string]int{"injected": names.AdminPort, "admin-port-moved": 9991, "regular-container": names.AdminPort}

	c := newCluster("shop")
	for _, name := range slices.Sorted(maps.Keys(pods)) {
		c.objs = append(c.objs, pods[name]())
	}
	v, _ := c.start(t, nil)
	targets, live, err := v.targets()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, tgt := range targets {
		got[tgt.pod.Name] = tgt.port
		if !live[tgt.pod.UID] {
			t.Errorf("%s is scraped but not live", tgt.pod.Name)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("scraped pods and ports (-want +got):\n%s", diff)
	}
	if len(live) != len(want) {
		t.Errorf("%d live pods, want %d", len(live), len(want))
	}
}

// TestPodInfoStarted: a pod's proxy started when its native sidecar's
// status says, which is among the init containers' statuses.
func TestPodInfoStarted(t *testing.T) {
	podStart, proxyStart := time.Unix(1_700_000_000, 0), time.Unix(1_700_000_030, 0)
	pod := withProxy(runningPod("web", "10.0.0.1"), names.AdminPort)
	pod.Status.StartTime = &metav1.Time{Time: podStart}
	pod.Status.InitContainerStatuses = []corev1.ContainerStatus{{
		Name: names.ProxyContainerName, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Time{Time: proxyStart}}},
	}}
	v, _ := newCluster().start(t, nil)
	if got := v.podInfo(pod).Started; !got.Equal(proxyStart) {
		t.Errorf("started %v, want the proxy's start %v", got, proxyStart)
	}
}
