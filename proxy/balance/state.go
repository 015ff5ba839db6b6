package balance

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Lifecycle of an endState in the endpoint set (endState.life).
const (
	live    int32 = iota // in the current set
	removed              // dropped by Update; Picks still in flight
	drained              // dropped and finished; never used again
)

// Failure-accrual phases (endState.health).
const (
	healthy int32 = iota // in rotation
	ejected              // out of rotation until endState.until, then one probe
	probing              // the probe is in flight; out of rotation
)

// admission is what choosing an endpoint may do with it.
type admission int

const (
	unavailable  admission = iota // ejected or probing
	usable                        // healthy, compete on cost
	probeClaimed                  // this caller won the single probe
)

// endState is the runtime record of one endpoint: load, latency estimate and
// failure accrual. It is keyed by address and carried across Updates, apart
// from the Endpoint configuration.
//
// Pick reads the atomics without locking. Writers of the estimate and of the
// accrual fields hold mu, so concurrent responses never lose an update; a
// reader may pair an estimate with a slightly older stamp, which only skews
// one cost comparison.
type endState struct {
	pending atomic.Int64  // Picks not yet done
	life    atomic.Int32  // live, removed or drained
	health  atomic.Int32  // healthy, ejected or probing
	rtt     atomic.Uint64 // math.Float64bits of the estimate in nanoseconds
	stamp   atomic.Int64  // when rtt was last updated, ns since the epoch
	until   atomic.Int64  // when an ejected endpoint may be probed, ns since the epoch

	mu        sync.Mutex
	failures  int // consecutive failures while healthy; guarded by mu
	ejections int // consecutive ejections, the backoff exponent; guarded by mu

	// gone is the endpoint as it was when Update removed it, for OnDrained
	// and Snapshot. Written under PeakEWMA.mu before life leaves live.
	gone Endpoint
}

func newEndState(rtt float64, now int64) *endState {
	st := &endState{}
	st.rtt.Store(math.Float64bits(rtt))
	st.stamp.Store(now)
	return st
}

// observeRTT folds one response time into the peak-EWMA estimate. A sample
// above the estimate replaces it at once; a lower one is blended in with
// weight 1 − w, w = exp(−elapsed/tau), where elapsed is the time since the
// previous update. Weighting by time rather than by sample count makes the
// estimate forget at the same pace whatever the request rate. Called with
// st.mu held.
func (st *endState) observeRTT(now int64, rtt, tau float64) {
	est := math.Float64frombits(st.rtt.Load())
	if rtt < est {
		elapsed := float64(max(now-st.stamp.Load(), 0))
		w := math.Exp(-elapsed / tau)
		rtt = est*w + rtt*(1-w)
	}
	st.rtt.Store(math.Float64bits(rtt))
	st.stamp.Store(now)
}

// cost is the P2C comparison key: estimate × (pending + 1) / weight.
//
// While nothing is in flight the estimate also decays toward zero with the
// same time constant, as in tower's and Finagle's peak EWMA. Without this an
// endpoint that once answered slowly would keep its high estimate and, since
// it is never picked, never get the response that would lower it. The decay
// is held off while requests are pending so that an endpoint that has
// stopped answering does not look cheaper the longer it hangs.
func (st *endState) cost(now int64, tau, weight float64) float64 {
	pending := st.pending.Load()
	est := math.Float64frombits(st.rtt.Load())
	if pending == 0 {
		if idle := now - st.stamp.Load(); idle > 0 {
			est *= math.Exp(-float64(idle) / tau)
		}
	}
	return est * float64(pending+1) / weight
}

// admit says whether choosing may use st now. An ejected endpoint whose
// backoff is over is let through for exactly one probe: the caller whose
// compare-and-swap wins gets probeClaimed and must use it.
func (st *endState) admit(now int64) admission {
	switch st.health.Load() {
	case healthy:
		return usable
	case ejected:
		if now >= st.until.Load() && st.health.CompareAndSwap(ejected, probing) {
			return probeClaimed
		}
	}
	return unavailable
}

// unclaimProbe gives back a probe that will not report an outcome. The
// backoff is already over, so the next Pick may probe again.
func (st *endState) unclaimProbe() {
	st.health.CompareAndSwap(probing, ejected)
}

// acquire counts a new in-flight use and reports whether the endpoint is
// still in the set. On false the caller must release the use again.
//
// With Update's remove this is a store-then-load handshake on two atomics
// (Go atomics are sequentially consistent): either acquire sees the
// removal, or remove sees the pending use and leaves the drain to its Done.
func (st *endState) acquire() bool {
	st.pending.Add(1)
	return st.life.Load() == live
}

// remove marks the endpoint removed and reports whether it is drained
// already. Called with PeakEWMA.mu held.
func (st *endState) remove(ep Endpoint) bool {
	st.gone = ep
	st.life.Store(removed)
	return st.pending.Load() == 0 && st.life.CompareAndSwap(removed, drained)
}

func (st *endState) stats(ep Endpoint) EndpointStats {
	st.mu.Lock()
	failures := st.failures
	st.mu.Unlock()
	return EndpointStats{
		Addr:     ep.Addr,
		Weight:   ep.Weight,
		RTT:      time.Duration(math.Float64frombits(st.rtt.Load())),
		Pending:  st.pending.Load(),
		Failures: failures,
		Ejected:  st.health.Load() != healthy,
	}
}

// outcome is a use's result as failure accrual sees it.
type outcome int8

const (
	succeeded   outcome = iota
	failed              // counts toward MaxFailures
	unreachable         // ejects at once (ErrUnreachable)
)

func classify(err error) outcome {
	switch {
	case err == nil:
		return succeeded
	case errors.Is(err, ErrUnreachable):
		return unreachable
	}
	return failed
}

// accrue feeds one outcome to failure accrual. Only the probe decides
// whether an ejected endpoint returns: outcomes of requests sent before the
// ejection, or sent while every endpoint was ejected, are ignored. A probe
// that fails once accrual was turned off returns the endpoint all the
// same. Called with st.mu held.
func (b *PeakEWMA) accrue(st *endState, now int64, res outcome, probe bool) {
	a := b.accrual.Load()
	switch {
	case probe && (res == succeeded || a.off()):
		st.heal()
	case probe:
		eject(st, a, now)
	case st.health.Load() != healthy:
		// Sent before the ejection or in panic mode: not the probe's say.
	case res == succeeded:
		st.failures = 0
	default:
		st.failures++
		if a.maxFailures > 0 && (res == unreachable || st.failures >= a.maxFailures) {
			eject(st, a, now)
		}
	}
}

// eject takes st out of rotation for the next backoff of a: the n-th
// consecutive ejection lasts MinBackoff doubled n−1 times, at most
// MaxBackoff, less a random share of up to Jitter of it. until is stored
// before health so that admit, seeing ejected, reads the new deadline.
// Called with st.mu held.
func eject(st *endState, a *accrual, now int64) {
	st.ejections++
	st.until.Store(now + int64(a.ejection.Delay(st.ejections)))
	st.health.Store(ejected)
}

// heal puts st back in rotation with no failure counted. Called with
// st.mu held.
func (st *endState) heal() {
	st.failures, st.ejections = 0, 0
	st.health.Store(healthy)
}
