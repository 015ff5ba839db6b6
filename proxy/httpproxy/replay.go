package httpproxy

import "sync"

// DefaultReplayLimit is the request body a Replay keeps when its Limit is
// zero: what a request that provably reached no application is sent
// again with (docs/traffic.md 3.5), and the default MaxBodyBytes of a
// route's retry policy (3.4). Linkerd keeps as much (linkerd/http/retry,
// replay.rs), and a 1 MB POST is then sent once.
const DefaultReplayLimit = 64 << 10

// Replay keeps a copy of a request body as the forwarders send it, so
// that the request can go again to another endpoint: up to Limit bytes,
// in a pooled buffer grown by size classes, so that the small bodies most
// requests have hold little memory. A body past Limit is not kept at all
// (Capped), and its buffer goes back at once. The zero value is an empty
// Replay of DefaultReplayLimit.
//
// A Replay is used by one goroutine at a time; h1 hands it from a body's
// sender to its exchange, h2 guards it with its stream's lock.
type Replay struct {
	// Limit is the most bytes kept; zero means DefaultReplayLimit. Set it
	// before the first Add.
	Limit  int
	b      *[]byte
	capped bool
}

// replayClasses are the sizes of the pooled buffers. A Limit above the
// last grows its buffer past it by doubling, unpooled: such limits are
// rare (a retry policy's max body), and a buffer that large is not worth
// keeping around.
var replayClasses = [...]int{4 << 10, 16 << 10, 64 << 10}

var replayPools [len(replayClasses)]sync.Pool

func (r *Replay) limit() int {
	if r.Limit <= 0 {
		return DefaultReplayLimit
	}
	return r.Limit
}

// Add keeps b, which went on after the bytes kept so far; once the body
// passes Limit, nothing more is kept and Capped reports it.
func (r *Replay) Add(b []byte) {
	if r.capped || len(b) == 0 {
		return
	}
	n := r.Len()
	if n+len(b) > r.limit() {
		r.capped = true
		r.Release()
		return
	}
	if r.b == nil || n+len(b) > cap(*r.b) {
		r.grow(n + len(b))
	}
	*r.b = append(*r.b, b...)
}

// grow moves the kept bytes to a buffer that holds need: a pooled one of
// the smallest class that does, or past the classes one of twice the size
// (at most the limit).
func (r *Replay) grow(need int) {
	var nb *[]byte
	i := 0
	for i < len(replayClasses) && replayClasses[i] < need {
		i++
	}
	if i < len(replayClasses) {
		nb, _ = replayPools[i].Get().(*[]byte)
		if nb == nil {
			b := make([]byte, 0, replayClasses[i])
			nb = &b
		}
	} else {
		size := max(2*cap(*r.b), need)
		b := make([]byte, 0, min(size, r.limit()))
		nb = &b
	}
	if r.b != nil {
		*nb = append((*nb)[:0], *r.b...)
		r.Release()
	}
	r.b = nb
}

// Bytes returns the body kept so far; it is valid until the next Add,
// Reset or Release.
func (r *Replay) Bytes() []byte {
	if r.b == nil {
		return nil
	}
	return *r.b
}

// Len is how many bytes are kept.
func (r *Replay) Len() int {
	if r.b == nil {
		return 0
	}
	return len(*r.b)
}

// Capped reports whether the body went past Limit: it was not all kept,
// and the request cannot be sent again.
func (r *Replay) Capped() bool { return r.capped }

// Reset empties the Replay for another recording of the same body,
// keeping its buffer.
func (r *Replay) Reset() {
	if r.b != nil {
		*r.b = (*r.b)[:0]
	}
}

// Release gives the buffer back to its pool. Capped stays as it was: a
// body that went past the limit is still not all kept.
func (r *Replay) Release() {
	if r.b == nil {
		return
	}
	for i, size := range replayClasses {
		if cap(*r.b) == size {
			*r.b = (*r.b)[:0]
			replayPools[i].Put(r.b)
			break
		}
	}
	r.b = nil
}
