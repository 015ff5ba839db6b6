// Package backoff spaces retries with one exponential schedule for the whole
// project: reconnects of the proxy's streams to the controller, certificate
// renewals, DNS lookups and the probes of an ejected endpoint.
package backoff

import (
	"math/rand/v2"
	"time"
)

// DefaultJitter is the share of each wait drawn at random where
// Backoff.Jitter is zero: the wait falls in the upper half of its step.
const DefaultJitter = 0.5

// Backoff is an exponential backoff with jitter: the nominal wait doubles
// with each failure from Min up to Max, and the actual wait is shortened by
// a random fraction of up to Jitter of it. The randomness matters when the
// controller restarts: every proxy of the cluster lost its streams at the
// same instant and must not come back at the same instant. Shortening
// rather than lengthening keeps Max a true bound.
//
// The zero value waits 0 every time. Next, Failing and Reset count failures
// and are for one goroutine; Delay only reads the fields, so one Backoff
// may serve callers that keep their own counts (one per endpoint, say),
// concurrently if Rand is safe for that.
type Backoff struct {
	// Min is the nominal wait after the first failure. Max caps the
	// doubling; a Min above Max waits Max.
	Min, Max time.Duration
	// Jitter is the largest fraction of a wait that chance removes. Zero
	// means DefaultJitter (0.5); negative means none, for a schedule that
	// must be exact; above 1 counts as 1.
	Jitter float64
	// Rand returns uniformly random bits for the jitter. Nil means
	// math/rand/v2.Uint64, which is safe for concurrent use; tests set a
	// fixed draw.
	Rand func() uint64

	failures int // since the last Reset
}

// Next returns the wait before the next attempt and counts a failure.
func (b *Backoff) Next() time.Duration {
	b.failures++
	return b.Delay(b.failures)
}

// Failing reports whether a failure was counted since the last Reset: the
// first failure of a run is worth a warning, the ones after it are not.
func (b *Backoff) Failing() bool { return b.failures > 0 }

// Reset makes the next failure wait Min again; called once the other side
// answered.
func (b *Backoff) Reset() { b.failures = 0 }

// Delay returns the wait after the n-th consecutive failure, jitter
// included, without counting it: Min doubled n−1 times, at most Max. An n
// below 1 counts as 1. It never overflows, however large n or Max.
func (b *Backoff) Delay(n int) time.Duration {
	d := b.nominal(n)
	if d <= 0 {
		return 0
	}
	j := b.Jitter
	switch {
	case j == 0:
		j = DefaultJitter
	case j < 0:
		return d
	case j > 1:
		j = 1
	}
	r := b.Rand
	if r == nil {
		r = rand.Uint64
	}
	return d - time.Duration(float64(d)*j*unitFloat(r()))
}

// nominal is the n-th wait before jitter. Min<<s stays within Max exactly
// when Min <= Max>>s, which tests the doubling without computing (and
// overflowing) it; a Min above Max fails the test at once.
func (b *Backoff) nominal(n int) time.Duration {
	if b.Min <= 0 {
		return 0
	}
	shift := max(n, 1) - 1
	if shift >= 63 || b.Min > b.Max>>shift {
		return b.Max
	}
	return b.Min << shift
}

// unitFloat maps random bits to [0, 1) with the 53 bits a float64 holds.
func unitFloat(r uint64) float64 {
	return float64(r>>11) / (1 << 53)
}
