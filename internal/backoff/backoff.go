// Package backoff spaces the retries of a stream to the controller.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is an exponential backoff with jitter: the nominal wait doubles
// with each failure from Min up to Max, and the actual wait is drawn
// uniformly from the upper half of it. The randomness matters when the
// controller restarts: every proxy of the cluster lost its streams at the
// same instant and must not come back at the same instant.
//
// The zero value waits 0 every time. A Backoff is used by one goroutine.
type Backoff struct {
	Min, Max time.Duration
	failures int // since the last Reset
}

// Next returns the wait before the next attempt and counts a failure.
func (b *Backoff) Next() time.Duration {
	d := b.Min
	for i := 0; i < b.failures && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	b.failures++
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Failing reports whether a failure was counted since the last Reset: the
// first failure of a run is worth a warning, the ones after it are not.
func (b *Backoff) Failing() bool { return b.failures > 0 }

// Reset makes the next failure wait Min again; called once the other side
// answered.
func (b *Backoff) Reset() { b.failures = 0 }
