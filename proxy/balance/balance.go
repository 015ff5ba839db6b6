// Package balance spreads a proxy's outbound requests over the endpoints of
// one destination, preferring the endpoints that answer fastest.
//
// PeakEWMA is the power-of-two-choices balancer Linkerd uses (roadmap item 3
// in DESIGN.md): it draws two endpoints at random and sends the request to
// the one with the lower cost, where
//
//	cost = rtt_estimate × (pending + 1) / weight
//
// The RTT estimate is a peak-sensitive exponentially weighted moving average:
// a response slower than the estimate replaces it at once, a faster one is
// blended in with weight 1 − exp(−elapsed/Decay). Reacting at once to
// slowness and only gradually to recovery moves load off a struggling
// endpoint before its queue grows.
//
// Failure accrual takes an endpoint out of rotation after a run of
// consecutive failures, or at once when it could not be connected to
// (ErrUnreachable), lets one probe request through when its backoff ends,
// and restores it when the probe succeeds.
//
// # Use
//
// One Pick is one use of an endpoint: a request for HTTP and gRPC, a
// connection for opaque TCP. The caller reports the outcome with Observe and
// ends the use with Done:
//
//	// HTTP or gRPC: one Pick per request.
//	p, ok := b.Pick()
//	if !ok {
//		return errNoEndpoints // answer 503
//	}
//	defer p.Done()
//	start := time.Now()
//	resp, err := roundTrip(ctx, p.Endpoint(), req)
//	p.Observe(time.Since(start), classify(resp, err)) // a 5xx counts as an error
//
//	// Opaque TCP: one Pick per connection, pending until the connection closes.
//	p, ok := b.Pick()
//	...
//	conn, err := dialer.DialContext(ctx, "tcp", p.Endpoint().Addr.String())
//	p.Observe(time.Since(start), err) // connect time is the RTT sample
//	if err != nil {
//		p.Done()
//		return err
//	}
//	defer p.Done() // after the copy loops finish and conn is closed
//
// # Concurrency
//
// Pick, Pick.Observe, Pick.Done and Snapshot are safe for concurrent use.
// Update and SetFailureAccrual are serialised internally. Pick never waits on a lock held by Update
// or across I/O: Update publishes an immutable picker snapshot through an
// atomic pointer, and each endpoint's load and latency live in atomics.
package balance

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mesh-dev/mesh/internal/backoff"
)

// Defaults used where a Config field is zero. They follow linkerd2-proxy
// (EWMA default RTT 30ms and decay 10s) and Linkerd's consecutive-failure
// accrual (7 failures, backoff 1s to 1m, jitter ratio 0.5).
const (
	DefaultRTT         = 30 * time.Millisecond
	DefaultDecay       = 10 * time.Second
	DefaultMaxFailures = 7
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = time.Minute
	DefaultJitter      = 0.5
)

// ErrInvalidEndpoint is wrapped by the errors Update returns for an endpoint
// set it refuses (a missing address or port, or a repeated address).
var ErrInvalidEndpoint = errors.New("balance: invalid endpoint")

// ErrInvalidConfig is wrapped by the errors New returns for a Config it
// refuses.
var ErrInvalidConfig = errors.New("balance: invalid config")

// ErrUnreachable, wrapped by an error given to Pick.Observe, says the use
// failed before it sent anything: the endpoint refused the connection,
// did not answer it in time, or failed its TLS handshake. Failure accrual
// ejects such an endpoint at once rather than after MaxFailures in a row,
// so that new uses go elsewhere while it is gone (a killed pod still in
// the set) and its probe tells when it is back, as linkerd2-proxy stops
// balancing to an endpoint whose connection failed until it reconnects.
var ErrUnreachable = errors.New("balance: endpoint unreachable")

// Endpoint is one backend of a destination, as the destination service
// reports it.
type Endpoint struct {
	// Addr is where connections go. It identifies the endpoint across
	// Updates: runtime statistics follow the address.
	Addr netip.AddrPort
	// Weight scales the endpoint's share of traffic: its cost is divided by
	// Weight, so an endpoint of weight 2 may carry twice the load of one of
	// weight 1 at equal latency. Only ratios matter. Zero counts as 1.
	Weight uint32
	// Metadata is opaque to the balancer (identity, labels, the connection
	// pool); the proxy reads it back from Pick.Endpoint.
	Metadata any
}

// Config tunes a PeakEWMA. The zero value is ready to use and means
// Linkerd's defaults, the wall clock and a goroutine-safe random source.
type Config struct {
	// DefaultRTT is the estimate a new endpoint starts from, before it has
	// answered. Zero means DefaultRTT (30ms).
	DefaultRTT time.Duration
	// Decay is the EWMA time constant tau: a faster response is blended in
	// with weight 1 − exp(−elapsed/Decay). Zero means DefaultDecay (10s).
	Decay time.Duration

	// MaxFailures is how many consecutive failures eject an endpoint. Zero
	// means DefaultMaxFailures (7); negative turns failure accrual off.
	MaxFailures int
	// MinBackoff is how long the first ejection lasts; each failed probe
	// doubles it. Zero means DefaultMinBackoff (1s).
	MinBackoff time.Duration
	// MaxBackoff caps the ejection time. Zero means DefaultMaxBackoff (1m).
	MaxBackoff time.Duration
	// Jitter shortens each ejection by a random fraction of up to Jitter of
	// its length, so endpoints that failed together are not probed together.
	// Zero means DefaultJitter (0.5); negative turns jitter off.
	Jitter float64

	// OnDrained, if set, is called once for each endpoint that Update removed,
	// as soon as its last in-flight Pick is done (at once if it had none), so
	// the proxy can close its connection pool. It runs on the goroutine that
	// finished the endpoint (inside Pick.Done, or inside Update or Pick after
	// the balancer's lock is released) and must not block. An endpoint that Update adds back before it drains is kept,
	// statistics and all, and gets no OnDrained for that removal.
	OnDrained func(Endpoint)

	// Now reads the clock. Nil means time.Now; tests inject a fake clock.
	Now func() time.Time
	// Rand returns uniformly random bits for the two choices and the jitter.
	// Nil means math/rand/v2.Uint64. Pick and Observe call it on the caller's
	// goroutine, so it must be safe for concurrent use if they run
	// concurrently; a seeded generator suits single-goroutine tests.
	Rand func() uint64
}

// FailureAccrual is the part of a Config that SetFailureAccrual changes
// on a running balancer; its fields mean what Config's of the same names
// do, zero for the defaults.
type FailureAccrual struct {
	MaxFailures            int
	MinBackoff, MaxBackoff time.Duration
}

// FailureAccrual returns c's failure accrual fields.
func (c Config) FailureAccrual() FailureAccrual {
	return FailureAccrual{MaxFailures: c.MaxFailures, MinBackoff: c.MinBackoff, MaxBackoff: c.MaxBackoff}
}

// PeakEWMA is a latency-aware power-of-two-choices balancer over a set of
// endpoints. Create it with New and feed it endpoint sets with Update.
type PeakEWMA struct {
	tau        float64 // Decay in nanoseconds
	defaultRTT float64 // nanoseconds
	jitter     float64 // Config.Jitter, for the ejection schedules
	onDrained  func(Endpoint)
	clock      func() time.Time
	rand       func() uint64
	epoch      time.Time // times are kept as nanoseconds since epoch so atomics can hold them

	snap atomic.Pointer[picker]
	// accrual is the current failure accrual; SetFailureAccrual replaces
	// it whole, and accrue and eject load it once per outcome.
	accrual atomic.Pointer[accrual]

	mu       sync.Mutex                   // serialises Update and guards draining
	draining map[netip.AddrPort]*endState // removed endpoints still in flight
}

// picker is an immutable view of the endpoint set; Update replaces it whole.
type picker struct {
	entries []entry
}

// accrual is a failure accrual with its defaults applied. Immutable.
type accrual struct {
	maxFailures int             // negative: accrual is off
	ejection    backoff.Backoff // the schedule only; each endState counts its ejections
}

// off reports whether no endpoint is ejected for failing.
func (a *accrual) off() bool { return a.maxFailures < 0 }

// entry pairs an endpoint's configuration, which changes only through
// Update, with its runtime state, which outlives Updates.
type entry struct {
	ep     Endpoint
	weight float64
	st     *endState
}

// New returns a balancer with an empty endpoint set: Pick reports false
// until Update supplies endpoints.
func New(cfg Config) (*PeakEWMA, error) {
	switch {
	case cfg.DefaultRTT < 0, cfg.Decay < 0:
		return nil, fmt.Errorf("%w: negative duration", ErrInvalidConfig)
	case cfg.Jitter > 1:
		return nil, fmt.Errorf("%w: jitter %v above 1", ErrInvalidConfig, cfg.Jitter)
	}
	b := &PeakEWMA{
		tau:        float64(orDefault(cfg.Decay, DefaultDecay)),
		defaultRTT: float64(orDefault(cfg.DefaultRTT, DefaultRTT)),
		// A negative Jitter stays negative, which backoff also reads as
		// none.
		jitter:    orDefault(cfg.Jitter, DefaultJitter),
		onDrained: cfg.OnDrained,
		clock:     cfg.Now,
		rand:      cfg.Rand,
		draining:  map[netip.AddrPort]*endState{},
	}
	if b.clock == nil {
		b.clock = time.Now
	}
	if b.rand == nil {
		b.rand = rand.Uint64
	}
	a, err := b.newAccrual(cfg.FailureAccrual())
	if err != nil {
		return nil, err
	}
	b.accrual.Store(a)
	b.epoch = b.clock()
	b.snap.Store(&picker{})
	return b, nil
}

// newAccrual checks fa and applies its defaults.
func (b *PeakEWMA) newAccrual(fa FailureAccrual) (*accrual, error) {
	if fa.MinBackoff < 0 || fa.MaxBackoff < 0 {
		return nil, fmt.Errorf("%w: negative backoff", ErrInvalidConfig)
	}
	minBackoff := orDefault(fa.MinBackoff, DefaultMinBackoff)
	maxBackoff := orDefault(fa.MaxBackoff, DefaultMaxBackoff)
	if maxBackoff < minBackoff {
		return nil, fmt.Errorf("%w: max backoff %v below min backoff %v",
			ErrInvalidConfig, maxBackoff, minBackoff)
	}
	return &accrual{
		maxFailures: orDefault(fa.MaxFailures, DefaultMaxFailures),
		ejection:    backoff.Backoff{Min: minBackoff, Max: maxBackoff, Jitter: b.jitter, Rand: b.rand},
	}, nil
}

// FailureAccrual returns the balancer's failure accrual with its
// defaults applied: MaxFailures is negative when accrual is off.
func (b *PeakEWMA) FailureAccrual() FailureAccrual {
	a := b.accrual.Load()
	return FailureAccrual{MaxFailures: a.maxFailures, MinBackoff: a.ejection.Min, MaxBackoff: a.ejection.Max}
}

// SetFailureAccrual changes how the balancer ejects failing endpoints
// (per Service, docs/traffic.md 3.6), keeping every endpoint's latency
// estimate, load and count of consecutive failures. An endpoint ejected
// now keeps the backoff it got, and its next ejection follows the new
// schedule; a lower MaxFailures ejects an endpoint past it at its next
// failure. Turning accrual off (negative MaxFailures) puts every ejected
// endpoint back in rotation at once. A FailureAccrual that New would
// refuse returns an error wrapping ErrInvalidConfig and changes nothing.
// Safe for concurrent use with every other method.
func (b *PeakEWMA) SetFailureAccrual(fa FailureAccrual) error {
	a, err := b.newAccrual(fa)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// Stored before the endpoints are healed below: an outcome accrued
	// after an endpoint's heal holds its lock after the heal did, so it
	// sees accrual off and cannot eject it again.
	b.accrual.Store(a)
	if !a.off() {
		return nil
	}
	heal := func(st *endState) {
		st.mu.Lock()
		st.heal()
		st.mu.Unlock()
	}
	p := b.snap.Load()
	for i := range p.entries {
		heal(p.entries[i].st)
	}
	for _, st := range b.draining {
		heal(st)
	}
	return nil
}

// orDefault is v, or def where v is the zero value.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Update replaces the endpoint set. Endpoints whose address was already in
// the set keep their latency estimate, load and failure state; new ones start
// from the default RTT; removed ones are never picked again, while their
// in-flight Picks finish normally (see Config.OnDrained). An invalid set
// returns an error wrapping ErrInvalidEndpoint and changes nothing.
func (b *PeakEWMA) Update(eps []Endpoint) error {
	if err := validate(eps); err != nil {
		return err
	}
	b.mu.Lock()
	old := b.snap.Load()
	gone := make(map[netip.AddrPort]*entry, len(old.entries))
	for i := range old.entries {
		gone[old.entries[i].ep.Addr] = &old.entries[i]
	}
	now := b.now()
	next := &picker{entries: make([]entry, len(eps))}
	for i, ep := range eps {
		var st *endState
		if e, ok := gone[ep.Addr]; ok {
			st = e.st
			delete(gone, ep.Addr)
		} else {
			st = b.revive(ep.Addr, now)
		}
		next.entries[i] = entry{ep: ep, weight: float64(max(ep.Weight, 1)), st: st}
	}
	// Publish before marking removals: a Pick that finds its endpoint
	// removed retries and must then see the new set (see PeakEWMA.Pick).
	b.snap.Store(next)

	var finished []Endpoint
	for addr, e := range gone {
		if e.st.remove(e.ep) {
			finished = append(finished, e.ep)
		} else {
			b.draining[addr] = e.st
		}
	}
	for addr, st := range b.draining {
		if st.life.Load() == drained {
			delete(b.draining, addr)
		}
	}
	b.mu.Unlock()

	// Outside the lock, so a callback may call back into the balancer.
	if b.onDrained != nil {
		for _, ep := range finished {
			b.onDrained(ep)
		}
	}
	return nil
}

func validate(eps []Endpoint) error {
	seen := make(map[netip.AddrPort]struct{}, len(eps))
	for i, ep := range eps {
		if !ep.Addr.IsValid() || ep.Addr.Port() == 0 {
			return fmt.Errorf("%w: endpoint %d has no address and port (%v)", ErrInvalidEndpoint, i, ep.Addr)
		}
		if _, dup := seen[ep.Addr]; dup {
			return fmt.Errorf("%w: endpoint %d repeats address %v", ErrInvalidEndpoint, i, ep.Addr)
		}
		seen[ep.Addr] = struct{}{}
	}
	return nil
}

// revive returns the state of a removed endpoint that comes back before it
// drained, or a fresh state. Called with b.mu held.
func (b *PeakEWMA) revive(addr netip.AddrPort, now int64) *endState {
	if st, ok := b.draining[addr]; ok {
		delete(b.draining, addr)
		if st.life.CompareAndSwap(removed, live) {
			return st
		}
	}
	return newEndState(b.defaultRTT, now)
}

// now is the clock in nanoseconds since the balancer's epoch.
func (b *PeakEWMA) now() int64 {
	return int64(b.clock().Sub(b.epoch))
}

// release ends one in-flight use of st and reports the endpoint drained if
// it was the last use of a removed endpoint.
func (b *PeakEWMA) release(st *endState) {
	if st.pending.Add(-1) == 0 && st.life.Load() == removed {
		b.drain(st)
	}
}

// drain reports st drained exactly once, whichever of Update and the last
// Done gets here first.
func (b *PeakEWMA) drain(st *endState) {
	if st.life.CompareAndSwap(removed, drained) && b.onDrained != nil {
		b.onDrained(st.gone)
	}
}

// EndpointStats is a point-in-time view of one endpoint for the admin server
// and metrics.
type EndpointStats struct {
	Addr   netip.AddrPort
	Weight uint32
	// RTT is the peak-EWMA estimate as of the last response. While the
	// endpoint is idle, Pick decays it further toward zero (see Pick).
	RTT time.Duration
	// Pending counts Picks not yet done.
	Pending int64
	// Failures counts consecutive failures toward ejection.
	Failures int
	// Ejected is true while failure accrual keeps the endpoint out of
	// rotation, including while its probe is in flight.
	Ejected bool
	// Draining is true for an endpoint Update removed that still has Picks
	// in flight.
	Draining bool
}

// Snapshot returns the statistics of every endpoint in the set, in the order
// of the last Update, followed by draining endpoints ordered by address.
func (b *PeakEWMA) Snapshot() []EndpointStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.snap.Load()
	out := make([]EndpointStats, 0, len(p.entries)+len(b.draining))
	for i := range p.entries {
		out = append(out, p.entries[i].st.stats(p.entries[i].ep))
	}
	start := len(out)
	for _, st := range b.draining {
		if st.life.Load() == removed {
			s := st.stats(st.gone)
			s.Draining = true
			out = append(out, s)
		}
	}
	slices.SortFunc(out[start:], func(x, y EndpointStats) int { return x.Addr.Compare(y.Addr) })
	return out
}

// index maps random bits to [0, n) by multiply-shift, which avoids a
// division; the bias for n far below 2^32 is negligible.
func index(r uint64, n int) int {
	return int((r & math.MaxUint32) * uint64(n) >> 32)
}
