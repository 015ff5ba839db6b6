package client

import (
	"math/rand/v2"
	"time"
)

// backoff yields the delays between retries: doubling from min up to max,
// each drawn at random from the upper half of its step so that the proxies
// of a whole cluster, all cut off by the same controller outage, do not
// come back at the same instant. It is used by one goroutine.
type backoff struct {
	min, max time.Duration
	step     time.Duration // the nominal delay of the next retry; 0 before the first
}

// next returns the delay before the next retry, between half and all of
// the current step, and doubles the step up to max.
func (b *backoff) next() time.Duration {
	if b.step == 0 {
		b.step = b.min
	}
	d := b.step
	if b.step < b.max {
		b.step *= 2
		if b.step > b.max || b.step <= 0 {
			b.step = b.max
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// reset starts the next failure over at min.
func (b *backoff) reset() { b.step = 0 }
