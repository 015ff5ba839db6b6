package discovery

import (
	"math/rand/v2"
	"time"
)

// backoff spaces the reconnects of one destination's stream: the nominal
// wait doubles with each failure from min up to max, and the actual wait
// is drawn uniformly from the upper half of it. The randomness matters
// when the controller restarts: every proxy of the cluster lost its
// streams at the same instant and must not come back at the same instant.
// It is used by one goroutine.
type backoff struct {
	min, max time.Duration
	failures int // since the last reset
}

// next returns the wait before the next attempt and counts a failure.
func (b *backoff) next() time.Duration {
	d := b.min
	for i := 0; i < b.failures && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	b.failures++
	half := d / 2
	return half + rand.N(d-half+1)
}

// reset makes the next failure wait min again; called once a stream
// delivers an update, which shows the controller is back.
func (b *backoff) reset() { b.failures = 0 }
