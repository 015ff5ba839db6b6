// Package watcher is the Kubernetes side of the destination service: it
// keeps Services, EndpointSlices, Pods and Namespaces in shared-informer
// caches, resolves authorities to destinations, and tells each subscriber
// a destination's complete endpoint Set whenever it changes. It knows
// nothing of gRPC (STYLE.md); controller/destination translates Sets into
// the destination API.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Errors of Resolve; each wraps ErrNotFound, which tells the caller to let
// the proxy forward to the original address as it is.
var (
	// ErrNotFound: not a destination of the cluster.
	ErrNotFound = errors.New("not found")
	// ErrExternalName: an ExternalName Service, a DNS alias for a name
	// outside the cluster, with no endpoints the mesh could hand out. The
	// address the client resolved is already the right one.
	ErrExternalName = errors.New("ExternalName service, not in the mesh")
)

// DefaultClusterDomain is Kubernetes' default DNS domain.
const DefaultClusterDomain = "cluster.local"

// Config configures a Watcher.
type Config struct {
	// Informers is the factory the watcher takes its informers from; it may
	// be shared with other components. Required. The caller owns its
	// lifecycle (Shutdown); Start starts the informers the watcher added.
	Informers informers.SharedInformerFactory
	// ClusterDomain is the cluster's DNS domain; "" means cluster.local.
	ClusterDomain string
	// Log receives warnings about annotations and debug lines about
	// subscriptions; nil discards them.
	Log *slog.Logger
}

// Listener receives a destination's Sets.
type Listener interface {
	// Update is called with the complete current Set: once at Subscribe,
	// then each time it changes. Calls for one subscription are serial and
	// in order, made with the Watcher's lock held from informer goroutines
	// (or from Subscribe), so Update must not block and must not call the
	// Watcher. It must not modify the Set.
	Update(Set)
}

// Target is a resolved destination: a port of a Service (possibly one pod
// hostname of a headless Service), or a port of the pod with an IP.
type Target struct {
	// Service is set for a Service destination, zero for a pod IP.
	Service types.NamespacedName
	// Hostname picks one pod of a headless Service; "" means all.
	Hostname string
	// IP is set for a pod IP destination.
	IP netip.Addr
	// Port is the Service port, or the pod port for headless Services and
	// pod IPs.
	Port uint16
}

// String names t for logs.
func (t Target) String() string {
	port := strconv.Itoa(int(t.Port))
	switch {
	case t.IP.IsValid():
		return "pod " + netip.AddrPortFrom(t.IP, t.Port).String()
	case t.Hostname != "":
		return "service " + t.Service.String() + " pod " + t.Hostname + " port " + port
	}
	return "service " + t.Service.String() + " port " + port
}

// Watcher resolves destinations and watches their endpoints. Its methods are
// safe for concurrent use.
type Watcher struct {
	factory informers.SharedInformerFactory
	domain  string
	log     *slog.Logger
	lk      lookup
	// The four informers, for Start to hook into.
	services, slices, pods, namespaces cache.SharedIndexInformer

	mu sync.Mutex
	// byService and byIP hold the subscriptions with a listener, by what
	// they watch; guarded by mu, as is every subscription's state.
	byService map[types.NamespacedName]map[Target]*subscription
	byIP      map[netip.Addr]map[Target]*subscription
}

// subscription is one Target and its listeners; fields guarded by Watcher.mu.
type subscription struct {
	target    Target
	listeners map[*listener]struct{}
	// last is the Set listeners were last given.
	last Set
	// pods are the names of the pods the Service's slices refer to, so a
	// pod event only touches the subscriptions it can change.
	pods map[string]struct{}
}

// listener is a distinct handle per Subscribe call, so one Listener may
// subscribe twice.
type listener struct{ Listener }

// New returns a Watcher over cfg.Informers. It adds the watcher's indexes to
// the factory's informers, which fails when another Watcher already did.
func New(cfg Config) (*Watcher, error) {
	if cfg.Informers == nil {
		return nil, errors.New("destination watcher: Config.Informers is required")
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = DefaultClusterDomain
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	core, discovery := cfg.Informers.Core().V1(), cfg.Informers.Discovery().V1()
	w := &Watcher{
		factory:    cfg.Informers,
		domain:     cfg.ClusterDomain,
		log:        cfg.Log,
		services:   core.Services().Informer(),
		slices:     discovery.EndpointSlices().Informer(),
		pods:       core.Pods().Informer(),
		namespaces: core.Namespaces().Informer(),
		byService:  map[types.NamespacedName]map[Target]*subscription{},
		byIP:       map[netip.Addr]map[Target]*subscription{},
	}
	if err := addIndexes(w.services, w.slices, w.pods); err != nil {
		return nil, fmt.Errorf("destination watcher: %w", err)
	}
	w.lk = lookup{
		services:   core.Services().Lister(),
		serviceIdx: w.services.GetIndexer(),
		sliceIdx:   w.slices.GetIndexer(),
		pods:       core.Pods().Lister(),
		podIdx:     w.pods.GetIndexer(),
		namespaces: core.Namespaces().Lister(),
	}
	return w, nil
}

// Start hooks the watcher's handlers into the informers, starts those not
// started yet, and returns once their caches are filled, or with an error
// when ctx is done first. The handlers are removed when ctx is done. Call it
// once.
func (w *Watcher) Start(ctx context.Context) error {
	hooks := []struct {
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
	}{
		{w.services, cache.ResourceEventHandlerFuncs{AddFunc: w.onService, UpdateFunc: w.onServiceUpdate, DeleteFunc: w.onService}},
		{w.slices, cache.ResourceEventHandlerFuncs{AddFunc: w.onSlice, UpdateFunc: w.onSliceUpdate, DeleteFunc: w.onSlice}},
		{w.pods, cache.ResourceEventHandlerFuncs{AddFunc: w.onPod, UpdateFunc: w.onPodUpdate, DeleteFunc: w.onPod}},
		{w.namespaces, cache.ResourceEventHandlerFuncs{AddFunc: w.onNamespace, UpdateFunc: w.onNamespaceUpdate, DeleteFunc: w.onNamespace}},
	}
	synced := make([]cache.InformerSynced, 0, len(hooks))
	for _, h := range hooks {
		reg, err := h.informer.AddEventHandler(h.handler)
		if err != nil {
			return fmt.Errorf("destination watcher: %w", err)
		}
		context.AfterFunc(ctx, func() { _ = h.informer.RemoveEventHandler(reg) })
		synced = append(synced, reg.HasSynced)
	}
	w.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("destination watcher: caches not synced: %w", context.Cause(ctx))
	}
	return nil
}

// Resolve finds the destination a names. A name is tried, like a pod's DNS
// resolver would, with the search path of a pod in contextNamespace first;
// the first that names an existing Service wins (a per-pod name only counts
// for a headless Service). An IP is a Service's cluster IP or a live pod's
// IP. The errors wrap ErrNotFound.
func (w *Watcher) Resolve(a Authority, contextNamespace string) (Target, error) {
	if a.IP.IsValid() {
		return w.resolveIP(a)
	}
	for _, name := range searchNames(a.Host, a.Absolute, contextNamespace, w.domain) {
		n, ok := parseServiceName(name, w.domain)
		if !ok {
			continue
		}
		key := types.NamespacedName{Namespace: n.Namespace, Name: n.Service}
		svc := w.lk.service(key)
		if svc == nil {
			continue
		}
		headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
		if n.Hostname != "" && !headless {
			continue // Kubernetes DNS has no per-pod names for it either
		}
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			return Target{}, fmt.Errorf("%w: %w: service %s is an alias for %s", ErrNotFound, ErrExternalName, key, svc.Spec.ExternalName)
		}
		if !headless && servicePort(svc, a.Port) == nil {
			return Target{}, fmt.Errorf("%w: service %s has no TCP port %d", ErrNotFound, key, a.Port)
		}
		return Target{Service: key, Hostname: n.Hostname, Port: a.Port}, nil
	}
	return Target{}, fmt.Errorf("%w: %s is not a service of the cluster", ErrNotFound, a)
}

func (w *Watcher) resolveIP(a Authority) (Target, error) {
	if svc := w.lk.serviceByIP(a.IP); svc != nil {
		key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		if servicePort(svc, a.Port) == nil {
			return Target{}, fmt.Errorf("%w: service %s has no TCP port %d", ErrNotFound, key, a.Port)
		}
		return Target{Service: key, Port: a.Port}, nil
	}
	if w.lk.podByIP(a.IP) != nil {
		return Target{IP: a.IP, Port: a.Port}, nil
	}
	return Target{}, fmt.Errorf("%w: %s is neither a service's cluster IP nor a pod's IP", ErrNotFound, a.IP)
}

// Subscribe gives l the current Set of t at once and every change after,
// until cancel is called. A Target that no longer exists is watched all the
// same (its Set has Exists false), so a Service deleted between Resolve and
// Subscribe, or recreated later, is followed. cancel is idempotent; once it
// returns, l is not called again.
func (w *Watcher) Subscribe(t Target, l Listener) (cancel func()) {
	h := &listener{l}
	w.mu.Lock()
	defer w.mu.Unlock()
	subs := w.index(t)
	s, ok := subs[t]
	if !ok {
		s = &subscription{target: t, listeners: map[*listener]struct{}{}}
		s.last = w.compute(s)
		subs[t] = s
	}
	s.listeners[h] = struct{}{}
	h.Update(s.last)
	w.log.Debug("subscribed", "target", t.String(), "endpoints", len(s.last.Endpoints), "exists", s.last.Exists)
	var once sync.Once
	return func() { once.Do(func() { w.unsubscribe(s, h) }) }
}

func (w *Watcher) unsubscribe(s *subscription, h *listener) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(s.listeners, h)
	if len(s.listeners) > 0 {
		return
	}
	subs := w.index(s.target)
	delete(subs, s.target)
	if len(subs) == 0 {
		if s.target.IP.IsValid() {
			delete(w.byIP, s.target.IP)
		} else {
			delete(w.byService, s.target.Service)
		}
	}
}

// index returns the map t's subscription lives in, creating it. Called
// with mu held.
func (w *Watcher) index(t Target) map[Target]*subscription {
	var subs map[Target]*subscription
	if t.IP.IsValid() {
		if subs = w.byIP[t.IP]; subs == nil {
			subs = map[Target]*subscription{}
			w.byIP[t.IP] = subs
		}
	} else if subs = w.byService[t.Service]; subs == nil {
		subs = map[Target]*subscription{}
		w.byService[t.Service] = subs
	}
	return subs
}

// compute returns s's Set from the caches, updating s.pods. Called with mu
// held.
func (w *Watcher) compute(s *subscription) Set {
	if s.target.IP.IsValid() {
		return podIPEndpoints(s.target, &w.lk)
	}
	key := s.target.Service
	var set Set
	set, s.pods = serviceEndpoints(s.target, w.lk.service(key), w.lk.slicesOf(key), &w.lk)
	return set
}

// refresh recomputes s and tells its listeners when the Set changed. An
// informer event that changes nothing a proxy sees (a pod's status, a
// slice's generation) goes no further. Called with mu held.
func (w *Watcher) refresh(s *subscription) {
	set := w.compute(s)
	if set.Equal(s.last) {
		return
	}
	s.last = set
	for h := range s.listeners {
		h.Update(set)
	}
}

// lookup reads the informer caches. Its methods return nil for what the
// cache does not hold; the caches are safe for concurrent reads.
type lookup struct {
	services   corelisters.ServiceLister
	serviceIdx cache.Indexer
	sliceIdx   cache.Indexer
	pods       corelisters.PodLister
	podIdx     cache.Indexer
	namespaces corelisters.NamespaceLister
}

func (lk *lookup) service(key types.NamespacedName) *corev1.Service {
	svc, err := lk.services.Services(key.Namespace).Get(key.Name)
	if err != nil {
		return nil
	}
	return svc
}

func (lk *lookup) pod(namespace, name string) *corev1.Pod {
	pod, err := lk.pods.Pods(namespace).Get(name)
	if err != nil {
		return nil
	}
	return pod
}

func (lk *lookup) namespace(name string) *corev1.Namespace {
	ns, err := lk.namespaces.Get(name)
	if err != nil {
		return nil
	}
	return ns
}

func (lk *lookup) slicesOf(key types.NamespacedName) []*discoveryv1.EndpointSlice {
	return byIndex[*discoveryv1.EndpointSlice](lk.sliceIdx, indexSliceService, key.String())
}

// serviceByIP returns the Service whose cluster IP is ip. Cluster IPs are
// unique; should two Services claim one while the API server reallocates,
// the oldest wins.
func (lk *lookup) serviceByIP(ip netip.Addr) *corev1.Service {
	svcs := byIndex[*corev1.Service](lk.serviceIdx, indexServiceIP, ip.String())
	var oldest *corev1.Service
	for _, svc := range svcs {
		if oldest == nil || svc.CreationTimestamp.Before(&oldest.CreationTimestamp) {
			oldest = svc
		}
	}
	return oldest
}

func (lk *lookup) podByIP(ip netip.Addr) *corev1.Pod {
	return firstLivePod(byIndex[*corev1.Pod](lk.podIdx, indexPodIP, ip.String()))
}
