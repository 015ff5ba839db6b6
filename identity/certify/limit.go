package certify

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc/peer"
)

// Refusals made before any work is done, so that a flood of requests,
// from one client or from many, cannot starve the others of certificates
// (issue 12). Each is counted under its own reason.
var (
	errRateLimited   = errors.New("too many certificate requests from this address")
	errBusy          = errors.New("identity service is busy")
	errCachedDenial  = errors.New("token not accepted")
	errClientStreams = errors.New("too many trust-bundle streams from this address")
)

// lru is a map of at most max entries that forgets the least recently
// used one to make room. It is not safe for concurrent use: its owner's
// mutex guards it.
type lru[K comparable, V any] struct {
	max   int
	items map[K]*list.Element
	order list.List // of *lruEntry[K, V], most recently used first
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, items: make(map[K]*list.Element)}
}

// get returns k's value, to be updated in place, and marks it used.
func (c *lru[K, V]) get(k K) (*V, bool) {
	el, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	return &el.Value.(*lruEntry[K, V]).val, true
}

// add sets k to v, forgetting the least recently used entry if c is full,
// and returns the stored value.
func (c *lru[K, V]) add(k K, v V) *V {
	if el, ok := c.items[k]; ok {
		c.order.MoveToFront(el)
		e := el.Value.(*lruEntry[K, V])
		e.val = v
		return &e.val
	}
	if len(c.items) >= c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*lruEntry[K, V]).key)
	}
	e := &lruEntry[K, V]{key: k, val: v}
	c.items[k] = c.order.PushFront(e)
	return &e.val
}

func (c *lru[K, V]) remove(k K) {
	if el, ok := c.items[k]; ok {
		c.order.Remove(el)
		delete(c.items, k)
	}
}

func (c *lru[K, V]) len() int { return len(c.items) }

// clientLimiter is a token bucket per client address: a client may make
// burst requests at once and rate per second after that. Buckets live in
// an LRU of bounded size, so a flood from many addresses costs bounded
// memory. Forgetting a bucket only ever gives its client a full one, the
// state of a client that has been quiet, so a legitimate client is never
// refused because of eviction; a flood from more addresses than the LRU
// holds is then limited by the review slots alone.
type clientLimiter struct {
	rate  float64 // tokens per second
	burst float64

	mu      sync.Mutex
	buckets *lru[netip.Addr, bucket] // guarded by mu
}

type bucket struct {
	tokens  float64
	at      time.Time // when tokens was last brought up to date
	limited bool      // a request was refused since the bucket was last full
}

func newClientLimiter(rate float64, burst, max int) *clientLimiter {
	return &clientLimiter{rate: rate, burst: float64(burst), buckets: newLRU[netip.Addr, bucket](max)}
}

// allow takes a token from client's bucket at now. first is true for the
// first refusal since the bucket was last full, so a flood is logged once,
// not once per request nor once per token that trickles back.
func (l *clientLimiter) allow(client netip.Addr, now time.Time) (ok, first bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, found := l.buckets.get(client)
	if !found {
		b = l.buckets.add(client, bucket{tokens: l.burst, at: now})
	}
	if elapsed := now.Sub(b.at); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
		b.at = now
	}
	if b.tokens >= l.burst {
		b.limited = false // the client has been quiet: a new episode
	}
	if b.tokens < 1 {
		first = !b.limited
		b.limited = true
		return false, first
	}
	b.tokens--
	return true, false
}

func (l *clientLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buckets.len()
}

// tokenKey identifies a token in the denial cache without keeping it: a
// projected token carries a signature, so its hash cannot be reversed.
type tokenKey [sha256.Size]byte

// denials remembers, for ttl, the tokens the API server refused, so that
// sending one again costs no TokenReview. It holds at most max tokens,
// forgetting the oldest first; a forgotten token is only reviewed again.
type denials struct {
	ttl time.Duration

	mu      sync.Mutex
	expires *lru[tokenKey, time.Time] // guarded by mu
}

func newDenials(ttl time.Duration, max int) *denials {
	return &denials{ttl: ttl, expires: newLRU[tokenKey, time.Time](max)}
}

func hashToken(token []byte) tokenKey { return sha256.Sum256(token) }

// denied reports whether k was refused less than ttl before now.
func (d *denials) denied(k tokenKey, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	exp, ok := d.expires.get(k)
	if !ok {
		return false
	}
	if !now.Before(*exp) {
		d.expires.remove(k)
		return false
	}
	return true
}

func (d *denials) add(k tokenKey, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expires.add(k, now.Add(d.ttl))
}

func (d *denials) size() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expires.len()
}

// slots is a semaphore bounding the TokenReviews in flight, those waiting
// for the Kubernetes client's rate limiter included.
type slots chan struct{}

// acquire takes a slot, waiting at most wait for one; it fails with
// errBusy then, or with ctx's error. Call release after a nil return.
func (s slots) acquire(ctx context.Context, wait time.Duration) error {
	select {
	case s <- struct{}{}:
		return nil
	default:
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case s <- struct{}{}:
		return nil
	case <-timer.C:
		return errBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s slots) release() { <-s }

// streamLimiter bounds the trust-bundle streams open at once, in all and
// per client address. A proxy holds one; a few more per address allow for
// a reconnect that overlaps the old stream's end.
type streamLimiter struct {
	max, perClient int

	mu    sync.Mutex
	total int                // guarded by mu
	open  map[netip.Addr]int // guarded by mu; no zero counts, so at most max entries
}

func newStreamLimiter(max, perClient int) *streamLimiter {
	return &streamLimiter{max: max, perClient: perClient, open: make(map[netip.Addr]int)}
}

// acquire counts a stream from client, or fails with errBusy or
// errClientStreams. Call release after a nil return.
func (l *streamLimiter) acquire(client netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.max:
		return errBusy
	case l.open[client] >= l.perClient:
		return errClientStreams
	}
	l.total++
	l.open[client]++
	return nil
}

func (l *streamLimiter) release(client netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.open[client] <= 1 {
		delete(l.open, client)
	} else {
		l.open[client]--
	}
}

// clientAddr is the IP address of ctx's gRPC peer, without port or IPv4
// mapping. Callers without a TCP address (none in the controller) share
// the zero Addr, and so one bucket.
func clientAddr(ctx context.Context) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}
	}
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(tcp.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
