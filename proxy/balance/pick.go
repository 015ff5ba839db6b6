package balance

import (
	"context"
	"errors"
	"time"
)

// fastDraws bounds the random draws Pick makes before it falls back to a
// scan. With a handful of endpoints ejected, eight draws almost always find
// two distinct healthy ones; the scan handles the rest.
const fastDraws = 8

// Pick is one use of an endpoint: a request, or a TCP connection. The caller
// reports the outcome with Observe and must call Done exactly when the use
// ends; until then the use counts as pending in the endpoint's cost.
//
// A Pick belongs to one use: call Observe and Done on one copy of it only.
// Its methods mark that copy, so a second Observe or Done on it is a no-op,
// but Done on two copies would count the end of the use twice. The zero Pick
// is inert.
type Pick struct {
	b        *PeakEWMA
	e        *entry // in an immutable picker snapshot
	probe    bool   // this use is the probe of an ejected endpoint
	observed bool
	outcome  bool // Observe reported success or failure
	done     bool
}

// Pick chooses an endpoint by power of two choices: it draws two distinct
// endpoints that failure accrual has not ejected and returns the one of
// lower cost. An ejected endpoint whose backoff is over is returned at once,
// as its single probe, wherever it is drawn.
//
// If every endpoint is ejected, Pick still returns one, chosen the same way
// among all of them ("panic mode", as in Envoy): sending to an endpoint that
// may be failing is better than failing every request outright, and when
// all are failing together the cause is often not the endpoints. Outcomes
// of such picks do not end the ejection; only the probe does.
//
// Pick reports false only when the set is empty. It does not allocate, and
// waits on no lock.
func (b *PeakEWMA) Pick() (Pick, bool) {
	for {
		p := b.snap.Load()
		if len(p.entries) == 0 {
			return Pick{}, false
		}
		e, probe := b.choose(p, b.now())
		if e.st.acquire() {
			return Pick{b: b, e: e, probe: probe}, true
		}
		// An Update removed e after we loaded p. It published the new set
		// before marking e removed, so the next load sees the new set.
		if probe {
			e.st.unclaimProbe()
		}
		b.release(e.st)
	}
}

// choose returns the winner of two random distinct usable entries, or a
// probe. Rejection sampling keeps the pair uniform over usable entries.
func (b *PeakEWMA) choose(p *picker, now int64) (*entry, bool) {
	n := len(p.entries)
	var first *entry
	for range fastDraws {
		e := &p.entries[index(b.rand(), n)]
		switch e.st.admit(now) {
		case probeClaimed:
			return e, true
		case unavailable:
			continue
		}
		switch {
		case n == 1:
			return e, false
		case first == nil:
			first = e
		case e != first:
			return b.cheaper(first, e, now), false
		}
	}
	return b.scan(p, now)
}

// scan is choose's slow path when most endpoints are unavailable: count the
// usable entries, then pick two of them by rank.
func (b *PeakEWMA) scan(p *picker, now int64) (*entry, bool) {
	count := 0
	for i := range p.entries {
		switch p.entries[i].st.admit(now) {
		case probeClaimed:
			return &p.entries[i], true
		case usable:
			count++
		}
	}
	if count == 0 {
		return b.panicPick(p, now), false
	}
	i := index(b.rand(), count)
	first := p.nthUsable(i)
	switch {
	case first == nil:
		// Health changed between the two passes; any entry will do.
		return b.panicPick(p, now), false
	case count == 1:
		return first, false
	}
	j := index(b.rand(), count-1)
	if j >= i {
		j++
	}
	second := p.nthUsable(j)
	if second == nil {
		return first, false
	}
	return b.cheaper(first, second, now), false
}

// nthUsable returns the n-th (from 0) healthy entry, or nil if there are
// fewer now. Unlike admit it never claims a probe, which it could not use.
func (p *picker) nthUsable(n int) *entry {
	for i := range p.entries {
		if p.entries[i].st.health.Load() != healthy {
			continue
		}
		if n == 0 {
			return &p.entries[i]
		}
		n--
	}
	return nil
}

// panicPick is power of two choices over all entries, ejected or not.
func (b *PeakEWMA) panicPick(p *picker, now int64) *entry {
	n := len(p.entries)
	i := index(b.rand(), n)
	if n == 1 {
		return &p.entries[i]
	}
	j := index(b.rand(), n-1)
	if j >= i {
		j++
	}
	return b.cheaper(&p.entries[i], &p.entries[j], now)
}

// cheaper returns the entry of lower cost, x on a tie.
func (b *PeakEWMA) cheaper(x, y *entry, now int64) *entry {
	if y.st.cost(now, b.tau, y.weight) < x.st.cost(now, b.tau, x.weight) {
		return y
	}
	return x
}

// Endpoint returns the chosen endpoint as the last Update described it.
func (p *Pick) Endpoint() Endpoint {
	if p.e == nil {
		return Endpoint{}
	}
	return p.e.ep
}

// Observe reports the use's outcome: rtt is the latency sample (time to
// response headers, or time to connect for TCP), and err classifies the
// outcome for failure accrual. A nil err is a success, any other a failure
// (the caller maps 5xx answers and gRPC UNAVAILABLE to an error), one
// wrapping ErrUnreachable a failure that ejects the endpoint at once, except
// context.Canceled: a client that gave up says nothing about the endpoint,
// so it records neither sample nor outcome. An rtt of zero or less records
// no latency sample. Only the first Observe of a Pick counts, and none after
// Done.
func (p *Pick) Observe(rtt time.Duration, err error) {
	if p.e == nil || p.observed || p.done {
		return
	}
	p.observed = true
	if errors.Is(err, context.Canceled) {
		return
	}
	p.outcome = true
	b, st := p.b, p.e.st
	now := b.now()
	st.mu.Lock()
	if rtt > 0 {
		st.observeRTT(now, float64(rtt), b.tau)
	}
	b.accrue(st, now, classify(err), p.probe)
	st.mu.Unlock()
}

// Done ends the use: the endpoint's pending count drops, and if Update has
// removed the endpoint and this was its last use, Config.OnDrained runs. A
// probe that ends without an outcome leaves the endpoint ejected but
// immediately eligible for another probe. Calls after the first are no-ops.
func (p *Pick) Done() {
	if p.e == nil || p.done {
		return
	}
	p.done = true
	if p.probe && !p.outcome {
		p.e.st.unclaimProbe()
	}
	p.b.release(p.e.st)
}
