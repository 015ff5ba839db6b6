// Package destination is the destination service of mesh-controller: the
// gRPC API (api/destination/v1) through which a proxy learns the endpoints
// behind an authority, each with its SPIFFE identity, protocol hint, zone
// and metric labels, and every change to them.
//
// The Kubernetes side lives in controller/destination/watcher; this package
// translates its endpoint Sets into protobuf Updates and owns the gRPC
// edge, the only place errors become status codes.
//
// Decisions a proxy author needs to know (the proto says the same):
//   - Anything the mesh cannot hand endpoints for ends the stream at once
//     with NOT_FOUND, meaning "forward to the original address as it is":
//     names outside the cluster, unknown IPs, a Service without the port,
//     and ExternalName Services (a DNS alias whose target the client has
//     already resolved; the mesh has no endpoints or identity for it).
//   - A known Service with no usable endpoint gets NoEndpoints and the
//     stream stays open; endpoints arrive later as an Add. A deleted
//     Service gets NoEndpoints{exists: false}, and is followed if recreated.
//   - Endpoints whose EndpointSlice condition is ready are handed out.
//     Terminating ones are withdrawn as soon as they start terminating,
//     unless no endpoint is ready, in which case those still serving are
//     used until they stop (kube-proxy's rule, KEP-1669).
//   - A headless Service's endpoints, and a pod IP's, use the port asked
//     for; a cluster IP Service's use the target port as resolved per pod.
//   - A client that falls more than Config.QueueSize updates behind is cut
//     off with RESOURCE_EXHAUSTED and should ask again; informer callbacks
//     never wait for it.
//   - Routes streams the Gateway API route table of a Service port for the
//     caller's namespace from controller/route's index (routes.go
//     translates it): complete tables, so a slow client simply gets the
//     latest when it reads again, and a table that cannot be translated is
//     not sent, leaving the client its last good one.
package destination

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/informers"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/controller/destination/watcher"
	"github.com/mesh-dev/mesh/identity/certify"
)

// Defaults of Config.
const (
	DefaultTrustDomain = "cluster.local"
	// DefaultQueueSize is the Updates a stream may have waiting for its
	// client. One informer event makes at most two, so this rides out a
	// burst (a Deployment rolled at once) while a client that stopped
	// reading is found within a few seconds of churn.
	DefaultQueueSize = 100
)

// Config configures a Server. The zero value of each field but Informers
// means the default named on it.
type Config struct {
	// Informers is the shared informer factory the server watches Services,
	// EndpointSlices, Pods and Namespaces with. Required. It may be shared
	// with other components and already started (Start starts the informers
	// this server adds); its owner shuts it down. Only one Server may use a
	// factory: New adds indexes whose names would clash.
	Informers informers.SharedInformerFactory
	// ClusterDomain is the cluster's DNS domain; "" means cluster.local.
	ClusterDomain string
	// TrustDomain is the SPIFFE trust domain of endpoint identities; ""
	// means cluster.local.
	TrustDomain string
	// QueueSize is how many Updates a stream may have queued before its
	// client counts as slow and is disconnected; 0 means DefaultQueueSize.
	QueueSize int
	// Routes is the route index the Routes RPC serves; nil makes Routes
	// answer UNIMPLEMENTED, so proxies forward as without routes.
	Routes RouteSource
	// Registerer gets the server's metrics; nil means they are not
	// registered (but still kept).
	Registerer prometheus.Registerer
	// Log gets the server's logs; nil discards them.
	Log *slog.Logger
}

// Server implements the Destination gRPC service. Create it with New,
// Register it on a gRPC server, and Start it; until Start returns, Get
// answers UNAVAILABLE.
type Server struct {
	destinationv1.UnimplementedDestinationServer

	watcher     *watcher.Watcher
	td          spiffeid.TrustDomain
	routeSource RouteSource // nil: no routes
	domain      string      // the cluster's DNS domain
	queueSize   int
	metrics     *metrics
	log         *slog.Logger

	synced   atomic.Bool   // set once the caches are filled
	stopping chan struct{} // closed when Start's ctx is done
	stopOnce sync.Once
}

// New returns a Server for cfg, or an error for a bad trust domain, a
// negative queue size or a missing factory.
func New(cfg Config) (*Server, error) {
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("destination: trust domain %q: %w", cfg.TrustDomain, err)
	}
	switch {
	case cfg.QueueSize < 0:
		return nil, fmt.Errorf("destination: queue size %d is negative", cfg.QueueSize)
	case cfg.QueueSize == 0:
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = watcher.DefaultClusterDomain
	}
	w, err := watcher.New(watcher.Config{Informers: cfg.Informers, ClusterDomain: cfg.ClusterDomain, Log: cfg.Log})
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	m := newMetrics()
	if cfg.Registerer != nil {
		if err := m.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("destination: metrics: %w", err)
		}
	}
	return &Server{
		watcher:     w,
		td:          td,
		routeSource: cfg.Routes,
		domain:      cfg.ClusterDomain,
		queueSize:   cfg.QueueSize,
		metrics:     m,
		log:         cfg.Log,
		stopping:    make(chan struct{}),
	}, nil
}

// Register adds the Destination service to r, a server whose listener
// requires mesh TLS (certify.Server.MTLSServerConfig): Get expands short
// names in the namespace of the caller's proven identity, whatever the
// request's context_namespace says, and answers UNAUTHENTICATED to a
// caller that proved none, so the service refuses everyone if r is ever
// served without mesh TLS.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	destinationv1.RegisterDestinationServer(r, meshTLSServer{s: s})
}

// RegisterLocal adds the Destination service to r as the request says,
// for the controller's loopback listener, which only a user the cluster's
// RBAC lets port-forward to the controller reaches.
func (s *Server) RegisterLocal(r grpc.ServiceRegistrar) {
	destinationv1.RegisterDestinationServer(r, s)
}

// meshTLSServer is the Destination service of proxies, which proved
// their identity over mesh TLS.
type meshTLSServer struct {
	destinationv1.UnimplementedDestinationServer
	s *Server
}

// Get is Server.Get in the caller's namespace.
func (m meshTLSServer) Get(req *destinationv1.GetDestinationRequest, stream grpc.ServerStreamingServer[destinationv1.Update]) error {
	ns, err := callerNamespace(stream)
	if err != nil {
		m.s.metrics.lookup(status.Code(err))
		return err
	}
	return m.s.get(req, ns, stream)
}

// callerNamespace returns the namespace of the identity the caller proved
// over mesh TLS, or the gRPC error that refuses it.
func callerNamespace(stream grpc.ServerStream) (string, error) {
	caller, err := certify.CallerOf(stream.Context())
	switch {
	case errors.Is(err, certify.ErrNoCaller):
		return "", status.Error(codes.Unauthenticated, "destination: "+err.Error()+"; connect with the proxy's mesh TLS certificate")
	case err != nil:
		return "", status.Error(codes.PermissionDenied, "destination: "+err.Error()+"; only a proxy may ask for destinations")
	}
	return caller.Namespace, nil
}

// Start starts watching the cluster and returns once the caches are filled
// (nil), or when ctx is done first (an error). When ctx is done, every open
// stream ends with UNAVAILABLE, so that a grpc.Server's GracefulStop after
// it does not wait for streams that would otherwise never end.
func (s *Server) Start(ctx context.Context) error {
	context.AfterFunc(ctx, func() { s.stopOnce.Do(func() { close(s.stopping) }) })
	if err := s.watcher.Start(ctx); err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	s.synced.Store(true)
	s.log.Info("destination caches synced")
	return nil
}

// Ready reports why the server cannot answer yet, for a readiness probe.
func (s *Server) Ready() error {
	if !s.synced.Load() {
		return errors.New("destination: waiting for the Service, EndpointSlice, Pod and Namespace caches to sync")
	}
	return nil
}

// Get implements the Destination service: it resolves the authority,
// subscribes to it, and sends its Updates until the client goes away, falls
// behind, or the server stops.
//
// Sending happens on a goroutine of its own, so that this one can end the
// stream while a Send is blocked on a client that stopped reading: returning
// makes gRPC cancel the stream, which unblocks that Send. Only that
// goroutine calls Send.
//
// Get trusts the request's context_namespace: Register serves it behind
// mesh TLS with the caller's namespace instead.
func (s *Server) Get(req *destinationv1.GetDestinationRequest, stream grpc.ServerStreamingServer[destinationv1.Update]) error {
	return s.get(req, req.GetContextNamespace(), stream)
}

// get is Get with short names expanded in contextNS.
func (s *Server) get(req *destinationv1.GetDestinationRequest, contextNS string, stream grpc.ServerStreamingServer[destinationv1.Update]) error {
	if !s.synced.Load() {
		s.metrics.lookup(codes.Unavailable)
		return status.Error(codes.Unavailable, "destination: caches not synced yet, retry")
	}
	select {
	case <-s.stopping:
		s.metrics.lookup(codes.Unavailable)
		return status.Error(codes.Unavailable, "destination: controller shutting down")
	default:
	}
	target, err := s.resolve(req.GetAuthority(), contextNS)
	s.metrics.lookup(status.Code(err))
	if err != nil {
		s.log.Debug("lookup failed", "authority", req.GetAuthority(), "context_namespace", contextNS, "error", err)
		return err
	}
	tr := newTranslator(s.td, s.queueSize)
	unsubscribe := s.watcher.Subscribe(target, tr)
	defer unsubscribe()
	s.metrics.active.Inc()
	defer s.metrics.active.Dec()

	ctx := stream.Context()
	sendErr := make(chan error, 1)
	go func() { sendErr <- send(ctx, stream, tr.queue) }()
	select {
	case err := <-sendErr:
		return err // the client is gone; gRPC already knows why
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-tr.overflowed:
		s.metrics.slow.Inc()
		s.log.Warn("disconnecting a slow destination subscriber", "authority", req.GetAuthority(),
			"target", target.String(), "peer", peerAddr(ctx), "queue_size", s.queueSize)
		return status.Errorf(codes.ResourceExhausted,
			"destination: client fell more than %d updates behind on %s; ask again", s.queueSize, req.GetAuthority())
	case <-s.stopping:
		return status.Error(codes.Unavailable, "destination: controller shutting down")
	}
}

// resolve maps authority, with short names in contextNS, to a watcher
// Target, with the errors as gRPC statuses.
func (s *Server) resolve(authority, contextNS string) (watcher.Target, error) {
	a, err := watcher.ParseAuthority(authority)
	if err != nil {
		return watcher.Target{}, status.Error(codes.InvalidArgument, "destination: "+err.Error())
	}
	target, err := s.watcher.Resolve(a, contextNS)
	switch {
	case errors.Is(err, watcher.ErrNotFound):
		return watcher.Target{}, status.Error(codes.NotFound, "destination: "+err.Error()+"; forward to the original address")
	case err != nil:
		return watcher.Target{}, status.Error(codes.Internal, "destination: "+err.Error())
	}
	return target, nil
}

// send drains queue into stream until ctx is done or a Send fails.
func send(ctx context.Context, stream grpc.ServerStreamingServer[destinationv1.Update], queue <-chan *destinationv1.Update) error {
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case u := <-queue:
			if err := stream.Send(u); err != nil {
				return err
			}
		}
	}
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// metrics are the server's Prometheus metrics.
type metrics struct {
	active  prometheus.Gauge
	slow    prometheus.Counter
	lookups *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mesh_destination_active_streams",
			Help: "Destination streams open now.",
		}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_destination_slow_subscribers_disconnected_total",
			Help: "Destination streams ended because the client fell further behind than the update queue holds.",
		}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_destination_lookups_total",
			Help: "Destination requests, by the gRPC code of the lookup (OK when the stream started).",
		}, []string{"code"}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.active, m.slow, m.lookups} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *metrics) lookup(code codes.Code) {
	m.lookups.WithLabelValues(code.String()).Inc()
}
