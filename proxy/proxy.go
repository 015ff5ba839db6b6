package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/proxy/accesslog"
	"github.com/mesh-dev/mesh/proxy/admin"
	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/detect"
	"github.com/mesh-dev/mesh/proxy/discovery"
	"github.com/mesh-dev/mesh/proxy/dnsresolve"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/origdst"
	"github.com/mesh-dev/mesh/proxy/policy"
	"github.com/mesh-dev/mesh/proxy/tap"
	"github.com/mesh-dev/mesh/proxy/trace"
)

// Proxy is a running sidecar. Build it with New, then call Serve.
type Proxy struct {
	cfg      Config
	log      *slog.Logger
	metrics  *metrics.Metrics
	sides    []*side
	admin    *http.Server
	adminLn  net.Listener
	ready    atomic.Bool
	shutdown chan struct{} // closed by /shutdown
	once     sync.Once

	// With a controller: the connection to it and the discovery cache
	// outbound balancing uses; nil without.
	conn   *grpc.ClientConn
	router *router
	// id is the proxy's SPIFFE identity; nil without an identity service.
	id *identity
	// policy enforces the pod's inbound authorization policy; nil without
	// a controller or a pod name, when every client is allowed.
	policy *policy.Enforcer

	// tapHub receives every HTTP request for `mesh viz tap`; tapSrv serves
	// it to mesh-controller on tapLn. Both are nil when tap is off (no
	// identity or no TapClientID); the hub is there regardless.
	tapHub *tap.Hub
	tapSrv *tap.Server
	tapLn  net.Listener

	// accessLog gets a record of every request and opaque connection;
	// nil when --access-log is off.
	accessLog *accesslog.Logger
	// tracer gives requests spans and exports them; nil without
	// --tracing-collector.
	tracer *trace.Tracer
}

// New binds the proxy's listeners, so that once it returns, connections
// queue in the kernel even before Serve runs; bind errors surface here.
// ctx bounds the background work New starts: resolving the controller's
// name. A New that fails releases everything it set up: listeners and the
// controller connections.
func New(ctx context.Context, cfg Config, log *slog.Logger) (_ *Proxy, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, log: log, metrics: metrics.New(), shutdown: make(chan struct{}), tapHub: tap.NewHub()}
	defer func() {
		if err != nil {
			p.release(ctx)
		}
	}()
	p.metrics.CountTapDrops(p.tapHub.Dropped)
	logOut := cfg.AccessLogOut
	if logOut == nil {
		logOut = os.Stderr
	}
	if p.accessLog, err = accesslog.New(accesslog.Config{Format: cfg.AccessLog, Out: logOut, Registry: p.metrics.Registry()}); err != nil {
		return nil, err
	}
	if cfg.TracingCollector != "" {
		if p.tracer, err = newTracer(cfg, p.metrics.Registry(), log); err != nil {
			return nil, err
		}
	}
	var lc net.ListenConfig
	listen := func(what, addr string) (net.Listener, error) {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s listener: %w", what, err)
		}
		return ln, nil
	}
	if p.adminLn, err = listen("admin", cfg.AdminAddr); err != nil {
		return nil, err
	}
	// The controller's names are resolved with DNS TTLs honoured; a proxy
	// without a controller reads no resolv.conf.
	var res *dnsresolve.Resolver
	if cfg.DestinationAddr != "" || cfg.IdentityAddr != "" {
		if res, err = dnsresolve.New(dnsresolve.Config{}); err != nil {
			return nil, fmt.Errorf("resolver: %w", err)
		}
	}
	// The identity comes first: with one, the controller's destination and
	// policy API is reached over mesh TLS with the proxy's certificate.
	if cfg.IdentityAddr != "" {
		if p.id, err = newIdentity(ctx, &p.cfg, res, p.metrics.Registry()); err != nil {
			return nil, err
		}
	}
	if cfg.DestinationAddr != "" {
		if err := p.connectController(ctx, res); err != nil {
			return nil, err
		}
	}
	if cfg.DestinationAddr != "" && cfg.PodName != "" {
		if p.policy, err = p.newPolicy(); err != nil {
			return nil, err
		}
	}
	if err := p.setupTap(listen); err != nil {
		return nil, err
	}
	opaque := detect.NewOpaqueCache(4096, 10*time.Minute)
	for _, d := range []struct {
		dir  metrics.Direction
		addr string
	}{{metrics.Inbound, cfg.InboundAddr}, {metrics.Outbound, cfg.OutboundAddr}} {
		var ln net.Listener
		var err error
		if d.dir == metrics.Outbound {
			ln, err = listenOutbound(&lc, d.addr, log)
			if err != nil {
				err = fmt.Errorf("outbound listener: %w", err)
			}
		} else {
			ln, err = listen(string(d.dir), d.addr)
		}
		if err != nil {
			return nil, err
		}
		sc := sideConfig{
			dir: d.dir, ln: ln, cfg: &p.cfg, metrics: p.metrics, opaque: opaque,
			log: log.With("direction", string(d.dir)), lookup: origdst.Lookup,
		}
		if d.dir == metrics.Outbound {
			sc.router = p.router // inbound goes to the pod itself
		} else {
			sc.policy = p.policy // outbound is the policy of the pods it goes to
		}
		sc.id = p.id
		sc.tap = p.tapHub
		sc.accessLog = p.accessLog
		sc.tracer = p.tracer
		p.sides = append(p.sides, newSide(sc))
	}
	var destinations, identityInfo http.Handler
	if p.router != nil {
		destinations = http.HandlerFunc(p.router.destinationsJSON)
	}
	if p.id != nil {
		identityInfo = http.HandlerFunc(p.id.identityJSON)
	}
	p.admin = admin.NewServer(admin.Config{
		Metrics:  p.metrics.Handler(),
		Ready:    p.isReady,
		Shutdown: func() { p.once.Do(func() { close(p.shutdown) }) },

		Destinations: destinations,
		Identity:     identityInfo,
		Policy:       p.policy.Handler(), // nil without a policy
		Profiling:    p.cfg.AdminProfiling,
	})
	return p, nil
}

// Addrs returns the bound inbound, outbound and admin addresses (useful
// when the config asked for port 0).
func (p *Proxy) Addrs() (inbound, outbound, admin net.Addr) {
	return p.sides[0].ln.Addr(), p.sides[1].ln.Addr(), p.adminLn.Addr()
}

// TapAddr returns the bound address of the tap server, or nil when the
// proxy serves no tap.
func (p *Proxy) TapAddr() net.Addr {
	if p.tapLn == nil {
		return nil
	}
	return p.tapLn.Addr()
}

// setupTap binds the tap server's listener when the proxy has an identity
// to serve it with and a client to admit; otherwise it says why not.
func (p *Proxy) setupTap(listen func(what, addr string) (net.Listener, error)) error {
	switch {
	case p.id == nil:
		p.log.Info("tap server off: the proxy has no identity (identity-addr is empty)")
		return nil
	case p.cfg.TapClientID == "":
		p.log.Info("tap server off: tap-client-id is empty")
		return nil
	}
	// Validate checked the ID.
	clientID, err := spiffeid.FromString(p.cfg.TapClientID)
	if err != nil {
		return fmt.Errorf("tap-client-id %q: %w", p.cfg.TapClientID, err)
	}
	srv, err := tap.NewServer(tap.ServerConfig{
		Hub: p.tapHub, SVID: p.id.src, Bundle: p.id.src, ClientID: clientID,
		Log: p.log.With("component", "tap"),
	})
	if err != nil {
		return err
	}
	if p.tapLn, err = listen("tap", p.cfg.TapAddr); err != nil {
		return err
	}
	p.tapSrv = srv
	return nil
}

// Serve runs the proxy until ctx is cancelled or /shutdown is called, then
// drains: it stops accepting, lets in-flight requests and connections
// finish within ShutdownGrace, and closes what is left.
func (p *Proxy) Serve(ctx context.Context) error {
	errc := make(chan error, len(p.sides)+1)
	go func() { errc <- serveAdmin(p.admin, p.adminLn) }()
	discoveryDone := make(chan struct{})
	if p.router != nil {
		// The cache outlives the drain, so requests finishing during it
		// still reach their endpoints; it stops with the proxy.
		discoveryCtx, stopDiscovery := context.WithCancel(context.WithoutCancel(ctx))
		defer func() {
			stopDiscovery()
			<-discoveryDone
			p.conn.Close()
		}()
		go func() {
			defer close(discoveryDone)
			if err := p.router.cache.Run(discoveryCtx); err != nil {
				p.log.Error("discovery stopped", "err", err)
			}
		}()
	} else {
		close(discoveryDone)
	}
	if p.policy != nil {
		// Like discovery, the policy must outlive the drain: requests still
		// finishing are decided by it. Stopped before the defer above
		// closes the controller connection.
		policyCtx, stopPolicy := context.WithCancel(context.WithoutCancel(ctx))
		policyDone := make(chan struct{})
		go func() {
			defer close(policyDone)
			p.policy.Run(policyCtx)
		}()
		defer func() {
			stopPolicy()
			<-policyDone
		}()
	}
	if p.id != nil {
		// Like discovery, the certificate must outlive the drain.
		idCtx, stopIdentity := context.WithCancel(context.WithoutCancel(ctx))
		idDone := make(chan struct{})
		go func() {
			defer close(idDone)
			p.id.run(idCtx, p.log)
		}()
		defer func() {
			stopIdentity()
			<-idDone
		}()
	}
	tapDone := make(chan struct{})
	tapCtx, stopTap := context.WithCancel(context.WithoutCancel(ctx))
	defer stopTap()
	if p.tapSrv != nil {
		go func() {
			defer close(tapDone)
			// Tap is for people watching: losing it must not stop the
			// data plane.
			if err := p.tapSrv.Serve(tapCtx, p.tapLn); err != nil {
				p.log.Error("tap server stopped", "err", err)
			}
		}()
	} else {
		close(tapDone)
	}
	for _, s := range p.sides {
		go func() { errc <- s.serve() }()
	}
	p.ready.Store(true)
	in, out, adm := p.Addrs()
	attrs := []any{"inbound", in.String(), "outbound", out.String(), "admin", adm.String()}
	if t := p.TapAddr(); t != nil {
		attrs = append(attrs, "tap", t.String())
	}
	p.log.Info("proxy ready", attrs...)

	var err error
	select {
	case <-ctx.Done():
		p.log.Info("shutting down: signal received", "grace", p.cfg.ShutdownGrace)
	case <-p.shutdown:
		p.log.Info("shutting down: /shutdown requested", "grace", p.cfg.ShutdownGrace)
	case err = <-errc:
		p.log.Error("listener failed; shutting down", "err", err)
	}
	p.ready.Store(false)
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ShutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range p.sides {
		wg.Go(func() { s.drain(drainCtx) })
	}
	wg.Wait()
	if drainCtx.Err() != nil {
		p.log.Warn("shutdown grace period ended; closed remaining connections")
	}
	// Tap stops after the drain, so a watcher sees the last requests, and
	// the admin server goes last so probes and scrapes see the drain.
	stopTap()
	<-tapDone
	// The log's last lines get a second of their own, past the grace
	// period if need be: they tell how the drain went.
	logCtx, cancelLog := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancelLog()
	if cerr := p.accessLog.Close(logCtx); cerr != nil {
		p.log.Warn("access log not all written", "err", cerr)
	}
	if terr := p.tracer.Shutdown(logCtx); terr != nil {
		p.log.Warn("trace spans not all exported", "err", terr)
	}
	p.admin.Close()
	return err
}

func serveAdmin(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin server: %w", err)
	}
	return nil
}

// controllerConnectParams: a restarted controller should be found within
// a few seconds, not gRPC's default two minutes of backoff.
var controllerConnectParams = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
	MinConnectTimeout: 5 * time.Second,
}

// connectController sets up the gRPC connection to the controller and the
// discovery cache on it. Dialing is lazy: a controller that is down is
// retried in the background, and connections go to their original
// destinations meanwhile.
//
// With an identity the connection is mesh TLS, never plain text: its
// answers decide which identity each destination must prove and where
// traffic goes, so the server must prove the controller's SPIFFE ID, and
// the controller learns from the proxy's certificate who asks (it answers
// a proxy only about what its identity may know). Without one (zero
// config, tests) it is plain text, as is everything else.
func (p *Proxy) connectController(ctx context.Context, res *dnsresolve.Resolver) error {
	creds := insecure.NewCredentials()
	if p.id != nil {
		// Validate checked the ID.
		server, err := spiffeid.FromString(p.cfg.destinationServerID())
		if err != nil {
			return fmt.Errorf("destination-server-id %q: %w", p.cfg.destinationServerID(), err)
		}
		creds = p.id.controllerCredentials(server)
	}
	// The controller's address is a headless Service: its name resolves to
	// the controller pods, and is re-resolved when its DNS TTL runs out, so
	// a controller that moved is found without waiting for a failure.
	dns := dnsresolve.NewBuilder(ctx, res, dnsresolve.BuilderConfig{})
	conn, err := grpc.NewClient(dnsresolve.Scheme+":///"+p.cfg.DestinationAddr,
		grpc.WithResolvers(dns),
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(controllerConnectParams))
	if err != nil {
		return fmt.Errorf("controller %s: %w", p.cfg.DestinationAddr, err)
	}
	cache, err := discovery.New(discovery.Config{
		Client:           destinationv1.NewDestinationClient(conn),
		ContextNamespace: p.cfg.Namespace,
		Log:              p.log.With("component", "discovery"),
		Registerer:       p.metrics.Registry(),
		// A removed endpoint has drained: its pooled connections go.
		OnDrained: func(string, balance.Endpoint) { p.sides[1].closeIdle() },
	})
	if err != nil {
		conn.Close()
		return err
	}
	r, err := newRouter(cache, p.cfg.ClusterNetworks, p.metrics.Registry())
	if err != nil {
		conn.Close()
		return err
	}
	p.conn, p.router = conn, r
	return nil
}

// errNotServing is /ready's answer before Serve and during the drain.
var errNotServing = errors.New("not serving: starting or shutting down")

// isReady is /ready: serving, holding a certificate when the proxy has an
// identity that is not about to expire unrenewed (peers would refuse it
// without one), and holding an inbound policy when it enforces one (it
// refuses every client without).
func (p *Proxy) isReady() error {
	if !p.ready.Load() {
		return errNotServing
	}
	if p.id != nil {
		if err := p.id.ready(); err != nil {
			return err
		}
	}
	if p.policy != nil {
		return p.policy.Ready()
	}
	return nil
}

// newPolicy sets up the inbound policy watch on the controller connection:
// the policy service is served beside the destination service.
func (p *Proxy) newPolicy() (*policy.Enforcer, error) {
	return policy.New(policy.Config{
		Client:      inboundv1.NewInboundPolicyClient(p.conn),
		Namespace:   p.cfg.Namespace,
		Pod:         p.cfg.PodName,
		TrustDomain: p.cfg.TrustDomain,
		Grace:       p.cfg.PolicyGrace,
		Metrics:     p.metrics,
		Log:         p.log.With("component", "policy"),
	})
}

// release undoes a New that failed: it closes the listeners bound so far,
// stops the HTTP servers of the sides made so far (they have accepted
// nothing, so there is nothing to drain) and closes the controller
// connections, which also ends their name resolution.
func (p *Proxy) release(ctx context.Context) {
	if p.adminLn != nil {
		p.adminLn.Close()
	}
	if p.tapLn != nil {
		p.tapLn.Close()
	}
	for _, s := range p.sides {
		s.drain(context.WithoutCancel(ctx))
	}
	if p.conn != nil {
		p.conn.Close()
	}
	if p.id != nil {
		p.id.conn.Close()
	}
	p.accessLog.Close(context.WithoutCancel(ctx))
	if p.tracer != nil {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		p.tracer.Shutdown(tctx)
	}
}

// Run is the whole life of mesh-proxy: build, serve, drain.
func Run(ctx context.Context, cfg Config) error {
	log := NewLogger(cfg)
	if !cfg.AdminProfiling {
		// Nothing can read a heap profile: sample no allocation, and keep
		// the profiler's tables (1.4 MB of address space, pages of it
		// touched by each sampled stack) out of the proxy.
		runtime.MemProfileRate = 0
	}
	sizeRuntime(cfg.MaxProcs, log)
	p, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	releaseCtx, stopRelease := context.WithCancel(ctx)
	released := make(chan struct{})
	go func() {
		defer close(released)
		if p.awaitReady(releaseCtx, time.Second) != nil {
			return
		}
		// Ready means the start-up work is done: the certificate, the
		// policy and the controller connections are in hand.
		before, after, err := releaseStartupPages()
		if err != nil {
			log.Warn("start-up pages of the executable kept", "err", err)
			return
		}
		log.Info("released start-up pages of the executable", "resident_before_bytes", before, "resident_after_bytes", after)
	}()
	err = p.Serve(ctx)
	stopRelease()
	<-released
	return err
}

// awaitReady returns nil once the proxy is ready (isReady), checking every
// interval, or ctx's error if it ends first.
func (p *Proxy) awaitReady(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for p.isReady() != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// NewLogger returns the structured logger the config asks for, on stderr.
func NewLogger(cfg Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}
