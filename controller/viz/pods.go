package viz

import (
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"

	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/workload"
)

var everything = k8slabels.Everything()

// meshed reports whether pod runs a mesh proxy as the injector adds one:
// marked with mesh.dev/proxy-version, and with the proxy's container and
// admin port. The annotation alone is not enough: any pod can carry it,
// and viz would scrape whatever such a pod serves.
func meshed(pod *corev1.Pod) bool {
	_, annotated := pod.Annotations[names.AnnotationProxyVersion]
	_, ok := proxyAdminPort(pod)
	return annotated && ok
}

// proxyAdminPort returns the port of pod's proxy's admin server, which
// serves /metrics: the mesh-admin TCP port of the container named
// mesh-proxy, a native sidecar (an init container that keeps running) as
// the injector adds it, or a regular container.
func proxyAdminPort(pod *corev1.Pod) (int, bool) {
	c := proxyContainer(pod)
	if c == nil {
		return 0, false
	}
	for _, p := range c.Ports {
		if p.Name == names.AdminPortName && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) && p.ContainerPort > 0 {
			return int(p.ContainerPort), true
		}
	}
	return 0, false
}

// proxyContainer returns pod's mesh-proxy container, nil without one.
func proxyContainer(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if c.Name == names.ProxyContainerName && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			return c
		}
	}
	for i := range pod.Spec.Containers {
		if c := &pod.Spec.Containers[i]; c.Name == names.ProxyContainerName {
			return c
		}
	}
	return nil
}

// running reports whether pod runs and has an address to reach it at.
func running(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != "" && pod.DeletionTimestamp == nil
}

// scrapeable reports whether the scrapes and the tap reach pod's proxy.
func scrapeable(pod *corev1.Pod) bool { return meshed(pod) && running(pod) }

// counted reports whether pod counts in a row's pods: it is not done
// (Succeeded or Failed), as kubectl get shows pods.
func counted(pod *corev1.Pod) bool {
	return pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// spiffeID returns the SPIFFE ID of pod's ServiceAccount, the identity its
// proxy gets; "" for a name the API server would not have admitted.
func (v *Viz) spiffeID(pod *corev1.Pod) string {
	id, err := v.podID(pod)
	if err != nil {
		return ""
	}
	return id.String()
}

func (v *Viz) podID(pod *corev1.Pod) (spiffeid.ID, error) {
	return spiffeid.FromSegments(v.cfg.TrustDomain, "ns", pod.Namespace, "sa", workload.ServiceAccount(pod))
}

// podInfo describes pod for the store.
func (v *Viz) podInfo(pod *corev1.Pod) podInfo {
	info := podInfo{
		UID:       pod.UID,
		Namespace: pod.Namespace,
		Name:      pod.Name,
		Workload:  workload.Of(pod),
		ID:        v.spiffeID(pod),
		IP:        pod.Status.PodIP,
	}
	if pod.Status.StartTime != nil {
		info.Started = pod.Status.StartTime.Time
	}
	// The injector's proxy is a native sidecar, whose status is among
	// the init containers'.
	for _, statuses := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, cs := range statuses {
			if cs.Name == names.ProxyContainerName && cs.State.Running != nil {
				info.Started = cs.State.Running.StartedAt.Time
			}
		}
	}
	return info
}

// identities returns the sorted SPIFFE IDs of the meshed pods among pods.
func (v *Viz) identities(pods []*corev1.Pod) []string {
	var ids []string
	for _, p := range pods {
		if meshed(p) {
			if id := v.spiffeID(p); id != "" {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// splitWorkload splits a dst_workload label, "kind/name", into its parts.
func splitWorkload(s string) (workload.Ref, bool) {
	kind, name, ok := strings.Cut(s, "/")
	if !ok || kind == "" || name == "" {
		return workload.Ref{}, false
	}
	return workload.Ref{Kind: kind, Name: name}, true
}
