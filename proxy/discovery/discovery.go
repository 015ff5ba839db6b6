// Package discovery is the proxy's cache of the controller's destination
// service (api/destination/v1): for each authority the proxy sends traffic
// to, it keeps one Get stream open and feeds the endpoints it streams into a
// peak-EWMA balancer (proxy/balance), and one Routes stream whose tables it
// compiles with proxy/route (docs/traffic.md 2.4).
//
// An entry lives as long as it is used. The first Get for an authority
// opens its streams; later Gets, from any goroutine, share them. While the
// controller is unreachable the streams reconnect with jittered exponential
// backoff and the last endpoints and route table it sent keep serving. An
// entry nobody used for Config.IdleTimeout is evicted and its streams
// closed.
//
// # Use
//
// The proxy calls Get once per use of a destination, so an evicted entry is
// never held on to: once per request on the HTTP and gRPC paths, with the
// request's authority (the port added when the Host header has none), and
// once per connection on the opaque TCP path, with the connection's
// original destination ip:port, which the controller resolves as a cluster
// IP or a pod IP. Get is a map lookup once the entry exists.
//
//	d, err := cache.Get(ctx, authority)
//	switch {
//	case errors.Is(err, discovery.ErrNotFound), errors.Is(err, discovery.ErrNoAnswer):
//		// Not a mesh destination, or the controller has not answered yet:
//		// forward to the original address as if there were no mesh.
//		return forwardToOriginal(ctx, origDst)
//	case err != nil:
//		return err // ctx ended, or the cache is shut down
//	}
//	p, ok := d.Pick()
//	if !ok {
//		// The destination exists but has no endpoint: answer 503 on the
//		// HTTP path; on the TCP path, close the client's connection.
//		return errNoEndpoints
//	}
//	defer p.Done() // HTTP: when the response is done; TCP: when the connection closes
//	meta, _ := discovery.Meta(p.Endpoint()) // identity for mTLS, hint for h2 upgrade
//
// On the HTTP path the request's route table comes first: d.Routes(),
// nil or Empty when the authority has no route (proxy/route).
//
// Observe and Done follow the rules of balance.Pick: one Pick per request,
// or one per TCP connection with the connect time as its RTT.
//
// # Concurrency
//
// Get, Destination.Pick, Destination.Routes and Destination.Endpoints are
// safe for concurrent use. Each destination's two streams run on
// goroutines of their own, started by Get and ended together by eviction,
// by a NOT_FOUND of Get, or by the end of Run's context; Run waits for
// them all before it returns.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/proxy/balance"
)

// Defaults used where a Config field is zero.
const (
	// DefaultInitialWait bounds the delay a controller that does not answer
	// adds to the first connection to a destination. An in-cluster
	// controller answers in milliseconds; a second covers a busy one.
	DefaultInitialWait = time.Second
	// DefaultIdleTimeout keeps a destination's stream open through the pauses
	// of a periodic client (a cron-like job, a health check every minute).
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultNotFoundTTL is how long a NOT_FOUND answer is trusted. Traffic
	// to an address outside the mesh (a database, an external API) would
	// otherwise ask the controller on every connection; a Service created
	// meanwhile is found at most this late. The Routes stream's NOT_FOUND
	// and UNIMPLEMENTED are trusted as long.
	DefaultNotFoundTTL = 30 * time.Second
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between
	// reconnects to an unreachable controller.
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 10 * time.Second
)

// maxAuthority is the longest authority Get sends to the controller: a DNS
// name of 253 bytes, a colon and a five-digit port. Longer ones cannot name
// a Service, and an application must not be able to make the proxy hold
// arbitrarily large keys.
const maxAuthority = 253 + 1 + 5

var (
	// ErrNotFound means the authority is not a destination the mesh knows:
	// the controller answered NOT_FOUND (or INVALID_ARGUMENT), or the
	// authority is not host:port. The caller forwards to the original
	// address.
	ErrNotFound = errors.New("discovery: not a mesh destination")
	// ErrNoAnswer means the controller has not answered within
	// Config.InitialWait of the destination's first Get. The stream keeps
	// trying in the background, and a later Get returns the destination
	// once it answers; meanwhile the caller forwards to the original
	// address.
	ErrNoAnswer = errors.New("discovery: no answer from the controller yet")
	// ErrClosed is returned by Get once Run has returned.
	ErrClosed = errors.New("discovery: cache is closed")
	// ErrInvalidConfig is wrapped by the errors New returns for a Config it
	// refuses.
	ErrInvalidConfig = errors.New("discovery: invalid config")
)

// Config configures a Cache. The zero value of each field but Client means
// the default named on it.
type Config struct {
	// Client reaches the controller's destination service. Required. The
	// stream reconnects through it; how fast the underlying connection is
	// re-established after an outage is the grpc.ClientConn's own connect
	// backoff, which the caller configures.
	Client destinationv1.DestinationClient
	// ContextNamespace is the namespace of this proxy's pod, which the
	// controller uses to expand short names ("web" for web.<ns>). Empty:
	// short names without a namespace are not found.
	ContextNamespace string

	// InitialWait is how long after a destination's first Get the callers
	// of Get wait for its first answer before they get ErrNoAnswer. It is
	// counted once per destination, not per call, so a controller that is
	// down delays only the first connections. Within it they also wait
	// for the first answer of the Routes stream, which is never an error
	// when it is late. Zero means DefaultInitialWait (1s).
	InitialWait time.Duration
	// IdleTimeout is how long a destination may go without a Get or a Pick
	// (and without a Pick in flight) before it is evicted and its stream
	// closed. Eviction is checked every IdleTimeout/4, so it comes up to
	// half an IdleTimeout late. Zero means DefaultIdleTimeout (5m).
	IdleTimeout time.Duration
	// NotFoundTTL is how long Get keeps answering ErrNotFound for an
	// authority the controller said it does not know before asking again.
	// It is also the pause, on a real timer, before a destination's Routes
	// stream is opened again after the controller answered it NOT_FOUND,
	// INVALID_ARGUMENT or UNIMPLEMENTED (no routes). Zero means
	// DefaultNotFoundTTL (30s).
	NotFoundTTL time.Duration
	// MinBackoff is the wait before the first reconnect after a stream
	// failed; each further failure doubles it up to MaxBackoff, and each
	// wait is drawn at random from its upper half so that the proxies of a
	// cluster do not reconnect in step. Zero means DefaultMinBackoff (100ms)
	// and DefaultMaxBackoff (10s).
	MinBackoff time.Duration
	MaxBackoff time.Duration

	// Balance is the configuration of every destination's balancer. Its
	// OnDrained must be nil: set Config.OnDrained, which says whose
	// endpoint drained.
	Balance balance.Config
	// OnDrained, if set, is called once for each endpoint that left a
	// destination's set (the controller removed it, the destination was
	// evicted or became NOT_FOUND) as soon as its last Pick is done, so the
	// proxy can close the connections it pooled for it. It runs on the
	// goroutine that finished the endpoint, may hold the destination's
	// lock, and must not block or call into that Destination's methods
	// other than Endpoints.
	OnDrained func(authority string, ep balance.Endpoint)

	// Now reads the clock that idle eviction and NOT_FOUND expiry go by.
	// Nil means time.Now; tests inject a clock they advance. InitialWait
	// and the backoff run on real timers.
	Now func() time.Time
	// Log gets the cache's logs; nil discards them.
	Log *slog.Logger
	// Registerer gets the cache's metrics; nil means they are not
	// registered.
	Registerer prometheus.Registerer
}

// Cache holds one Destination per authority in use. Create it with New and
// run it with Run; Get waits until Run has started.
type Cache struct {
	cfg        Config
	log        *slog.Logger
	metrics    *metrics
	sweepEvery time.Duration
	started    chan struct{} // closed when Run starts

	// mu guards the fields below and Destination.lastUsed. It is never held
	// while taking a Destination's lock.
	mu      sync.RWMutex
	runCtx  context.Context // Run's; the parent of every stream
	closed  bool            // Run has ended
	entries map[string]*Destination
	streams sync.WaitGroup // the goroutines following streams

	// unimplementedLogged is set once a Routes stream was answered
	// UNIMPLEMENTED and said so in the log.
	unimplementedLogged atomic.Bool
}

// New checks cfg and returns a Cache holding no destination yet.
func New(cfg Config) (*Cache, error) {
	switch {
	case cfg.Client == nil:
		return nil, fmt.Errorf("%w: no destination client", ErrInvalidConfig)
	case cfg.InitialWait < 0, cfg.IdleTimeout < 0, cfg.NotFoundTTL < 0,
		cfg.MinBackoff < 0, cfg.MaxBackoff < 0:
		return nil, fmt.Errorf("%w: negative duration", ErrInvalidConfig)
	case cfg.Balance.OnDrained != nil:
		return nil, fmt.Errorf("%w: set OnDrained, not Balance.OnDrained", ErrInvalidConfig)
	}
	cfg.InitialWait = orDefault(cfg.InitialWait, DefaultInitialWait)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.NotFoundTTL = orDefault(cfg.NotFoundTTL, DefaultNotFoundTTL)
	cfg.MinBackoff = orDefault(cfg.MinBackoff, DefaultMinBackoff)
	cfg.MaxBackoff = orDefault(cfg.MaxBackoff, DefaultMaxBackoff)
	if cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("%w: max backoff %v below min backoff %v",
			ErrInvalidConfig, cfg.MaxBackoff, cfg.MinBackoff)
	}
	// Refuse a bad balancer template now rather than at the first Get.
	if _, err := balance.New(cfg.Balance); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Cache{
		cfg:        cfg,
		log:        log,
		metrics:    m,
		sweepEvery: max(cfg.IdleTimeout/4, time.Millisecond),
		started:    make(chan struct{}),
		entries:    map[string]*Destination{},
	}, nil
}

// orDefault is v, or def where v is the zero value.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Run evicts idle destinations until ctx is done, then closes every stream,
// waits for their goroutines and returns nil. Streams run under ctx, so Get
// waits for Run to start. It may be called once.
func (c *Cache) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.runCtx != nil {
		c.mu.Unlock()
		return errors.New("discovery: Run called twice")
	}
	c.runCtx = ctx
	c.mu.Unlock()
	close(c.started)

	tick := time.NewTicker(c.sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			c.shutdown()
			return nil
		case <-tick.C:
			c.sweep()
		}
	}
}

// Get returns the destination of authority (host:port), opening its
// streams if no caller has yet, and waiting for the controller's first
// answers for at most Config.InitialWait after that. It returns an error
// wrapping ErrNotFound when the mesh does not know the authority,
// ErrNoAnswer when the controller has not answered endpoints in time,
// ErrClosed after Run returned, and ctx's error if ctx ends first. The
// Routes stream never makes it fail. A Destination with no endpoints is
// returned without error: the destination exists, and Pick reports false.
func (c *Cache) Get(ctx context.Context, authority string) (*Destination, error) {
	select {
	case <-c.started:
	case <-ctx.Done():
		return nil, fmt.Errorf("discovery: %s: %w", authority, context.Cause(ctx))
	}
	d, err := c.lookup(authority)
	if err != nil {
		return nil, err
	}
	d.touch()
	if err := d.wait(ctx); err != nil {
		return nil, err
	}
	if d.NotFound() {
		return nil, fmt.Errorf("discovery: %s: %w", authority, ErrNotFound)
	}
	return d, nil
}

// checkAuthority refuses, without asking the controller, authorities that
// cannot name a destination.
func checkAuthority(a string) error {
	if len(a) > maxAuthority {
		return fmt.Errorf("%w: authority of %d bytes", ErrNotFound, len(a))
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" {
		return fmt.Errorf("%w: %q is not host:port", ErrNotFound, a)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%w: %q has no valid port", ErrNotFound, a)
	}
	return nil
}

// lookup returns the live entry of authority, creating it, and starting its
// stream, if there is none or its NOT_FOUND answer expired.
func (c *Cache) lookup(authority string) (*Destination, error) {
	c.mu.RLock()
	d, closed := c.entries[authority], c.closed
	c.mu.RUnlock()
	switch {
	case closed:
		return nil, ErrClosed
	case d != nil && !d.expired():
		return d, nil
	}
	// Checked only here: an authority with an entry passed when the
	// entry was made, and every request asks for one (the checks cost
	// more than the map).
	if err := checkAuthority(authority); err != nil {
		return nil, err
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	old := c.entries[authority]
	if old != nil && !old.expired() {
		c.mu.Unlock() // another caller replaced it first
		return old, nil
	}
	d, err := c.newDestination(authority, c.cfg.Now())
	if err != nil {
		c.mu.Unlock()
		return nil, err
	}
	c.entries[authority] = d
	ctx, cancel := context.WithCancel(c.runCtx)
	d.cancel = cancel
	c.streams.Go(func() { d.follow(ctx) })
	c.streams.Go(func() { d.followRoutes(ctx) })
	c.mu.Unlock()

	if old != nil {
		old.close(false) // its set was emptied when NOT_FOUND came
	}
	return d, nil
}

// sweep evicts the destinations unused for IdleTimeout. A destination is
// used if Get or Pick touched it since the last sweep or a Pick of it is
// in flight: a long TCP connection keeps its destination, so the endpoint
// it uses does not drain under it.
func (c *Cache) sweep() {
	now := c.cfg.Now()
	var idle []*Destination
	c.mu.Lock()
	for a, d := range c.entries {
		if d.touched.Swap(false) || d.inFlight() {
			d.lastUsed = now
			continue
		}
		if now.Sub(d.lastUsed) >= c.cfg.IdleTimeout {
			delete(c.entries, a)
			idle = append(idle, d)
		}
	}
	c.mu.Unlock()
	for _, d := range idle {
		c.log.Debug("evicting idle destination", "authority", d.authority)
		d.close(true)
	}
}

// shutdown ends every stream and waits for their goroutines. Endpoints are
// not drained: the proxy is stopping, and Picks in flight finish as usual.
func (c *Cache) shutdown() {
	c.mu.Lock()
	c.closed = true
	all := make([]*Destination, 0, len(c.entries))
	for _, d := range c.entries {
		all = append(all, d)
	}
	clear(c.entries)
	c.mu.Unlock()
	for _, d := range all {
		d.close(false)
	}
	c.streams.Wait()
}

// isClosed reports whether Run has ended.
func (c *Cache) isClosed() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.closed
}

// Destinations returns the destinations in the cache ordered by
// authority, for the admin server.
func (c *Cache) Destinations() []*Destination {
	c.mu.RLock()
	ds := make([]*Destination, 0, len(c.entries))
	for _, d := range c.entries {
		ds = append(ds, d)
	}
	c.mu.RUnlock()
	slices.SortFunc(ds, func(a, b *Destination) int { return strings.Compare(a.authority, b.authority) })
	return ds
}
