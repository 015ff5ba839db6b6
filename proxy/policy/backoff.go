package policy

import (
	"math/rand/v2"
	"time"
)

// backoff spaces the reconnects of the policy stream: the nominal wait
// doubles with each failure from min up to max, and the actual wait is
// drawn uniformly from its upper half, so that the proxies of a cluster,
// which all lost their streams when the controller restarted, do not come
// back in step. Used by one goroutine.
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

// reset makes the next failure wait min again: the controller answered.
func (b *backoff) reset() { b.failures = 0 }
