// Package workload names the workload a pod belongs to, the way the mesh's
// metrics and `mesh viz` name it: "deployment/web" for a pod of a
// Deployment's ReplicaSet, the controller's kind and name otherwise, and
// "pod/NAME" for a pod without a controller.
//
// A ReplicaSet's Deployment is the ReplicaSet's name without the
// "-"+pod-template-hash suffix the Deployment controller appends, which
// spares the control plane a ReplicaSet informer and the RBAC to list
// ReplicaSets.
package workload

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Kinds of Ref, lower case and singular like kubectl's resource names.
const (
	KindDeployment = "deployment"
	KindReplicaSet = "replicaset"
	KindPod        = "pod"
)

// templateHashLabel is the label the Deployment controller puts on a
// ReplicaSet's pods, and appends to the ReplicaSet's name.
const templateHashLabel = "pod-template-hash"

// Ref names a workload. It is a value type, comparable and usable as a map
// key.
type Ref struct {
	// Kind is the controller's kind in lower case ("deployment",
	// "statefulset", "daemonset", "job", a custom kind), or "pod".
	Kind string
	Name string
}

// String returns "kind/name", the form of the proxies' dst_workload label.
func (r Ref) String() string { return r.Kind + "/" + r.Name }

// Of returns the workload pod belongs to: its Deployment when its
// controller is a ReplicaSet that a Deployment made, its controller
// otherwise, and the pod itself when it has none.
func Of(pod *corev1.Pod) Ref {
	if d, ok := Deployment(pod); ok {
		return Ref{Kind: KindDeployment, Name: d}
	}
	if ref := metav1.GetControllerOfNoCopy(pod); ref != nil && ref.Kind != "" && ref.Name != "" {
		return Ref{Kind: strings.ToLower(ref.Kind), Name: ref.Name}
	}
	return Ref{Kind: KindPod, Name: pod.Name}
}

// Deployment returns the name of the Deployment whose ReplicaSet controls
// pod, and false when pod is not a Deployment's.
func Deployment(pod *corev1.Pod) (string, bool) {
	ref := metav1.GetControllerOfNoCopy(pod)
	hash := pod.Labels[templateHashLabel]
	if ref == nil || ref.Kind != "ReplicaSet" || hash == "" {
		return "", false
	}
	d, ok := strings.CutSuffix(ref.Name, "-"+hash)
	if !ok || d == "" {
		return "", false
	}
	return d, true
}

// ServiceAccount returns the ServiceAccount pod runs as: "default" when
// the spec names none, as the API server admits it.
func ServiceAccount(pod *corev1.Pod) string {
	if sa := pod.Spec.ServiceAccountName; sa != "" {
		return sa
	}
	return "default"
}
