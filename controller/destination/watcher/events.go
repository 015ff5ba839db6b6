package watcher

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/ports"
)

// Names of the indexes the watcher adds to the shared informers, prefixed so
// they cannot clash with another component's on a shared factory.
const (
	indexServiceIP    = "mesh.dev/destination-cluster-ip"
	indexSliceService = "mesh.dev/destination-service"
	indexPodIP        = "mesh.dev/destination-pod-ip"
)

func addIndexes(services, slices, pods cache.SharedIndexInformer) error {
	for _, ix := range []struct {
		informer cache.SharedIndexInformer
		name     string
		fn       cache.IndexFunc
	}{
		{services, indexServiceIP, serviceIPs},
		{slices, indexSliceService, sliceService},
		{pods, indexPodIP, podIPs},
	} {
		if err := ix.informer.AddIndexers(cache.Indexers{ix.name: ix.fn}); err != nil {
			return fmt.Errorf("index %s: %w", ix.name, err)
		}
	}
	return nil
}

// serviceIPs indexes a Service by its cluster IPs (none for headless and
// ExternalName Services), in netip's canonical text.
func serviceIPs(obj any) ([]string, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil, nil
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	return canonicalIPs(ips), nil
}

// sliceService indexes an EndpointSlice by the namespace/name of the
// Service it belongs to.
func sliceService(obj any) ([]string, error) {
	slice, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	if key, ok := sliceKey(slice); ok {
		return []string{key.String()}, nil
	}
	return nil, nil
}

func sliceKey(slice *discoveryv1.EndpointSlice) (types.NamespacedName, bool) {
	name := slice.Labels[discoveryv1.LabelServiceName]
	return types.NamespacedName{Namespace: slice.Namespace, Name: name}, name != ""
}

// podIPs indexes a pod by its IPs.
func podIPs(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	return canonicalIPs(podIPTexts(pod)), nil
}

func podIPTexts(pod *corev1.Pod) []string {
	ips := make([]string, 0, len(pod.Status.PodIPs)+1)
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = append(ips, pod.Status.PodIP)
	}
	return ips
}

// canonicalIPs parses ips, dropping what is not an IP ("None"), so that
// index keys compare equal however the API server spelled an address.
func canonicalIPs(ips []string) []string {
	out := make([]string, 0, len(ips))
	for _, s := range ips {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip.Unmap().String())
		}
	}
	return out
}

// byIndex returns the cached objects of type T under value of the named
// index.
func byIndex[T any](idx cache.Indexer, name, value string) []T {
	objs, err := idx.ByIndex(name, value)
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

// object returns obj as a T, unwrapping the tombstone a delete event carries
// when the informer missed the deletion itself.
func object[T any](obj any) (T, bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	t, ok := obj.(T)
	return t, ok
}

// The handlers below run on the informers' goroutines, after the cache has
// the change. They take the Watcher's lock and call listeners, which never
// block, so no handler does either.

func (w *Watcher) onService(obj any) {
	if svc, ok := object[*corev1.Service](obj); ok {
		w.warnOpaque("service", svc.Namespace+"/"+svc.Name, nil, svc.Annotations)
		w.serviceChanged(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
	}
}

func (w *Watcher) onServiceUpdate(oldObj, newObj any) {
	old, _ := object[*corev1.Service](oldObj)
	if svc, ok := object[*corev1.Service](newObj); ok {
		var before map[string]string
		if old != nil {
			before = old.Annotations
		}
		w.warnOpaque("service", svc.Namespace+"/"+svc.Name, before, svc.Annotations)
		w.serviceChanged(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
	}
}

func (w *Watcher) onSlice(obj any) {
	if slice, ok := object[*discoveryv1.EndpointSlice](obj); ok {
		if key, ok := sliceKey(slice); ok {
			w.serviceChanged(key)
		}
	}
}

// onSliceUpdate also refreshes the Service a slice no longer belongs to,
// should its service-name label change.
func (w *Watcher) onSliceUpdate(oldObj, newObj any) {
	w.onSlice(newObj)
	old, okOld := object[*discoveryv1.EndpointSlice](oldObj)
	cur, okCur := object[*discoveryv1.EndpointSlice](newObj)
	if okOld && okCur && old.Labels[discoveryv1.LabelServiceName] != cur.Labels[discoveryv1.LabelServiceName] {
		w.onSlice(oldObj)
	}
}

func (w *Watcher) serviceChanged(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.byService[key] {
		w.refresh(s)
	}
}

func (w *Watcher) onPod(obj any) {
	if pod, ok := object[*corev1.Pod](obj); ok {
		w.podChanged(pod, nil)
	}
}

func (w *Watcher) onPodUpdate(oldObj, newObj any) {
	old, _ := object[*corev1.Pod](oldObj)
	if pod, ok := object[*corev1.Pod](newObj); ok {
		w.podChanged(pod, old)
	}
}

// podChanged refreshes the Service subscriptions whose slices name pod and
// the pod-IP subscriptions of its IPs, old and new (an IP can pass from one
// pod to another).
func (w *Watcher) podChanged(pod, old *corev1.Pod) {
	ips := podIPTexts(pod)
	if old != nil {
		ips = append(ips, podIPTexts(old)...)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for key, subs := range w.byService {
		if key.Namespace != pod.Namespace {
			continue
		}
		for _, s := range subs {
			if _, ok := s.pods[pod.Name]; ok {
				w.refresh(s)
			}
		}
	}
	seen := map[netip.Addr]bool{}
	for _, text := range canonicalIPs(ips) {
		ip := netip.MustParseAddr(text)
		if seen[ip] {
			continue
		}
		seen[ip] = true
		for _, s := range w.byIP[ip] {
			w.refresh(s)
		}
	}
}

func (w *Watcher) onNamespace(obj any) {
	if ns, ok := object[*corev1.Namespace](obj); ok {
		w.warnOpaque("namespace", ns.Name, nil, ns.Annotations)
		w.namespaceChanged(ns.Name)
	}
}

// onNamespaceUpdate acts on the one thing of a namespace the watcher reads,
// its opaque-ports annotation.
func (w *Watcher) onNamespaceUpdate(oldObj, newObj any) {
	old, okOld := object[*corev1.Namespace](oldObj)
	ns, ok := object[*corev1.Namespace](newObj)
	if !ok {
		return
	}
	if okOld {
		before, hadBefore := old.Annotations[names.AnnotationOpaquePorts]
		after, hasAfter := ns.Annotations[names.AnnotationOpaquePorts]
		if before == after && hadBefore == hasAfter {
			return
		}
		w.warnOpaque("namespace", ns.Name, old.Annotations, ns.Annotations)
	}
	w.namespaceChanged(ns.Name)
}

// namespaceChanged refreshes every subscription that can read the
// namespace's annotations: its Services', and pod IPs' (few, and namespace
// changes are rare, so all of them).
func (w *Watcher) namespaceChanged(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for key, subs := range w.byService {
		if key.Namespace != name {
			continue
		}
		for _, s := range subs {
			w.refresh(s)
		}
	}
	for _, subs := range w.byIP {
		for _, s := range subs {
			w.refresh(s)
		}
	}
}

// warnOpaque logs a malformed opaque-ports annotation once per change of its
// value: it is ignored, and nothing else tells the user. (The injector warns
// about pods' own annotations when it admits them.)
func (w *Watcher) warnOpaque(kind, name string, before, after map[string]string) {
	v, ok := after[names.AnnotationOpaquePorts]
	if !ok {
		return
	}
	if old, had := before[names.AnnotationOpaquePorts]; had && old == v {
		return
	}
	if _, err := ports.Parse(v); err != nil {
		w.log.Warn("ignoring malformed annotation", "kind", kind, "name", name,
			"annotation", names.AnnotationOpaquePorts, "value", v, "error", err)
	}
}
