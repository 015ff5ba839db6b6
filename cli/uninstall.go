package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

// uninstallOptions are the flags of `mesh uninstall`.
type uninstallOptions struct {
	DryRun bool
	// Wait bounds the wait for the namespaces and CRDs to be gone; 0
	// skips it.
	Wait time.Duration
}

func newUninstallCmd(o *Options) *cobra.Command {
	uo := uninstallOptions{Wait: 5 * time.Minute}
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Delete the control plane",
		Long: "uninstall deletes every object mesh install made: those it knows by name and those\n" +
			"labelled app.kubernetes.io/part-of=mesh, then waits for the control-plane namespace\n" +
			"and the policy.mesh.dev CRDs to be gone. Deleting the CRDs deletes every Server,\n" +
			"AuthorizationPolicy, MeshTLSAuthentication and NetworkAuthentication of the cluster.\n" +
			"The Gateway API CRDs go only if mesh install made them and no HTTPRoute or GRPCRoute\n" +
			"exists; otherwise uninstall keeps them and says how to delete them.\n" +
			"Injected workloads keep running with their proxies until restarted.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if uo.Wait < 0 {
				return fmt.Errorf("--wait %s: must not be negative", uo.Wait)
			}
			if err := checkNamespace(o.ControlPlaneNamespace); err != nil {
				return err
			}
			return uo.run(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVar(&uo.DryRun, "dry-run", false, "list what would be deleted, delete nothing")
	cmd.Flags().DurationVar(&uo.Wait, "wait", uo.Wait, "how long to wait for the namespace and CRDs to be deleted (0: do not wait)")
	return cmd
}

// target is one object to delete.
type target struct {
	gvk             schema.GroupVersionKind
	namespace, name string
	// terminating is set when the object is already being deleted.
	terminating bool
}

func (t target) String() string {
	s := strings.ToLower(t.gvk.Kind) + "/" + t.name
	if t.namespace != "" {
		s += " in namespace " + t.namespace
	}
	return s
}

func (t target) isNamespace() bool { return t.gvk.Group == "" && t.gvk.Kind == "Namespace" }

// isCRD: a deleted CRD lingers until the API server has deleted every
// object of its kind, so uninstall waits for it like for a namespace.
func (t target) isCRD() bool { return t.gvk == crdGVK }

// labelledKinds are the cluster-scoped kinds searched by label, beyond the
// objects install knows by name: what an older or newer install may have
// made, and the namespaces `mesh check` leaves behind if interrupted.
var labelledKinds = []schema.GroupVersionKind{
	{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "MutatingWebhookConfiguration"},
	{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "ValidatingWebhookConfiguration"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"},
	{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"},
	{Group: "", Version: "v1", Kind: "Namespace"},
}

func (uo *uninstallOptions) run(ctx context.Context, o *Options) error {
	k, err := o.kube()
	if err != nil {
		return err
	}
	ns := o.ControlPlaneNamespace
	if _, err := reachAPI(ctx, k); err != nil {
		return err
	}
	targets, notes, err := uninstallTargets(ctx, k, ns)
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintf(o.Out, "%s %s\n", warnMark, n)
	}
	injected := injectedPods(ctx, k, ns)
	if len(targets) == 0 {
		fmt.Fprintf(o.Out, "Nothing to delete: mesh is not installed in namespace %s (context %q).\n", ns, k.Context)
		return nil
	}
	if uo.DryRun {
		fmt.Fprintf(o.Out, "mesh uninstall would delete (context %q):\n", k.Context)
		for _, t := range targets {
			fmt.Fprintf(o.Out, "  %s\n", t)
		}
		fmt.Fprint(o.Out, injected)
		return nil
	}

	p := newProgress(o.Out, o.now)
	var deleted []target // the namespaces and CRDs, to wait for
	for _, t := range targets {
		if t.terminating {
			p.line(okMark, "%s already being deleted", t)
			if t.isNamespace() || t.isCRD() {
				deleted = append(deleted, t)
			}
			continue
		}
		ri, _, err := k.resource(ctx, t.gvk, t.namespace)
		if err != nil {
			return err
		}
		policy := metav1.DeletePropagationBackground
		err = ri.Delete(ctx, t.name, metav1.DeleteOptions{PropagationPolicy: &policy})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case apierrors.IsForbidden(err):
			p.line(failMark, "%s", t)
			return fmt.Errorf("%w\nask a cluster admin to run mesh uninstall, or to grant you delete on it", err)
		case err != nil:
			p.line(failMark, "%s", t)
			return fmt.Errorf("delete %s: %w", t, err)
		}
		p.line(okMark, "%s deleted", t)
		if t.isNamespace() || t.isCRD() {
			deleted = append(deleted, t)
		}
	}
	if uo.Wait > 0 && len(deleted) > 0 {
		wctx, cancel := context.WithTimeout(ctx, uo.Wait)
		defer cancel()
		for _, t := range deleted {
			kind, cond := "namespace", namespaceGone(k, t.name)
			if t.isCRD() {
				kind, cond = "customresourcedefinition", crdGone(k, t.name)
			}
			if err := p.run(wctx, kind+"/"+t.name+" gone", func(ctx context.Context, status func(string)) (string, error) {
				return poll(ctx, status, cond)
			}); err != nil {
				return fmt.Errorf("%s %s is still there after %s: %w\nsee what holds it: kubectl get %s %s -o yaml", kind, t.name, uo.Wait, err, kind, t.name)
			}
		}
	}
	fmt.Fprintf(o.Out, "\nmesh is uninstalled from namespace %s.\n", ns)
	fmt.Fprint(o.Out, injected)
	return nil
}

// uninstallTargets lists what exists of what install makes, in deletion
// order: the webhook first, so no pod creation waits on a dying injector;
// namespaces last. notes say what is left in place and why.
func uninstallTargets(ctx context.Context, k *kube, ns string) ([]target, []string, error) {
	v := manifests.Values{Namespace: ns, Registry: manifests.DefaultRegistry, Version: "v0.0.0", HA: true, TrustDomain: "cluster.local",
		// Every optional part, so that whatever an install made is listed.
		Tracing: manifests.Tracing{Jaeger: true}, CNI: manifests.CNI{Enabled: true}}
	ms, err := manifests.Render(v)
	if err != nil {
		return nil, nil, err
	}
	var (
		out, namespaces []target
		notes           []string
		seen            = map[target]bool{}
	)
	add := func(t target) {
		key := target{gvk: t.gvk, namespace: t.namespace, name: t.name}
		if seen[key] {
			return
		}
		seen[key] = true
		if t.isNamespace() {
			namespaces = append(namespaces, t)
		} else {
			out = append(out, t)
		}
	}
	for _, m := range slices.Backward(ms) {
		t := target{gvk: m.Object.GroupVersionKind(), namespace: m.Object.GetNamespace(), name: m.Object.GetName()}
		ri, _, err := k.resource(ctx, t.gvk, t.namespace)
		if err != nil {
			return nil, nil, err
		}
		obj, err := ri.Get(ctx, t.name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return nil, nil, fmt.Errorf("read %s: %w", t, err)
		}
		// The namespace goes only if install made it: it may hold more.
		if t.isNamespace() && obj.GetLabels()[manifests.PartOfLabel] != manifests.PartOf {
			notes = append(notes, fmt.Sprintf("namespace %s was not made by mesh install (no %s=%s label): deleting only mesh's objects in it", ns, manifests.PartOfLabel, manifests.PartOf))
			continue
		}
		t.terminating = obj.GetDeletionTimestamp() != nil
		add(t)
	}
	selector := manifests.PartOfLabel + "=" + manifests.PartOf
	for _, gvk := range labelledKinds {
		ri, _, err := k.resource(ctx, gvk, "")
		if err != nil {
			continue // kind not served (no CRDs API): nothing of it to delete
		}
		list, err := ri.List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			notes = append(notes, fmt.Sprintf("cannot list %ss labelled %s: %s", strings.ToLower(gvk.Kind), selector, firstLine(err.Error())))
			continue
		}
		for _, item := range list.Items {
			if manifests.IsGatewayAPICRD(&item) {
				continue // gatewayAPITargets decides about them
			}
			t := target{gvk: gvk, name: item.GetName(), terminating: item.GetDeletionTimestamp() != nil}
			// Another labelled namespace may hold another control plane:
			// only check's leftovers go with this one.
			if t.isNamespace() && t.name != ns && !strings.HasPrefix(t.name, checkNamespacePrefix) {
				notes = append(notes, fmt.Sprintf("namespace %s is labelled %s but is not %s: left in place (another control plane?)", t.name, selector, ns))
				continue
			}
			add(t)
		}
	}
	gw, gwNotes := gatewayAPITargets(ctx, k)
	for _, t := range gw {
		add(t)
	}
	notes = append(notes, gwNotes...)
	return append(out, namespaces...), notes, nil
}

// gatewayAPITargets returns the Gateway API CRDs uninstall deletes: those
// mesh install made (labelled as mesh's), and only while the cluster holds
// no object of any of their kinds (HTTPRoute, GRPCRoute). Deleting a CRD
// deletes every object of it, and a user's routes must not vanish because
// the mesh was uninstalled. They go all together or none, so that the
// release left behind stays whole. Whatever it cannot tell, it keeps.
// notes say what is kept, why, and how to delete it.
func gatewayAPITargets(ctx context.Context, k *kube) ([]target, []string) {
	selector := manifests.PartOfLabel + "=" + manifests.PartOf
	list, err := k.dynamic.Resource(crdResource).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, []string{fmt.Sprintf("cannot list customresourcedefinitions labelled %s (%s): the Gateway API CRDs are left in place", selector, firstLine(err.Error()))}
	}
	var (
		targets []target
		names   []string
		inUse   []string
	)
	for _, crd := range list.Items {
		if !manifests.IsGatewayAPICRD(&crd) {
			continue
		}
		names = append(names, crd.GetName())
		targets = append(targets, target{gvk: crdGVK, name: crd.GetName(), terminating: crd.GetDeletionTimestamp() != nil})
		objs, err := objectsOf(ctx, k, &crd)
		if err != nil {
			return nil, []string{fmt.Sprintf("kept the Gateway API CRDs mesh installed: cannot tell whether routes exist (%s).\n"+
				"Delete them by hand once kubectl get %s -A finds nothing: kubectl delete customresourcedefinition %s",
				firstLine(err.Error()), gatewayAPIKinds(list.Items), strings.Join(gatewayAPINames(list.Items), " "))}
		}
		if len(objs) > 0 {
			inUse = append(inUse, fmt.Sprintf("%d %s (%s)", len(objs), plural(len(objs), crdKind(&crd), crdKind(&crd)+"s"), summarize(objs, 3)))
		}
	}
	if len(inUse) > 0 {
		return nil, []string{fmt.Sprintf("kept the Gateway API CRDs mesh installed: deleting them would delete the cluster's %s.\n"+
			"Once those are gone (kubectl get %s -A finds nothing), delete the CRDs by hand: kubectl delete customresourcedefinition %s",
			strings.Join(inUse, ", "), gatewayAPIKinds(list.Items), strings.Join(names, " "))}
	}
	return targets, nil
}

// objectsOf lists the objects of a CRD's kind in every namespace, as
// "namespace/name", through the version it stores.
func objectsOf(ctx context.Context, k *kube, crd *unstructured.Unstructured) ([]string, error) {
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	resource, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
	version := ""
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, raw := range versions {
		v, _ := raw.(map[string]any)
		name, _ := v["name"].(string)
		if served, _ := v["served"].(bool); served && (version == "" || v["storage"] == true) {
			version = name
		}
	}
	if resource == "" || version == "" {
		return nil, fmt.Errorf("customresourcedefinition/%s names no served version", crd.GetName())
	}
	gvr := schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
	list, err := k.dynamic.Resource(gvr).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", gvr.GroupResource(), err)
	}
	out := make([]string, 0, len(list.Items))
	for _, o := range list.Items {
		out = append(out, o.GetNamespace()+"/"+o.GetName())
	}
	return out, nil
}

// crdKind is the kind a CRD defines.
func crdKind(crd *unstructured.Unstructured) string {
	kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
	return kind
}

// gatewayAPINames are the names of the Gateway API CRDs among crds.
func gatewayAPINames(crds []unstructured.Unstructured) []string {
	var out []string
	for _, c := range crds {
		if manifests.IsGatewayAPICRD(&c) {
			out = append(out, c.GetName())
		}
	}
	return out
}

// gatewayAPIKinds lists the Gateway API CRDs' resources among crds for
// kubectl get, like "httproutes.gateway.networking.k8s.io,grpcroutes...".
func gatewayAPIKinds(crds []unstructured.Unstructured) string {
	return strings.Join(gatewayAPINames(crds), ",")
}

// namespaceGone is a poll condition: the namespace no longer exists.
func namespaceGone(k *kube, name string) func(context.Context) (bool, string, error) {
	return func(ctx context.Context) (bool, string, error) {
		nsObj, err := k.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return true, "", nil
		case err != nil:
			return false, "", fatal(err)
		}
		detail := "terminating"
		for _, c := range nsObj.Status.Conditions {
			if c.Status == corev1.ConditionTrue {
				detail += "; " + c.Message
			}
		}
		return false, detail, nil
	}
}

// crdGone is a poll condition: the CRD no longer exists. Until then the
// API server is deleting the objects of its kind.
func crdGone(k *kube, name string) func(context.Context) (bool, string, error) {
	return func(ctx context.Context) (bool, string, error) {
		ri, _, err := k.resource(ctx, crdGVK, "")
		if err != nil {
			return false, "", err
		}
		_, err = ri.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return true, "", nil
		case err != nil:
			return false, "", fatal(err)
		}
		return false, "terminating: deleting its objects", nil
	}
}

// injectedPods says which pods still run a proxy of this control plane:
// uninstall leaves them alone.
func injectedPods(ctx context.Context, k *kube, ns string) string {
	pods, err := k.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: names.LabelControlPlaneNamespace + "=" + ns})
	if err != nil || len(pods.Items) == 0 {
		return "Injected workloads, if any, keep running with their proxies until they are restarted.\n"
	}
	var namespaces []string
	for _, p := range pods.Items {
		if !slices.Contains(namespaces, p.Namespace) {
			namespaces = append(namespaces, p.Namespace)
		}
	}
	return fmt.Sprintf("Injected pods keep running with their proxies, which go on forwarding traffic without the\n"+
		"controller: %d in %s %s. To remove the proxies, remove the %s annotation and\n"+
		"restart the workloads: kubectl rollout restart deployment -n NAMESPACE\n",
		len(pods.Items), plural(len(namespaces), "namespace", "namespaces"), strings.Join(namespaces, ", "), names.AnnotationInject)
}
