package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/internal/names"
)

// index is the Kubernetes side of the server: the informer caches a
// policy is computed from, and the event handlers that mark what changed
// in a dirtySet. The handlers run on informer goroutines and never block:
// they only take the dirtySet's short lock.
type index struct {
	factory informers.SharedInformerFactory
	dynamic dynamicinformer.DynamicSharedInformerFactory
	log     *slog.Logger
	dirty   *dirtySet
	// statusDirty marks the namespaces whose HTTPLocalRateLimitPolicies'
	// or routes' status may have to change: those whose Servers, rate
	// limit policies or routes changed, subscribed pods or not.
	statusDirty *dirtySet

	pods              corelisters.PodLister
	namespaces        corelisters.NamespaceLister
	podInformer       cache.SharedIndexInformer
	namespaceInformer cache.SharedIndexInformer
	// The policy.mesh.dev informers; their caches hold the typed objects
	// (*policyv1alpha1.Server etc.), converted on the way in.
	servers, meshTLS, networks, authorizations, rateLimits cache.SharedIndexInformer
	// gateway is the factory of the Gateway API informers; it and the
	// route informers are nil when the cluster serves no Gateway API.
	gateway                gatewayinformers.SharedInformerFactory
	httpRoutes, grpcRoutes cache.SharedIndexInformer
}

func newIndex(f informers.SharedInformerFactory, d dynamicinformer.DynamicSharedInformerFactory, gw gatewayinformers.SharedInformerFactory, log *slog.Logger) (*index, error) {
	if f == nil || d == nil {
		return nil, errors.New("policy: Config.Informers and Config.DynamicInformers are required")
	}
	core := f.Core().V1()
	ix := &index{
		factory:           f,
		dynamic:           d,
		log:               log,
		dirty:             newDirtySet(),
		statusDirty:       newDirtySet(),
		pods:              core.Pods().Lister(),
		namespaces:        core.Namespaces().Lister(),
		podInformer:       core.Pods().Informer(),
		namespaceInformer: core.Namespaces().Informer(),
		servers:           d.ForResource(policyv1alpha1.ServersResource).Informer(),
		meshTLS:           d.ForResource(policyv1alpha1.MeshTLSAuthenticationsResource).Informer(),
		networks:          d.ForResource(policyv1alpha1.NetworkAuthenticationsResource).Informer(),
		authorizations:    d.ForResource(policyv1alpha1.AuthorizationPoliciesResource).Informer(),
		rateLimits:        d.ForResource(policyv1alpha1.HTTPLocalRateLimitPoliciesResource).Informer(),
	}
	if gw != nil {
		ix.gateway = gw
		ix.httpRoutes = gw.Gateway().V1().HTTPRoutes().Informer()
		ix.grpcRoutes = gw.Gateway().V1().GRPCRoutes().Informer()
	}
	for _, t := range []struct {
		informer  cache.SharedIndexInformer
		transform cache.TransformFunc
	}{
		{ix.servers, typed[policyv1alpha1.Server](log)},
		{ix.meshTLS, typed[policyv1alpha1.MeshTLSAuthentication](log)},
		{ix.networks, typed[policyv1alpha1.NetworkAuthentication](log)},
		{ix.authorizations, typed[policyv1alpha1.AuthorizationPolicy](log)},
		{ix.rateLimits, typed[policyv1alpha1.HTTPLocalRateLimitPolicy](log)},
	} {
		// Fails when the informer already runs: the factory must be one
		// this server is the first to start.
		if err := t.informer.SetTransform(t.transform); err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
	}
	return ix, nil
}

// typed returns the transform that stores a policy.mesh.dev object in the
// cache as a *T rather than as unstructured data, so that the conversion
// happens once per change and not once per read. An object that does not
// convert (the CRD schema should make that impossible) is kept with its
// metadata only, which makes it select, allow and match nothing, and is
// logged.
func typed[T any, PT interface {
	*T
	metav1.Object
}](log *slog.Logger) cache.TransformFunc {
	return func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil // already converted, or a tombstone
		}
		out := PT(new(T))
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
			log.Error("policy object does not match its schema and is ignored", "kind", u.GetKind(),
				"namespace", u.GetNamespace(), "name", u.GetName(), "error", err)
			out = PT(new(T))
			out.SetNamespace(u.GetNamespace())
			out.SetName(u.GetName())
			out.SetUID(u.GetUID())
			out.SetResourceVersion(u.GetResourceVersion())
			out.SetCreationTimestamp(u.GetCreationTimestamp())
		}
		out.SetManagedFields(nil)
		return out, nil
	}
}

// start adds the handlers (removed when ctx is done), starts the
// informers not started yet, and returns what tells when the caches are
// filled.
func (ix *index) start(ctx context.Context) ([]cache.InformerSynced, error) {
	policyHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    ix.onPolicyObject,
		UpdateFunc: func(_, obj any) { ix.onPolicyObject(obj) },
		DeleteFunc: ix.onPolicyObject,
	}
	// Status writes to a rate limit policy or a route (ours, or another
	// controller's) change nothing a pod's policy is built from: only spec
	// changes, which bump the generation, mark it.
	specHandler := cache.ResourceEventHandlerFuncs{
		AddFunc: ix.onPolicyObject,
		UpdateFunc: func(oldObj, obj any) {
			old, okOld := object[metav1.Object](oldObj)
			o, ok := object[metav1.Object](obj)
			if okOld && ok && old.GetUID() == o.GetUID() && old.GetGeneration() == o.GetGeneration() && o.GetGeneration() != 0 {
				return
			}
			ix.onPolicyObject(obj)
		},
		DeleteFunc: ix.onPolicyObject,
	}
	statusHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    ix.onStatusInput,
		UpdateFunc: func(_, obj any) { ix.onStatusInput(obj) },
		DeleteFunc: ix.onStatusInput,
	}
	type hook struct {
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
	}
	hooks := []hook{
		{ix.podInformer, cache.ResourceEventHandlerFuncs{AddFunc: ix.onPod, UpdateFunc: ix.onPodUpdate, DeleteFunc: ix.onPod}},
		{ix.namespaceInformer, cache.ResourceEventHandlerFuncs{AddFunc: ix.onNamespace, UpdateFunc: ix.onNamespaceUpdate, DeleteFunc: ix.onNamespace}},
		{ix.servers, policyHandler},
		{ix.meshTLS, policyHandler},
		{ix.networks, policyHandler},
		{ix.authorizations, policyHandler},
		{ix.rateLimits, specHandler},
		{ix.servers, statusHandler},
		{ix.rateLimits, statusHandler},
	}
	if ix.gateway != nil {
		// Any status write may have changed our entries (another
		// controller's too): the status writer sees every update and
		// writes only what differs.
		hooks = append(hooks, hook{ix.httpRoutes, specHandler}, hook{ix.grpcRoutes, specHandler},
			hook{ix.httpRoutes, statusHandler}, hook{ix.grpcRoutes, statusHandler})
	}
	synced := make([]cache.InformerSynced, 0, len(hooks))
	for _, h := range hooks {
		reg, err := h.informer.AddEventHandler(h.handler)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		context.AfterFunc(ctx, func() { _ = h.informer.RemoveEventHandler(reg) })
		synced = append(synced, reg.HasSynced)
	}
	ix.factory.Start(ctx.Done())
	ix.dynamic.Start(ctx.Done())
	if ix.gateway != nil {
		ix.gateway.Start(ctx.Done())
	}
	return synced, nil
}

// The handlers below run on informer goroutines, after the cache has the
// change.

// onPolicyObject marks the namespace of a changed policy.mesh.dev object:
// all its pods' policies may change. (A MeshTLSAuthentication's
// identityRefs to other namespaces name identities, not objects, so no
// other namespace depends on it.)
func (ix *index) onPolicyObject(obj any) {
	if o, ok := object[metav1.Object](obj); ok {
		ix.dirty.addNamespace(o.GetNamespace())
	}
}

// onStatusInput marks the namespace of a changed Server,
// HTTPLocalRateLimitPolicy or route for the status writer. A status write is an
// update of the policy too, which marks it once more; the writer then
// finds nothing to change.
func (ix *index) onStatusInput(obj any) {
	if o, ok := object[metav1.Object](obj); ok {
		ix.statusDirty.addNamespace(o.GetNamespace())
	}
}

func (ix *index) onPod(obj any) {
	if pod, ok := object[*corev1.Pod](obj); ok {
		ix.dirty.addPod(types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name})
	}
}

// onPodUpdate skips the updates that cannot change a pod's policy, most
// of them: status changes.
func (ix *index) onPodUpdate(oldObj, newObj any) {
	old, okOld := object[*corev1.Pod](oldObj)
	pod, ok := object[*corev1.Pod](newObj)
	if !ok {
		return
	}
	if okOld && old.UID == pod.UID && maps.Equal(old.Labels, pod.Labels) &&
		old.Annotations[names.AnnotationDefaultInboundPolicy] == pod.Annotations[names.AnnotationDefaultInboundPolicy] &&
		reflect.DeepEqual(old.Spec.Containers, pod.Spec.Containers) &&
		reflect.DeepEqual(old.Spec.InitContainers, pod.Spec.InitContainers) {
		return
	}
	ix.onPod(newObj)
}

func (ix *index) onNamespace(obj any) {
	if ns, ok := object[*corev1.Namespace](obj); ok {
		ix.dirty.addNamespace(ns.Name)
	}
}

func (ix *index) onNamespaceUpdate(oldObj, newObj any) {
	old, okOld := object[*corev1.Namespace](oldObj)
	ns, ok := object[*corev1.Namespace](newObj)
	if ok && (!okOld || old.Annotations[names.AnnotationDefaultInboundPolicy] != ns.Annotations[names.AnnotationDefaultInboundPolicy]) {
		ix.dirty.addNamespace(ns.Name)
	}
}

// object returns obj as a T, unwrapping the tombstone a delete event
// carries when the informer missed the deletion itself.
func object[T any](obj any) (T, bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	t, ok := obj.(T)
	return t, ok
}

// pod returns the cached pod, or nil.
func (ix *index) pod(key types.NamespacedName) *corev1.Pod {
	pod, err := ix.pods.Pods(key.Namespace).Get(key.Name)
	if err != nil {
		return nil
	}
	return pod
}

// namespaceInputs reads what the policy of namespace ns is built from.
// The objects are the caches': read them, never change them.
func (ix *index) namespaceInputs(ns string) namespaceInputs {
	in := namespaceInputs{
		name:       ns,
		servers:    inNamespace[*policyv1alpha1.Server](ix.servers, ns),
		policies:   inNamespace[*policyv1alpha1.AuthorizationPolicy](ix.authorizations, ns),
		meshTLS:    inNamespace[*policyv1alpha1.MeshTLSAuthentication](ix.meshTLS, ns),
		networks:   inNamespace[*policyv1alpha1.NetworkAuthentication](ix.networks, ns),
		rateLimits: inNamespace[*policyv1alpha1.HTTPLocalRateLimitPolicy](ix.rateLimits, ns),
	}
	if ix.gateway != nil {
		in.httpRoutes = inNamespace[*gatewayv1.HTTPRoute](ix.httpRoutes, ns)
		in.grpcRoutes = inNamespace[*gatewayv1.GRPCRoute](ix.grpcRoutes, ns)
	}
	if n, err := ix.namespaces.Get(ns); err == nil {
		in.annotations = n.Annotations
		if in.annotations == nil {
			in.annotations = map[string]string{}
		}
	}
	return in
}

// inNamespace returns the objects of type T that informer caches in ns.
func inNamespace[T any](informer cache.SharedIndexInformer, ns string) []T {
	objs, err := informer.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
	if err != nil {
		return nil
	}
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// dirtySet collects the namespaces and pods whose policies may have
// changed, until the worker takes them: many events for one namespace
// while the worker is busy cost one recomputation. Safe for concurrent
// use; its methods never block for long.
type dirtySet struct {
	mu         sync.Mutex
	namespaces map[string]struct{}               // guarded by mu
	pods       map[types.NamespacedName]struct{} // guarded by mu
	// wake holds a token while the set is not empty.
	wake chan struct{}
}

func newDirtySet() *dirtySet {
	return &dirtySet{
		namespaces: map[string]struct{}{},
		pods:       map[types.NamespacedName]struct{}{},
		wake:       make(chan struct{}, 1),
	}
}

func (d *dirtySet) addNamespace(ns string) {
	d.mu.Lock()
	d.namespaces[ns] = struct{}{}
	d.mu.Unlock()
	d.signal()
}

func (d *dirtySet) addPod(key types.NamespacedName) {
	d.mu.Lock()
	d.pods[key] = struct{}{}
	d.mu.Unlock()
	d.signal()
}

func (d *dirtySet) signal() {
	select {
	case d.wake <- struct{}{}:
	default: // a token is there already
	}
}

// take empties the set and returns what it held.
func (d *dirtySet) take() (namespaces map[string]struct{}, pods map[types.NamespacedName]struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	namespaces, pods = d.namespaces, d.pods
	d.namespaces, d.pods = map[string]struct{}{}, map[types.NamespacedName]struct{}{}
	return namespaces, pods
}
