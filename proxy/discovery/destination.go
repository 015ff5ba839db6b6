package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/internal/backoff"
	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/route"
)

// errStreamEnded reports a stream the controller ended without an error,
// which the protocol never does on purpose (a stream lasts as long as the
// client wants it): the controller is shutting down.
var errStreamEnded = errors.New("the controller ended the destination stream")

// EndpointMeta is the balance.Endpoint.Metadata of every endpoint a
// Destination holds: what the proxy needs to know about the workload behind
// the address. Labels is shared and must not be modified.
type EndpointMeta struct {
	// Identity is the SPIFFE ID the endpoint's certificate must carry, for
	// mTLS; empty when the endpoint has no mesh proxy (plain text).
	Identity string
	// Hint says whether HTTP/1 may be upgraded to HTTP/2 between the
	// proxies, or the port is opaque.
	Hint destinationv1.ProtocolHint
	// Labels describe the workload for metrics ("namespace", "service",
	// "pod", "deployment", ...).
	Labels map[string]string
	// Zone is the topology zone of the endpoint's node, empty when unknown.
	Zone string
}

// Meta returns the EndpointMeta of an endpoint a Destination picked, and
// false for an endpoint from elsewhere.
func Meta(ep balance.Endpoint) (EndpointMeta, bool) {
	m, ok := ep.Metadata.(EndpointMeta)
	return m, ok
}

// Destination is the endpoint set and the route table of one authority,
// kept current by two streams from the controller, Get and Routes. Get
// returns it; its methods are safe for concurrent use.
//
// After eviction a Destination no longer follows the controller, its set
// is empty and it has no routes, so callers get a fresh one from Get for
// every use instead of keeping it.
type Destination struct {
	authority string
	cache     *Cache
	bal       *balance.PeakEWMA
	created   time.Time          // by the real clock, which InitialWait runs on
	cancel    context.CancelFunc // ends the stream; set before the stream starts

	ready     chan struct{} // closed at the first answer: an update, or NOT_FOUND
	readyOnce sync.Once
	// routesReady is closed when Get need not wait for the Routes stream
	// any longer: its first table, a final answer, or a failure while
	// the Get stream answers (routes.go).
	routesReady chan struct{}
	routesOnce  sync.Once
	done        chan struct{} // closed when the destination leaves the cache
	doneOnce    sync.Once

	touched  atomic.Bool                        // used since the last sweep
	lastUsed time.Time                          // by Config.Now; guarded by Cache.mu
	notFound atomic.Pointer[time.Time]          // by Config.Now, when NOT_FOUND came; nil while found
	snap     atomic.Pointer[[]balance.Endpoint] // the set, sorted by address; immutable
	routes   atomic.Pointer[route.Table]        // the last good table; nil: none

	// mu guards set and closed, and orders the balancer's updates so that
	// the one close makes is the last. It also orders the stores to routes
	// with close and NOT_FOUND, so that none lands after them. It is held
	// across balancer.Update, never across I/O.
	mu     sync.Mutex
	set    map[netip.AddrPort]balance.Endpoint
	closed bool
	// accrual is the balancer's failure accrual, the cache's own until a
	// route table says otherwise. Guarded by mu.
	accrual balance.FailureAccrual
}

// newDestination returns an entry for authority with an empty set and no
// stream.
func (c *Cache) newDestination(authority string, now time.Time) (*Destination, error) {
	bcfg := c.cfg.Balance
	if on := c.cfg.OnDrained; on != nil {
		bcfg.OnDrained = func(ep balance.Endpoint) { on(authority, ep) }
	}
	bal, err := balance.New(bcfg)
	if err != nil {
		return nil, fmt.Errorf("discovery: %s: %w", authority, err)
	}
	d := &Destination{
		authority:   authority,
		cache:       c,
		bal:         bal,
		created:     time.Now(),
		ready:       make(chan struct{}),
		routesReady: make(chan struct{}),
		done:        make(chan struct{}),
		lastUsed:    now,
		set:         map[netip.AddrPort]balance.Endpoint{},
		accrual:     bcfg.FailureAccrual(),
	}
	d.snap.Store(&[]balance.Endpoint{})
	return d, nil
}

// Authority returns the authority the destination was asked for.
func (d *Destination) Authority() string { return d.authority }

// Pick chooses an endpoint (see balance.PeakEWMA.Pick). It reports false
// when the set is empty: the controller sent NoEndpoints (scaled to zero,
// nothing ready), the destination became NOT_FOUND, or it was evicted. The
// caller then answers 503 on the HTTP path and closes the client's
// connection on the TCP path.
func (d *Destination) Pick() (balance.Pick, bool) {
	d.touch()
	return d.bal.Pick()
}

// Endpoints returns the current set ordered by address, for debugging. The
// slice is the caller's; the Labels maps in it are shared.
func (d *Destination) Endpoints() []balance.Endpoint {
	return slices.Clone(*d.snap.Load())
}

// NotFound reports whether the controller said the mesh does not know the
// destination. It can say so on a reconnect for a destination that had
// endpoints (its Service was deleted meanwhile); the set is then empty.
func (d *Destination) NotFound() bool { return d.notFound.Load() != nil }

// touch marks the destination used. It reads before writing so the hot
// path does not bounce the cache line between cores.
func (d *Destination) touch() {
	if !d.touched.Load() {
		d.touched.Store(true)
	}
}

// inFlight reports whether a Pick of the destination is not done yet.
func (d *Destination) inFlight() bool {
	for _, s := range d.bal.Snapshot() {
		if s.Pending > 0 {
			return true
		}
	}
	return false
}

// expired reports whether the destination's NOT_FOUND answer is older than
// NotFoundTTL, so the controller should be asked again. It reads the clock
// only for a destination not found, sparing Get the cost otherwise.
func (d *Destination) expired() bool {
	at := d.notFound.Load()
	return at != nil && d.cache.cfg.Now().Sub(*at) >= d.cache.cfg.NotFoundTTL
}

// wait blocks until the first answer of the Get stream and that of the
// Routes stream, for at most InitialWait counted from the destination's
// creation, or until the destination's removal or ctx. Only the Get
// stream's answer is required: without it wait returns ErrNoAnswer, while
// routes that are late are no error, the destination goes without them.
// Waiting for both makes the first request of a destination routed like
// the next one when its table is on its way.
func (d *Destination) wait(ctx context.Context) error {
	if signalled(d.ready) && signalled(d.routesReady) {
		return nil
	}
	noAnswer := fmt.Errorf("discovery: %s: %w", d.authority, ErrNoAnswer)
	left := d.cache.cfg.InitialWait - time.Since(d.created)
	if left <= 0 {
		if signalled(d.ready) {
			return nil
		}
		return noAnswer
	}
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case <-d.ready:
	case <-t.C:
		return noAnswer
	case <-d.done:
		if d.cache.isClosed() {
			return ErrClosed
		}
		return noAnswer
	case <-ctx.Done():
		return fmt.Errorf("discovery: %s: %w", d.authority, context.Cause(ctx))
	}
	if d.NotFound() {
		return nil // Get says so; there are no routes to wait for
	}
	select {
	case <-d.routesReady:
	case <-t.C:
	case <-d.done:
		if d.cache.isClosed() {
			return ErrClosed
		}
		return noAnswer
	case <-ctx.Done():
		return fmt.Errorf("discovery: %s: %w", d.authority, context.Cause(ctx))
	}
	return nil
}

// signalled reports whether ch is closed, without blocking.
func signalled(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// close takes the destination out of service: its streams end, and with
// drain its endpoints leave the balancer, so OnDrained reports each once
// its Picks are done, and its route table goes.
func (d *Destination) close(drain bool) {
	if d.cancel != nil {
		d.cancel()
	}
	d.doneOnce.Do(func() { close(d.done) })
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if drain {
		clear(d.set)
		d.publish()
		d.routes.Store(nil)
	}
}

// follow keeps a stream open until ctx ends or the controller answers
// NOT_FOUND. Called on the destination's own goroutine.
func (d *Destination) follow(ctx context.Context) {
	defer d.cancel() // after NOT_FOUND, ends the Routes stream too
	c := d.cache
	bo := backoff.Backoff{Min: c.cfg.MinBackoff, Max: c.cfg.MaxBackoff}
	// exhausted: the last stream ended RESOURCE_EXHAUSTED, and no update
	// came since.
	exhausted := false
	for first := true; ; first = false {
		if !first {
			c.metrics.reconnect()
		}
		delivered, err := d.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if delivered {
			// The controller was answering: the next failure is a new
			// one, not the next of a run.
			bo.Reset()
			exhausted = false
		}
		code := status.Code(err)
		if code == codes.NotFound || code == codes.InvalidArgument {
			c.log.Debug("not a mesh destination", "authority", d.authority, "err", err)
			d.markNotFound()
			return
		}
		// Only the first failure of a run is a warning: a controller that
		// is down for long would otherwise log for every destination at
		// every retry.
		level := slog.LevelDebug
		if !bo.Failing() {
			level = slog.LevelWarn
		}
		// A client that fell behind asks again at once: it missed updates
		// and must resynchronise. Falling behind again before any update
		// calls for a pause, as does any other failure.
		var wait time.Duration
		if code != codes.ResourceExhausted || exhausted {
			wait = bo.Next()
		}
		exhausted = code == codes.ResourceExhausted
		c.log.Log(ctx, level, "destination stream broke; keeping the last endpoints and reconnecting",
			"authority", d.authority, "err", err, "retry_in", wait)
		if sleep(ctx, wait) != nil {
			return
		}
	}
}

// stream reads one Get stream until it fails, applying its updates, and
// reports whether it applied any. A new stream starts from an empty set
// (destination.proto), so its first update replaces the set rather than
// merging into it; until it comes, the last stream's endpoints keep
// serving.
//
// WaitForReady: while the controller is unreachable the call waits for
// the connection instead of failing at once, so a controller that comes
// back is asked the moment the connection's own backoff finds it, not up
// to MaxBackoff later (Get's callers still give up after InitialWait).
func (d *Destination) stream(ctx context.Context) (delivered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := d.cache
	s, err := c.cfg.Client.Get(ctx, &destinationv1.GetDestinationRequest{
		Authority:        d.authority,
		ContextNamespace: c.cfg.ContextNamespace,
	}, grpc.WaitForReady(true))
	if err != nil {
		return false, err
	}
	c.metrics.streamOpened()
	defer c.metrics.streamClosed()
	for {
		u, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return delivered, errStreamEnded
		}
		if err != nil {
			return delivered, err
		}
		if d.apply(u, !delivered) {
			delivered = true
			c.metrics.updated(u)
		}
	}
}

// apply applies one update to the set and hands the result to the
// balancer; fresh replaces the set instead. It reports false for an update
// of a kind it does not know, which changes nothing. Malformed addresses
// are skipped and logged: the rest of the update still applies.
func (d *Destination) apply(u *destinationv1.Update, fresh bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return true
	}
	switch k := u.GetKind().(type) {
	case *destinationv1.Update_Add:
		if fresh {
			clear(d.set)
		}
		for _, ep := range k.Add.GetEndpoints() {
			if e, ok := d.endpoint(ep); ok {
				d.set[e.Addr] = e
			}
		}
	case *destinationv1.Update_Remove:
		if fresh {
			clear(d.set)
		}
		for _, s := range k.Remove.GetAddresses() {
			if addr, err := parseAddr(s); err != nil {
				d.malformed(s, err)
			} else {
				delete(d.set, addr)
			}
		}
	case *destinationv1.Update_NoEndpoints:
		clear(d.set)
	default:
		d.cache.log.Warn("ignoring a destination update of unknown kind", "authority", d.authority)
		return false
	}
	d.publish()
	d.readyOnce.Do(func() { close(d.ready) })
	return true
}

// endpoint converts an endpoint of the protocol, reporting false for one
// whose address is malformed.
func (d *Destination) endpoint(ep *destinationv1.Endpoint) (balance.Endpoint, bool) {
	addr, err := parseAddr(ep.GetAddress())
	if err != nil {
		d.malformed(ep.GetAddress(), err)
		return balance.Endpoint{}, false
	}
	return balance.Endpoint{
		Addr:   addr,
		Weight: ep.GetWeight(),
		Metadata: EndpointMeta{
			Identity: ep.GetIdentity(),
			Hint:     ep.GetProtocolHint(),
			Labels:   ep.GetLabels(),
			Zone:     ep.GetZone(),
		},
	}, true
}

// parseAddr parses an Endpoint.address, "ip:port" with a port the balancer
// can connect to.
func parseAddr(s string) (netip.AddrPort, error) {
	addr, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if addr.Port() == 0 {
		return netip.AddrPort{}, errors.New("port 0")
	}
	return addr, nil
}

// malformed logs an address from the controller that cannot be used. The
// address is cut short: it comes from another process and is not trusted
// to be small.
func (d *Destination) malformed(addr string, err error) {
	const limit = 64
	if len(addr) > limit {
		addr = addr[:limit] + "..."
	}
	d.cache.log.Warn("skipping a malformed endpoint address from the controller",
		"authority", d.authority, "address", addr, "err", err)
	d.cache.metrics.malformed()
}

// publish hands the set to the balancer and to Endpoints. Called with d.mu
// held.
func (d *Destination) publish() {
	eps := make([]balance.Endpoint, 0, len(d.set))
	for _, e := range d.set {
		eps = append(eps, e)
	}
	slices.SortFunc(eps, func(x, y balance.Endpoint) int { return x.Addr.Compare(y.Addr) })
	// The set's addresses are valid, distinct and have a port, which is
	// all Update checks; an error here is a bug, and the old set stays.
	if err := d.bal.Update(eps); err != nil {
		d.cache.log.Error("balancer refused an endpoint set", "authority", d.authority, "err", err)
		return
	}
	d.snap.Store(&eps)
}

// markNotFound records the controller's NOT_FOUND: the set empties, the
// routes go, and Get answers ErrNotFound until NotFoundTTL passes. The
// Routes stream ends with the Get stream (follow's cancel).
func (d *Destination) markNotFound() {
	now := d.cache.cfg.Now()
	d.mu.Lock()
	d.notFound.Store(&now)
	if !d.closed {
		clear(d.set)
		d.publish()
		d.setAccrual(route.FailureAccrual{})
	}
	d.routes.Store(nil)
	d.mu.Unlock()
	d.readyOnce.Do(func() { close(d.ready) })
}

// sleep waits for d or for ctx.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats returns the balancer's view of each endpoint (cost inputs,
// ejection), for the admin server.
func (d *Destination) Stats() []balance.EndpointStats { return d.bal.Snapshot() }

// FailureAccrual returns how the balancer ejects failing endpoints now,
// defaults applied (a negative MaxFailures: never), for the admin server:
// the cache's own, or what the route table of the destination says.
func (d *Destination) FailureAccrual() balance.FailureAccrual { return d.bal.FailureAccrual() }
