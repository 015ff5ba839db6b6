package viz

import (
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"

	"github.com/mesh-dev/mesh/install/inject"
	"github.com/mesh-dev/mesh/internal/workload"
)

var everything = k8slabels.Everything()

// meshed reports whether pod runs a mesh proxy: the injector marks every
// pod it gives one with mesh.dev/proxy-version.
func meshed(pod *corev1.Pod) bool {
	_, ok := pod.Annotations[inject.AnnotationProxyVersion]
	return ok
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
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == inject.ProxyContainerName && cs.State.Running != nil {
			info.Started = cs.State.Running.StartedAt.Time
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
