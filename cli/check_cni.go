package cli

import (
	"context"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

// cniSelector selects the pods of the mesh CNI plugin's DaemonSet.
var cniSelector = labels.SelectorFromSet(labels.Set{
	manifests.NameLabel:   manifests.CNIName,
	manifests.PartOfLabel: manifests.PartOf,
})

// cniMode reports whether the install in the control-plane namespace is in
// CNI mode: what the injector reads there for every pod.
func cniMode(ctx context.Context, k *kube, ns string) (bool, error) {
	obj, err := k.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	return obj.Annotations[names.AnnotationCNI] == names.Enabled, nil
}

// daemonSetReady says whether ds runs an up-to-date, ready pod on every
// node it should, and how far it is otherwise. A DaemonSet that should
// run nowhere is not ready: with no node carrying the plugin, no meshed
// pod would be intercepted.
func daemonSetReady(ds *appsv1.DaemonSet) (bool, string) {
	st := ds.Status
	switch {
	case ds.Generation > st.ObservedGeneration:
		return false, "waiting for the daemonset controller"
	case st.DesiredNumberScheduled == 0:
		return false, "scheduled on no node"
	case st.UpdatedNumberScheduled < st.DesiredNumberScheduled:
		return false, fmt.Sprintf("%d of %d nodes updated", st.UpdatedNumberScheduled, st.DesiredNumberScheduled)
	case st.NumberReady < st.DesiredNumberScheduled:
		return false, fmt.Sprintf("ready on %d of %d nodes", st.NumberReady, st.DesiredNumberScheduled)
	}
	return true, fmt.Sprintf("ready on %d of %d %s", st.NumberReady, st.DesiredNumberScheduled, plural(int(st.DesiredNumberScheduled), "node", "nodes"))
}

// cniRollout is a poll condition: the plugin's DaemonSet is ready on
// every node; while it is not, the detail names the first pod problem.
func cniRollout(k *kube) func(context.Context) (bool, string, error) {
	return func(ctx context.Context) (bool, string, error) {
		ds, err := k.client.AppsV1().DaemonSets(manifests.CNINamespace).Get(ctx, manifests.CNIName, metav1.GetOptions{})
		if err != nil {
			return false, "", fatal(err)
		}
		done, detail := daemonSetReady(ds)
		if done {
			return true, detail, nil
		}
		pods, err := k.client.CoreV1().Pods(manifests.CNINamespace).List(ctx, metav1.ListOptions{LabelSelector: cniSelector.String()})
		if err == nil {
			if problem := podProblem(pods.Items); problem != "" {
				detail += "; " + problem
			}
		}
		return false, detail, nil
	}
}

// checkCNIPlugin: in CNI mode the plugin's DaemonSet is ready on every
// node, since a meshed pod started on a node without it runs
// unintercepted. Outside CNI mode, a DaemonSet left over is a warning.
func checkCNIPlugin(ctx context.Context, c *checker) (string, error) {
	on, err := cniMode(ctx, c.k, c.ns)
	if err != nil {
		return "", err
	}
	ds, err := c.k.client.AppsV1().DaemonSets(manifests.CNINamespace).Get(ctx, manifests.CNIName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && on:
		return "", fmt.Errorf("namespace %s is annotated %s=%s, but there is no daemonset %s in namespace %s: "+
			"injected pods get no mesh-init and nothing intercepts their traffic; run mesh install --cni",
			c.ns, names.AnnotationCNI, names.Enabled, manifests.CNIName, manifests.CNINamespace)
	case apierrors.IsNotFound(err):
		return "not in CNI mode", nil
	case err != nil:
		return "", err
	case !on:
		return "", warnf("daemonset %s/%s runs, but the install is not in CNI mode (namespace %s lacks %s=%s): "+
			"run mesh install --cni to use it, or mesh install to remove it", manifests.CNINamespace, manifests.CNIName, c.ns, names.AnnotationCNI, names.Enabled)
	}
	ok, detail := daemonSetReady(ds)
	if !ok {
		return "", fmt.Errorf("daemonset %s/%s is not ready: %s; pods meshed on a node without it start unintercepted\n"+
			"see kubectl -n %s describe daemonset %s; kubectl -n %s logs daemonset/%s",
			manifests.CNINamespace, manifests.CNIName, detail, manifests.CNINamespace, manifests.CNIName, manifests.CNINamespace, manifests.CNIName)
	}
	return detail, nil
}

// checkInterceptionMode: every meshed pod is intercepted the way the
// install says. In CNI mode, a pod that still has mesh-init or lacks the
// interception annotation was injected before the switch and keeps working,
// but needs NET_ADMIN: a warning, to restart it. Outside CNI mode, a pod
// injected for the plugin (the annotation, no mesh-init) has nothing left
// to install its rules should its network be created again: a failure.
func checkInterceptionMode(ctx context.Context, c *checker) (string, error) {
	on, err := cniMode(ctx, c.k, c.ns)
	if err != nil {
		return "", err
	}
	pods, err := meshedPods(ctx, c)
	if err != nil {
		return "", err
	}
	var odd []string
	for _, p := range pods {
		_, annotated := p.Annotations[names.AnnotationInterception]
		init := hasInitContainer(&p)
		if on && (init || !annotated) || !on && annotated && !init {
			odd = append(odd, p.Namespace+"/"+p.Name)
		}
	}
	mode := "mesh-init"
	if on {
		mode = "CNI plugin"
	}
	switch {
	case len(odd) == 0:
		return fmt.Sprintf("%d meshed %s, by the %s", len(pods), plural(len(pods), "pod", "pods"), mode), nil
	case on:
		return "", warnf("%d meshed %s still %s mesh-init (injected before mesh install --cni): %s\n"+
			"they need NET_ADMIN; restart their workloads (kubectl rollout restart) to mesh them through the CNI plugin",
			len(odd), plural(len(odd), "pod", "pods"), plural(len(odd), "has", "have"), summarize(odd, 5))
	default:
		return "", fmt.Errorf("%d meshed %s were injected for the CNI plugin, which this install does not run: %s\n"+
			"should their network be created again (a node restart), nothing installs their interception rules; restart their workloads now (kubectl rollout restart) to get mesh-init, or run mesh install --cni",
			len(odd), plural(len(odd), "pod", "pods"), summarize(odd, 5))
	}
}

func hasInitContainer(p *corev1.Pod) bool {
	return slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == names.InitContainerName })
}
