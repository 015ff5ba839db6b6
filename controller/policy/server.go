// Package policy is the inbound policy service of mesh-controller: the gRPC
// API (api/inbound/v1) through which a proxy learns, for its own pod, who
// may connect to each port, and every change to that.
//
// A pod's policy is computed from the policy.mesh.dev objects of its
// namespace (Server, AuthorizationPolicy, MeshTLSAuthentication,
// NetworkAuthentication, HTTPLocalRateLimitPolicy), its labels, container
// ports and probes, and the default inbound policy of the pod, its
// namespace or the install, in that order (DESIGN.md "Policy and
// traffic"). The rules a proxy author and a user need to know:
//
//   - A Server applies to the pods of its namespace its podSelector
//     selects, on its port: a number as such, a name resolved against the
//     application's containers (not the mesh's); a pod without a port of
//     that name is not selected. Two Servers on one port: the older wins
//     (creation time, then name), and it is logged.
//   - A port's authorizations are the AuthorizationPolicies that target its
//     Server or the namespace. A policy that cannot be satisfied as written
//     (it names a missing authentication, one without any valid entry, or
//     a kind it may not) is left out, so it denies rather than allows, and
//     it is logged once per change. Invalid identities and networks are
//     dropped even though the CRDs' rules refuse them; a network whose
//     except is invalid is dropped whole, as it would match too much.
//   - A Server's port carries the limits of the HTTPLocalRateLimitPolicy
//     that targets it: of several, the oldest valid one. Every rate limit
//     policy gets an Accepted condition saying whether it applies, and
//     why not (TargetNotFound, Conflicted, Invalid), written by a
//     goroutine of its own so that the API server never holds up proxies.
//   - HTTPRoutes and GRPCRoutes whose parentRefs name a Server of their
//     namespace are its inbound routes: its ports carry their matches in
//     precedence order, each route with the AuthorizationPolicies that
//     target it. A proxy answers 404 to a request none matches, and
//     allows one that matches a route if the route's policies or the
//     Server's allow its client. A Server with a GRPCRoute takes no
//     HTTPRoute (GEP-1426); a route with filters or hostnames, or naming
//     a missing, opaque or TLS Server, is refused. Each route gets
//     Accepted and ResolvedRefs entries for its Server parents under
//     controller/route's controller name, written by the status
//     goroutine; entries for other parents are never touched.
//   - Ports no Server selects get the default policy spelt out
//     (defaultAuthorizations); the kubelet's HTTP and gRPC probes of the
//     application's containers are listed so a proxy always lets them
//     through.
//   - A pod the controller does not know yet is no error: the stream waits
//     for it. A deleted pod's stream keeps its last policy.
//
// Informer handlers only mark namespaces and pods dirty; one worker
// goroutine recomputes the subscribed pods among them, so a burst of
// events for a namespace costs one recomputation. Each stream has a
// one-slot mailbox holding the newest policy not yet sent: a slow client
// gets the latest policy when it reads again, never a backlog, and never
// holds up the worker.
//
// Metrics: mesh_policy_active_streams (gauge), mesh_policy_watches_total
// {code} (Watch requests by the code they got before streaming),
// mesh_policy_updates_total (policies sent) and
// mesh_policy_updates_superseded_total (policies a newer one replaced
// before their stream sent them).
package policy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/internal/clusternet"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/workload"
)

// DefaultTrustDomain is Config.TrustDomain's default.
const DefaultTrustDomain = "cluster.local"

// Config configures a Server. The zero value of each field but the two
// factories means the default named on it.
type Config struct {
	// Informers is the shared informer factory the server watches Pods and
	// Namespaces with. Required. It may be shared with other components
	// and already started (Run starts the informers this server adds); its
	// owner shuts it down.
	Informers informers.SharedInformerFactory
	// DynamicInformers is the factory the server watches the
	// policy.mesh.dev kinds with, cluster-wide. Required, not started yet,
	// and used by no other component: New sets a transform on its
	// informers that stores typed objects. Its owner shuts it down.
	DynamicInformers dynamicinformer.DynamicSharedInformerFactory
	// StatusClient writes the status of HTTPLocalRateLimitPolicies (their
	// Accepted condition); nil means it is not written.
	StatusClient dynamic.Interface
	// Gateway is the factory of the Gateway API informers, for the
	// HTTPRoutes and GRPCRoutes attached to Servers (inbound routes). It
	// may be shared with other components and already started; its owner
	// shuts it down. Nil: the cluster serves no Gateway API, and no
	// Server has routes.
	Gateway gatewayinformers.SharedInformerFactory
	// GatewayClient writes the status entries of routes for their Server
	// parents; nil means they are not written.
	GatewayClient gatewayclient.Interface
	// TrustDomain is the SPIFFE trust domain ServiceAccount identities are
	// in; "" means cluster.local.
	TrustDomain string
	// DefaultInboundPolicy is the install's default inbound policy, one of
	// names.DefaultInboundPolicies; "" means all-unauthenticated.
	DefaultInboundPolicy string
	// ClusterNetworks spell out the cluster-authenticated and
	// cluster-unauthenticated defaults; nil means
	// clusternet.Default().
	ClusterNetworks []netip.Prefix
	// Registerer gets the server's metrics; nil means they are not
	// registered (but still kept).
	Registerer prometheus.Registerer
	// Log gets the server's logs; nil discards them.
	Log *slog.Logger

	// statusRetry is how long after a failed status write it is tried
	// again; zero means defaultStatusRetry. Tests shorten it.
	statusRetry time.Duration
}

// Server implements the InboundPolicy gRPC service. Create it with New,
// Register it on a gRPC server, and Run it; until its caches are filled,
// Watch answers UNAVAILABLE.
type Server struct {
	inboundv1.UnimplementedInboundPolicyServer

	ix           *index
	statusClient dynamic.Interface // nil: no rate limit policy status written
	// gatewayClient writes routes' status; nil: none written.
	gatewayClient gatewayclient.Interface
	statusRetry   time.Duration
	td            spiffeid.TrustDomain
	defaults      defaults
	metrics       *metrics
	log           *slog.Logger

	synced   atomic.Bool
	syncedCh chan struct{} // closed once the caches are filled
	stopping chan struct{} // closed when Run's ctx is done
	stopOnce sync.Once

	mu sync.Mutex
	// pods holds the subscribed pods, by namespace and name; namespaces
	// the built policy of each namespace that has one. Both guarded by
	// mu, as is every podState and namespaceState.
	pods       map[string]map[string]*podState
	namespaces map[string]*namespaceState
}

// podState is a subscribed pod.
type podState struct {
	key types.NamespacedName
	// last is the policy the mailboxes were last given; its policy is
	// nil until the pod is known.
	last  computed
	boxes map[*mailbox]struct{}
	// warned are the warnings last logged about the pod.
	warned map[string]struct{}
}

// namespaceState is the policy of a namespace with subscribed pods.
type namespaceState struct {
	policy *namespacePolicy
	warned map[string]struct{}
}

// New returns a Server for cfg, or an error for a bad trust domain, a bad
// default policy or a missing factory.
func New(cfg Config) (*Server, error) {
	td, err := spiffeid.TrustDomainFromString(cmp.Or(cfg.TrustDomain, DefaultTrustDomain))
	if err != nil {
		return nil, fmt.Errorf("policy: trust domain %q: %w", cfg.TrustDomain, err)
	}
	def, err := names.ParseDefaultInboundPolicy(cmp.Or(cfg.DefaultInboundPolicy, names.DefaultInboundPolicy))
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	nets := cfg.ClusterNetworks
	if nets == nil {
		nets = clusternet.Default()
	}
	for _, p := range nets {
		if !p.IsValid() {
			return nil, fmt.Errorf("policy: invalid cluster network %v", p)
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ix, err := newIndex(cfg.Informers, cfg.DynamicInformers, cfg.Gateway, cfg.Log)
	if err != nil {
		return nil, err
	}
	m := newMetrics()
	if cfg.Registerer != nil {
		if err := m.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("policy: metrics: %w", err)
		}
	}
	return &Server{
		ix:            ix,
		statusClient:  cfg.StatusClient,
		gatewayClient: cfg.GatewayClient,
		statusRetry:   cmp.Or(cfg.statusRetry, defaultStatusRetry),
		td:            td,
		defaults:      defaults{policy: def, clusterNetworks: networks(nets)},
		metrics:       m,
		log:           cfg.Log,
		syncedCh:      make(chan struct{}),
		stopping:      make(chan struct{}),
		pods:          map[string]map[string]*podState{},
		namespaces:    map[string]*namespaceState{},
	}, nil
}

// Register adds the InboundPolicy service to r, a server whose listener
// requires mesh TLS (certify.Server.MTLSServerConfig): a proxy learns only
// its own pod's policy. Watch answers PERMISSION_DENIED when the caller's
// SPIFFE ID is not the ServiceAccount identity of the pod it names, and
// UNAUTHENTICATED when the caller proved none, so the service refuses
// everyone if r is ever served without mesh TLS.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	inboundv1.RegisterInboundPolicyServer(r, meshTLSServer{s: s})
}

// RegisterLocal adds the InboundPolicy service to r without checking who
// asks: for the controller's loopback listener, which `mesh authz` reaches
// through a port-forward, so the cluster's RBAC has admitted the caller.
func (s *Server) RegisterLocal(r grpc.ServiceRegistrar) {
	inboundv1.RegisterInboundPolicyServer(r, s)
}

// meshTLSServer is the InboundPolicy service of proxies, which proved
// their identity over mesh TLS.
type meshTLSServer struct {
	inboundv1.UnimplementedInboundPolicyServer
	s *Server
}

// Watch is Server.Watch for the pod of the caller alone.
func (m meshTLSServer) Watch(req *inboundv1.WatchRequest, stream grpc.ServerStreamingServer[inboundv1.PodPolicy]) error {
	caller, err := certify.CallerOf(stream.Context())
	switch {
	case errors.Is(err, certify.ErrNoCaller):
		m.s.metrics.watch(codes.Unauthenticated)
		return status.Error(codes.Unauthenticated, "policy: "+err.Error()+"; connect with the proxy's mesh TLS certificate")
	case err != nil:
		m.s.metrics.watch(codes.PermissionDenied)
		return status.Error(codes.PermissionDenied, "policy: "+err.Error()+"; only a proxy may watch its pod's policy")
	}
	return m.s.watch(req, stream, &caller)
}

// Run watches the cluster and keeps the subscribed pods' policies current
// until ctx is done, then returns nil; it returns an error only when the
// informers cannot be set up. When ctx is done every open stream ends with
// UNAVAILABLE, so that a grpc.Server's GracefulStop after it does not wait
// for streams that would otherwise never end. Call it once.
func (s *Server) Run(ctx context.Context) error {
	context.AfterFunc(ctx, func() { s.stopOnce.Do(func() { close(s.stopping) }) })
	synced, err := s.ix.start(ctx)
	if err != nil {
		return err
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // shut down before the caches filled
	}
	s.synced.Store(true)
	close(s.syncedCh)
	s.log.Info("policy caches synced")
	if s.statusClient != nil || s.gatewayClient != nil {
		statusDone := make(chan struct{})
		go func() {
			defer close(statusDone)
			s.runStatus(ctx)
		}()
		defer func() { <-statusDone }()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.ix.dirty.wake:
			s.process(s.ix.dirty.take())
		}
	}
}

// Synced is closed once the caches are filled and Watch answers.
func (s *Server) Synced() <-chan struct{} { return s.syncedCh }

// Ready reports why the server cannot answer yet, for a readiness probe.
func (s *Server) Ready() error {
	if !s.synced.Load() {
		return errors.New("policy: waiting for the Pod, Namespace and policy.mesh.dev caches to sync (are the mesh CRDs installed?)")
	}
	return nil
}

// Watch implements the InboundPolicy service: it subscribes to the pod's
// policy and sends each new one until the client goes away or the server
// stops.
//
// Sending happens on a goroutine of its own, so that this one can end the
// stream while a Send is blocked on a client that stopped reading:
// returning makes gRPC cancel the stream, which unblocks that Send. Only
// that goroutine calls Send.
//
// Watch checks nobody: Register serves it behind a check of the caller.
func (s *Server) Watch(req *inboundv1.WatchRequest, stream grpc.ServerStreamingServer[inboundv1.PodPolicy]) error {
	return s.watch(req, stream, nil)
}

// watch is Watch for caller, the proxy asking; nil means anyone. A caller
// of another namespace than the pod's is refused at once; one of another
// ServiceAccount once the pod is known (a stream may wait for the pod),
// before any policy is sent and whenever a recreated pod of the name runs
// as another ServiceAccount.
func (s *Server) watch(req *inboundv1.WatchRequest, stream grpc.ServerStreamingServer[inboundv1.PodPolicy], caller *certify.Caller) error {
	if err := validateRequest(req); err != nil {
		s.metrics.watch(codes.InvalidArgument)
		return status.Error(codes.InvalidArgument, "policy: "+err.Error())
	}
	key := types.NamespacedName{Namespace: req.GetNamespace(), Name: req.GetPod()}
	if caller != nil {
		var sa string // unknown until the pod is cached
		if pod := s.ix.pod(key); pod != nil {
			sa = workload.ServiceAccount(pod)
		}
		if err := s.admit(*caller, key, sa); err != nil {
			s.metrics.watch(codes.PermissionDenied)
			return err
		}
	}
	if !s.synced.Load() {
		s.metrics.watch(codes.Unavailable)
		return status.Error(codes.Unavailable, "policy: caches not synced yet, retry")
	}
	select {
	case <-s.stopping:
		s.metrics.watch(codes.Unavailable)
		return status.Error(codes.Unavailable, "policy: controller shutting down")
	default:
	}
	s.metrics.watch(codes.OK)
	ctx := stream.Context()
	box, unsubscribe := s.subscribe(key)
	defer unsubscribe()
	s.metrics.active.Inc()
	defer s.metrics.active.Dec()
	s.log.Debug("policy watch", "pod", key.String(), "peer", peerAddr(ctx))

	var admit func(computed) error
	if caller != nil {
		admit = func(c computed) error { return s.admit(*caller, key, c.serviceAccount) }
	}
	sendErr := make(chan error, 1)
	go func() { sendErr <- s.send(ctx, stream, box, admit) }()
	select {
	case err := <-sendErr:
		return err // the client is gone; gRPC already knows why
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-s.stopping:
		return status.Error(codes.Unavailable, "policy: controller shutting down")
	}
}

// validateRequest checks that req names a pod as Kubernetes spells names.
func validateRequest(req *inboundv1.WatchRequest) error {
	switch {
	case req.GetNamespace() == "" || req.GetPod() == "":
		return errors.New("namespace and pod are required")
	case len(validation.IsDNS1123Label(req.GetNamespace())) > 0:
		return fmt.Errorf("namespace %q is not a Kubernetes namespace name", req.GetNamespace())
	case len(validation.IsDNS1123Subdomain(req.GetPod())) > 0:
		return fmt.Errorf("pod %q is not a Kubernetes pod name", req.GetPod())
	}
	return nil
}

// admit returns nil when caller may watch the policy of pod key, which
// runs as ServiceAccount sa ("" when not known yet: then only the
// namespace is checked), and else a PERMISSION_DENIED status saying who
// asked for what.
func (s *Server) admit(caller certify.Caller, key types.NamespacedName, sa string) error {
	if caller.ID.MemberOf(s.td) && caller.Namespace == key.Namespace && (sa == "" || caller.ServiceAccount == sa) {
		return nil
	}
	runs := "in namespace " + key.Namespace
	if id, err := spiffeid.FromSegments(s.td, "ns", key.Namespace, "sa", sa); sa != "" && err == nil {
		runs = "as " + id.String()
	}
	s.log.Debug("refused a policy watch for another pod", "caller", caller.ID.String(), "pod", key.String(), "pod_service_account", sa)
	return status.Errorf(codes.PermissionDenied,
		"policy: %s asked for the policy of pod %s, which runs %s: a proxy may watch only its own pod's policy", caller.ID, key, runs)
}

// send sends each policy box receives whose revision differs from the
// last sent, until ctx is done or a Send fails. admit, when not nil,
// vets every policy received, even one not sent again, so a caller that
// is no longer the pod's identity is cut off; its error ends the stream.
func (s *Server) send(ctx context.Context, stream grpc.ServerStreamingServer[inboundv1.PodPolicy], box *mailbox, admit func(computed) error) error {
	var sent string
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case c := <-box.ch:
			if admit != nil {
				if err := admit(c); err != nil {
					return err
				}
			}
			if c.policy.GetRevision() == sent {
				continue
			}
			if err := stream.Send(c.policy); err != nil {
				return err
			}
			sent = c.policy.GetRevision()
			s.metrics.updates.Inc()
		}
	}
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// computed is a pod's policy with the ServiceAccount the pod ran as when
// it was computed, which a proxy must prove to receive it.
type computed struct {
	policy         *inboundv1.PodPolicy
	serviceAccount string
}

// mailbox holds the newest policy a stream has not sent yet. put is
// called with Server.mu held, so puts are serial; one sender receives.
type mailbox struct {
	ch chan computed // capacity 1
}

// put leaves pp in the mailbox, replacing a policy not sent yet. It never
// blocks: the only other party takes, never puts.
func (b *mailbox) put(pp computed, superseded prometheus.Counter) {
	for {
		select {
		case b.ch <- pp:
			return
		default:
		}
		select {
		case <-b.ch:
			superseded.Inc()
		default: // the sender took it meanwhile
		}
	}
}

// subscribe adds a mailbox for the policy of pod key, with the current
// policy in it when the pod is known. unsubscribe is idempotent.
func (s *Server) subscribe(key types.NamespacedName) (box *mailbox, unsubscribe func()) {
	box = &mailbox{ch: make(chan computed, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	byName := s.pods[key.Namespace]
	if byName == nil {
		byName = map[string]*podState{}
		s.pods[key.Namespace] = byName
	}
	ps := byName[key.Name]
	if ps == nil {
		ps = &podState{key: key, boxes: map[*mailbox]struct{}{}}
		byName[key.Name] = ps
		if s.namespaces[key.Namespace] == nil {
			s.rebuildNamespace(key.Namespace)
		}
		s.refreshPod(ps)
	}
	ps.boxes[box] = struct{}{}
	if ps.last.policy != nil {
		box.put(ps.last, s.metrics.superseded)
	}
	var once sync.Once
	return box, func() { once.Do(func() { s.unsubscribe(ps, box) }) }
}

func (s *Server) unsubscribe(ps *podState, box *mailbox) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(ps.boxes, box)
	if len(ps.boxes) > 0 {
		return
	}
	byName := s.pods[ps.key.Namespace]
	delete(byName, ps.key.Name)
	if len(byName) == 0 {
		delete(s.pods, ps.key.Namespace)
		delete(s.namespaces, ps.key.Namespace)
	}
}

// process recomputes the subscribed pods among those marked dirty: every
// subscribed pod of a dirty namespace, whose policy it rebuilds first, and
// each dirty pod. Called from Run's goroutine only.
func (s *Server) process(namespaces map[string]struct{}, pods map[types.NamespacedName]struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ns := range namespaces {
		byName := s.pods[ns]
		if len(byName) == 0 {
			continue
		}
		s.rebuildNamespace(ns)
		for _, ps := range byName {
			s.refreshPod(ps)
		}
	}
	for key := range pods {
		if _, done := namespaces[key.Namespace]; done {
			continue
		}
		if ps := s.pods[key.Namespace][key.Name]; ps != nil {
			s.refreshPod(ps)
		}
	}
}

// rebuildNamespace builds the policy of namespace ns from the caches and
// logs the warnings not logged at the last build. Called with mu held.
func (s *Server) rebuildNamespace(ns string) {
	np, warnings := buildNamespace(s.ix.namespaceInputs(ns), s.td)
	st := s.namespaces[ns]
	if st == nil {
		st = &namespaceState{}
		s.namespaces[ns] = st
	}
	st.policy = np
	st.warned = s.warnNew(st.warned, warnings, "namespace", ns)
}

// refreshPod recomputes ps's policy and gives it to the mailboxes when its
// revision changed. A pod missing from the cache keeps its last policy: a
// deleted pod's proxy is going away, and one not created yet waits.
// Called with mu held, with ps's namespace built.
func (s *Server) refreshPod(ps *podState) {
	pod := s.ix.pod(ps.key)
	if pod == nil {
		return
	}
	pp, warnings := s.defaults.podPolicy(pod, s.namespaces[ps.key.Namespace].policy)
	ps.warned = s.warnNew(ps.warned, warnings, "pod", ps.key.String())
	// A pod recreated under the same name with another ServiceAccount is
	// given to the mailboxes even if its policy is the same, so the
	// streams of the old identity end.
	sa := workload.ServiceAccount(pod)
	if pp == nil || (pp.GetRevision() == ps.last.policy.GetRevision() && sa == ps.last.serviceAccount) {
		return
	}
	ps.last = computed{policy: pp, serviceAccount: sa}
	s.log.Debug("pod policy changed", "pod", ps.key.String(), "revision", pp.GetRevision(),
		"default_policy", pp.GetDefaultPolicy(), "ports", len(pp.GetPorts()))
	for box := range ps.boxes {
		box.put(ps.last, s.metrics.superseded)
	}
}

// warnNew logs the warnings that are not in before, and returns the set
// of warnings to compare the next ones with: each is logged once per
// change, not once per recomputation.
func (s *Server) warnNew(before map[string]struct{}, warnings []string, key, value string) map[string]struct{} {
	now := make(map[string]struct{}, len(warnings))
	for _, w := range warnings {
		if _, seen := before[w]; !seen {
			if _, dup := now[w]; !dup {
				s.log.Warn(w, key, value)
			}
		}
		now[w] = struct{}{}
	}
	return now
}

// metrics are the server's Prometheus metrics.
type metrics struct {
	active     prometheus.Gauge
	watches    *prometheus.CounterVec
	updates    prometheus.Counter
	superseded prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mesh_policy_active_streams",
			Help: "Inbound policy streams open now.",
		}),
		watches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_policy_watches_total",
			Help: "Inbound policy Watch requests, by the gRPC code they were answered with before streaming (OK when the stream started).",
		}, []string{"code"}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_policy_updates_total",
			Help: "Pod policies sent to proxies, the first of each stream included.",
		}),
		superseded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_policy_updates_superseded_total",
			Help: "Pod policies replaced by a newer one before their stream sent them (a slow or busy client).",
		}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.active, m.watches, m.updates, m.superseded} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *metrics) watch(code codes.Code) {
	m.watches.WithLabelValues(code.String()).Inc()
}
