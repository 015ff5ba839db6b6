package route

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
)

// Config configures an Index.
type Config struct {
	// Informers is the shared factory the index watches Services with.
	// Required; it may be shared and already started (Run starts the
	// informers the index adds); its owner shuts it down.
	Informers informers.SharedInformerFactory
	// Gateway is the factory of the Gateway API informers. Required; its
	// owner shuts it down.
	Gateway gatewayinformers.SharedInformerFactory
	// Policy is the dynamic factory of the policy.mesh.dev informers, for
	// the HTTPFaults that routes' ExtensionRef filters name. It may be
	// shared with other components, which must not set a transform on the
	// HTTPFault informer (the index sets its own), and its owner shuts it
	// down. nil: the index watches no HTTPFault, so every ExtensionRef
	// naming one is unresolved (its rule answers 500).
	Policy dynamicinformer.DynamicSharedInformerFactory
	// Client writes route status; nil means status is not written.
	Client gatewayclient.Interface
	// Events records a Warning Event on a Service for each bad traffic
	// annotation it gets (docs/traffic.md 2.3: a Service has no status of
	// ours); nil means they are only logged.
	Events events.EventRecorder
	// Coalesce is how long the index waits after a change for more before
	// it rebuilds; zero means 50ms (docs/traffic.md 2.4).
	Coalesce time.Duration
	// Log gets the index's logs; nil discards them.
	Log *slog.Logger
}

// Index keeps the current Snapshot of the cluster's routes. Readers take
// it with Snapshot; one goroutine (Run) rebuilds it. Safe for concurrent
// use.
type Index struct {
	cfg      Config
	log      *slog.Logger
	services corelisters.ServiceLister
	http     gatewaylisters.HTTPRouteLister
	grpc     gatewaylisters.GRPCRouteLister
	// faults caches the HTTPFaults as *policyv1alpha1.HTTPFault; nil
	// without Config.Policy.
	faults cache.SharedIndexInformer
	// informers the handlers go on: Services, HTTPRoutes, GRPCRoutes,
	// HTTPFaults.
	watched []cache.SharedIndexInformer
	// wake holds a token while a change waits for a rebuild.
	wake chan struct{}
	// ready is closed once the first Snapshot is published.
	ready chan struct{}
	// warned are the Services' warnings already reported, so that a
	// rebuild reports only new ones. Run's goroutine only.
	warned map[types.NamespacedName][]string

	mu sync.Mutex
	// snap is the current snapshot; changed is closed and replaced when a
	// new one is published. Both guarded by mu.
	snap    *Snapshot
	changed chan struct{}
}

// New returns an Index; it adds its informers to the factories, so it
// must come before they are started.
func New(cfg Config) (*Index, error) {
	if cfg.Informers == nil || cfg.Gateway == nil {
		return nil, errors.New("route: Config.Informers and Config.Gateway are required")
	}
	if cfg.Coalesce == 0 {
		cfg.Coalesce = 50 * time.Millisecond
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	svc := cfg.Informers.Core().V1().Services()
	gw := cfg.Gateway.Gateway().V1()
	ix := &Index{
		cfg: cfg, log: log,
		services: svc.Lister(),
		http:     gw.HTTPRoutes().Lister(),
		grpc:     gw.GRPCRoutes().Lister(),
		watched:  []cache.SharedIndexInformer{svc.Informer(), gw.HTTPRoutes().Informer(), gw.GRPCRoutes().Informer()},
		wake:     make(chan struct{}, 1),
		ready:    make(chan struct{}),
		changed:  make(chan struct{}),
		warned:   map[types.NamespacedName][]string{},
	}
	if cfg.Policy != nil {
		ix.faults = cfg.Policy.ForResource(policyv1alpha1.HTTPFaultsResource).Informer()
		// Fails when the informer already runs: the factory must not
		// have been started.
		if err := ix.faults.SetTransform(typedFault(log)); err != nil {
			return nil, fmt.Errorf("route: HTTPFault informer: %w", err)
		}
		ix.watched = append(ix.watched, ix.faults)
	}
	return ix, nil
}

// Ready is closed once the index has published its first Snapshot.
func (ix *Index) Ready() <-chan struct{} { return ix.ready }

// Snapshot returns the current snapshot (nil before Ready) and a channel
// closed when a newer one replaces it. Never blocks for long.
func (ix *Index) Snapshot() (*Snapshot, <-chan struct{}) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.snap, ix.changed
}

// Run watches until ctx is done, rebuilding the snapshot and writing
// route status after each burst of changes.
func (ix *Index) Run(ctx context.Context) error {
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { ix.signal() },
		UpdateFunc: func(_, _ any) { ix.signal() },
		DeleteFunc: func(any) { ix.signal() },
	}
	synced := make([]cache.InformerSynced, 0, len(ix.watched))
	for _, inf := range ix.watched {
		reg, err := inf.AddEventHandler(h)
		if err != nil {
			return fmt.Errorf("route: %w", err)
		}
		context.AfterFunc(ctx, func() { _ = inf.RemoveEventHandler(reg) })
		synced = append(synced, reg.HasSynced)
	}
	ix.cfg.Informers.Start(ctx.Done())
	ix.cfg.Gateway.Start(ctx.Done())
	if ix.cfg.Policy != nil {
		ix.cfg.Policy.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx ended first
	}
	ix.signal()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ix.wake:
		}
		// Coalesce a burst of events into one rebuild.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(ix.cfg.Coalesce):
		}
		select {
		case <-ix.wake:
		default:
		}
		snap := ix.rebuild()
		ix.publish(snap)
		ix.warn(snap)
		if ix.cfg.Client != nil {
			ix.writeStatus(ctx, snap)
		}
	}
}

// signal asks for a rebuild; informer handlers call it and it never
// blocks.
func (ix *Index) signal() {
	select {
	case ix.wake <- struct{}{}:
	default:
	}
}

func (ix *Index) rebuild() *Snapshot {
	var in Inputs
	var err error
	if in.Services, err = ix.services.List(labels.Everything()); err != nil {
		ix.log.Error("listing Services from the cache", "error", err)
	}
	if in.HTTPRoutes, err = ix.http.List(labels.Everything()); err != nil {
		ix.log.Error("listing HTTPRoutes from the cache", "error", err)
	}
	if in.GRPCRoutes, err = ix.grpc.List(labels.Everything()); err != nil {
		ix.log.Error("listing GRPCRoutes from the cache", "error", err)
	}
	if ix.faults != nil {
		for _, o := range ix.faults.GetStore().List() {
			if f, ok := o.(*policyv1alpha1.HTTPFault); ok {
				in.Faults = append(in.Faults, f)
			}
		}
	}
	return Build(in)
}

func (ix *Index) publish(snap *Snapshot) {
	ix.mu.Lock()
	first := ix.snap == nil
	ix.snap = snap
	close(ix.changed)
	ix.changed = make(chan struct{})
	ix.mu.Unlock()
	if first {
		close(ix.ready)
	}
}

// ReasonInvalidAnnotation is the reason of the Events on a Service whose
// traffic annotation was ignored, for `mesh check` to find them.
const ReasonInvalidAnnotation = "InvalidAnnotation"

// warn logs and records as Events the warnings of snap that were not
// there before: each once while it lasts, however many rebuilds come.
func (ix *Index) warn(snap *Snapshot) {
	for name, ws := range snap.Warnings {
		old := ix.warned[name]
		var svc *corev1.Service
		for _, w := range ws {
			if slices.Contains(old, w) {
				continue
			}
			ix.log.Warn("Service traffic annotation ignored", "service", name.String(), "problem", w)
			if ix.cfg.Events == nil {
				continue
			}
			if svc == nil {
				var err error
				if svc, err = ix.services.Services(name.Namespace).Get(name.Name); err != nil {
					break // gone since the rebuild: nothing to warn about
				}
			}
			ix.cfg.Events.Eventf(svc, nil, corev1.EventTypeWarning, ReasonInvalidAnnotation, "Route", "%s", w)
		}
	}
	ix.warned = snap.Warnings
}

// writeStatus writes the status of every route whose mesh entries
// differ from snap's. A write that fails (a conflict with a newer
// version, most often) is logged; the newer version's event brings
// another rebuild, which tries again.
func (ix *Index) writeStatus(ctx context.Context, snap *Snapshot) {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	https, _ := ix.http.List(labels.Everything())
	for _, r := range https {
		ref := RouteRef{Kind: KindHTTPRoute, Namespace: r.Namespace, Name: r.Name}
		parents, changed := parentStatuses(r.Status.Parents, snap.Status[ref], now)
		if !changed {
			continue
		}
		u := r.DeepCopy()
		u.Status.Parents = parents
		_, err := ix.cfg.Client.GatewayV1().HTTPRoutes(r.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: "mesh-controller"})
		ix.logWrite(ref, err)
	}
	grpcs, _ := ix.grpc.List(labels.Everything())
	for _, r := range grpcs {
		ref := RouteRef{Kind: KindGRPCRoute, Namespace: r.Namespace, Name: r.Name}
		parents, changed := parentStatuses(r.Status.Parents, snap.Status[ref], now)
		if !changed {
			continue
		}
		u := r.DeepCopy()
		u.Status.Parents = parents
		_, err := ix.cfg.Client.GatewayV1().GRPCRoutes(r.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: "mesh-controller"})
		ix.logWrite(ref, err)
	}
}

func (ix *Index) logWrite(ref RouteRef, err error) {
	switch {
	case err == nil:
		ix.log.Debug("route status written", "kind", ref.Kind, "namespace", ref.Namespace, "name", ref.Name)
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		ix.log.Debug("route status not written: the route changed", "kind", ref.Kind, "namespace", ref.Namespace, "name", ref.Name, "error", err)
	default:
		ix.log.Error("writing route status", "kind", ref.Kind, "namespace", ref.Namespace, "name", ref.Name, "error", err)
	}
}
