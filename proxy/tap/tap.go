// Package tap streams the requests and responses a proxy forwards to live
// watchers: mesh-controller's viz component, for `mesh viz tap`.
//
// The HTTP proxy publishes every request to a Hub and, for the requests a
// watcher took, the response. Publishing never blocks and costs one atomic
// load while nobody watches. Each watcher has its filters, a rate limit and
// a bounded queue; a watcher that reads too slowly loses events (counted),
// the request path never waits for it.
package tap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Request is what the HTTP proxy knows when a request arrives.
type Request struct {
	Direction                       string // "inbound" | "outbound"
	Src, Dst                        string // ip:port of client and of the server the request goes to
	DstWorkload, ClientID, ServerID string
	Method, Scheme, Authority, Path string
	// TraceID is the hex trace ID of the proxy's span of the request when
	// that span is sampled (its trace is exported); "" otherwise, so that
	// a watcher never links to a trace that does not exist.
	TraceID string
}

// Span is what tap needs of the proxy's own span of a request
// (*trace.Span, whose methods accept a nil receiver).
type Span interface {
	TraceID() string
	Sampled() bool
}

// TraceIDOf returns the trace ID for Request.TraceID: sp's when sp is
// sampled, "" otherwise (no tracer, or a trace nobody exports). It reads
// the proxy's span, not the request's headers: the span's trace ID is the
// one the proxy exports and sends on.
func TraceIDOf(sp Span) string {
	if sp == nil || !sp.Sampled() {
		return ""
	}
	return sp.TraceID()
}

// Response is what the HTTP proxy knows when the response headers came (or
// the exchange failed).
type Response struct {
	Status     int
	GRPCStatus int // -1 when the response carried none
	Latency    time.Duration
	Success    bool
}

// Event is one request or response as a watcher receives it. Events are
// shared between watchers: treat them and what they point to as read-only.
type Event struct {
	// ID numbers the proxy's tapped requests from 1; a response carries
	// its request's.
	ID   uint64
	Time time.Time
	// Request is set on both kinds of event.
	Request *Request
	// Response is nil on a request event.
	Response *Response
}

// Limits of a Hub.
const (
	// DefaultMaxRPS is the rate limit of a Filter whose MaxRPS is 0.
	DefaultMaxRPS = 100
	// MaxRPS is the highest rate limit a watcher may ask for: beyond it
	// the proxy spends more on copying events than on forwarding.
	MaxRPS = 10000
	// MaxWatchers bounds the watchers of one Hub, since every request is
	// matched against each of them.
	MaxWatchers = 16
	// DefaultQueue is the number of events a watcher may have unread
	// before further ones are dropped for it.
	DefaultQueue = 1024
	// maxFilterLen bounds each filter string.
	maxFilterLen = 4096
)

// Errors callers can test with errors.Is.
var (
	// ErrBadFilter: a Filter that cannot be used.
	ErrBadFilter = errors.New("tap: bad filter")
	// ErrTooManyWatchers: the Hub already has MaxWatchers watchers.
	ErrTooManyWatchers = errors.New("tap: too many watchers")
)

// Filter selects the requests a watcher receives. The zero value selects
// every request, at DefaultMaxRPS.
type Filter struct {
	// Method matches exactly when set ("GET").
	Method string
	// Authority matches the request's authority exactly when set.
	Authority string
	// PathPrefix matches paths that start with it when set.
	PathPrefix string
	// MaxRPS caps the requests delivered per second; 0 means
	// DefaultMaxRPS, at most MaxRPS. Responses are not counted: the
	// response of a delivered request is always delivered.
	MaxRPS int
	// Queue is the number of events that may wait unread; 0 means
	// DefaultQueue.
	Queue int
}

// Validate reports a filter a watcher cannot use, wrapping ErrBadFilter.
func (f Filter) Validate() error {
	if f.MaxRPS < 0 || f.MaxRPS > MaxRPS {
		return fmt.Errorf("%w: max_rps %d: want 0 (default %d) to %d", ErrBadFilter, f.MaxRPS, DefaultMaxRPS, MaxRPS)
	}
	if f.Queue < 0 {
		return fmt.Errorf("%w: negative queue %d", ErrBadFilter, f.Queue)
	}
	for _, s := range []struct{ name, v string }{
		{"method", f.Method}, {"authority", f.Authority}, {"path_prefix", f.PathPrefix},
	} {
		if len(s.v) > maxFilterLen {
			return fmt.Errorf("%w: %s is longer than %d bytes", ErrBadFilter, s.name, maxFilterLen)
		}
	}
	// A method is an RFC 9110 token; anything else would never match and
	// is more likely a mistake than a wish to see nothing.
	if strings.IndexFunc(f.Method, func(r rune) bool { return !isTokenChar(r) }) >= 0 {
		return fmt.Errorf("%w: method %q is not an HTTP method", ErrBadFilter, f.Method)
	}
	return nil
}

func isTokenChar(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return true
	}
	return strings.ContainsRune("!#$%&'*+-.^_`|~", r)
}

func (f Filter) match(r *Request) bool {
	return (f.Method == "" || f.Method == r.Method) &&
		(f.Authority == "" || f.Authority == r.Authority) &&
		strings.HasPrefix(r.Path, f.PathPrefix)
}

// Hub fans events out to watchers; make one with NewHub. It is safe for
// concurrent use. A nil *Hub publishes nothing and has no watchers.
type Hub struct {
	// watchers is the current set, replaced whole under mu (copy on
	// write) so that Request reads it with one atomic load; nil until the
	// first Watch.
	watchers atomic.Pointer[[]*watcher]
	mu       sync.Mutex
	lastID   atomic.Uint64
	dropped  atomic.Uint64
	now      func() time.Time // settable by tests
}

// NewHub returns a Hub nobody watches yet.
func NewHub() *Hub { return &Hub{now: time.Now} }

// load returns the current watchers.
func (h *Hub) load() []*watcher {
	if ws := h.watchers.Load(); ws != nil {
		return *ws
	}
	return nil
}

// Dropped returns the number of events dropped since the Hub was made
// because a watcher's queue was full, for a metric.
func (h *Hub) Dropped() uint64 {
	if h == nil {
		return 0
	}
	return h.dropped.Load()
}

// Watchers returns the number of watchers.
func (h *Hub) Watchers() int {
	if h == nil {
		return 0
	}
	return len(h.load())
}

// Pending is a request at least one watcher took. Its response goes to
// those watchers, and to no others.
type Pending struct {
	hub *Hub
	id  uint64
	req Request
	to  []*watcher
	// inline holds to's watchers in the common case of few, saving an
	// allocation per tapped request.
	inline [2]*watcher
}

// Request publishes r to the watchers whose filter and rate limit it
// passes, and returns what its response must be published on, or nil when
// nobody took it. With no watcher it returns nil after one atomic load and
// allocates nothing, so the proxy may call it on every request.
func (h *Hub) Request(r Request) *Pending {
	if h == nil {
		return nil
	}
	ws := h.load()
	if len(ws) == 0 {
		return nil
	}
	var p *Pending
	var now time.Time // read once, and only for a request some filter takes
	for _, w := range ws {
		if !w.filter.match(&r) {
			continue
		}
		if now.IsZero() {
			now = h.now()
		}
		if !w.limit.allow(now) {
			continue
		}
		if p == nil {
			p = &Pending{hub: h, id: h.lastID.Add(1), req: r}
			p.to = p.inline[:0]
		}
		p.to = append(p.to, w)
	}
	if p == nil {
		return nil
	}
	ev := &Event{ID: p.id, Time: now, Request: &p.req}
	// Only the watchers that got the request wait for its response.
	kept := p.to[:0]
	for _, w := range p.to {
		if w.offer(ev) {
			kept = append(kept, w)
		}
	}
	p.to = kept
	return p
}

// Response publishes the response to p's request. It is safe to call on a
// nil *Pending (does nothing); call it at most once.
func (p *Pending) Response(r Response) {
	if p == nil || len(p.to) == 0 {
		return
	}
	// A copy, so that only a tapped response moves to the heap.
	resp := r
	ev := &Event{ID: p.id, Time: p.hub.now(), Request: &p.req, Response: &resp}
	for _, w := range p.to {
		w.offer(ev)
	}
}

// Watcher receives the events its filter selects, until Close. Read
// Events promptly: when DefaultQueue (or Filter.Queue) events wait unread,
// later ones are dropped.
type Watcher struct {
	hub *Hub
	w   *watcher
}

type watcher struct {
	filter  Filter
	limit   bucket
	queue   chan *Event
	closed  atomic.Bool
	dropped atomic.Uint64
	hub     *Hub
}

// offer queues ev without blocking, reporting false if it was dropped.
func (w *watcher) offer(ev *Event) bool {
	if w.closed.Load() {
		return false
	}
	select {
	case w.queue <- ev:
		return true
	default:
		w.dropped.Add(1)
		w.hub.dropped.Add(1)
		return false
	}
}

// Watch registers a watcher with filter f. Close it when done.
func (h *Hub) Watch(f Filter) (*Watcher, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if f.MaxRPS == 0 {
		f.MaxRPS = DefaultMaxRPS
	}
	if f.Queue == 0 {
		f.Queue = DefaultQueue
	}
	w := &watcher{filter: f, queue: make(chan *Event, f.Queue), hub: h}
	w.limit.init(f.MaxRPS, h.now())
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.load()
	if len(old) >= MaxWatchers {
		return nil, fmt.Errorf("%w: %d already watch this proxy", ErrTooManyWatchers, len(old))
	}
	next := append(append(make([]*watcher, 0, len(old)+1), old...), w)
	h.watchers.Store(&next)
	return &Watcher{hub: h, w: w}, nil
}

// Events is the watcher's queue. It is never closed: select on it with the
// context that bounds the watch.
func (w *Watcher) Events() <-chan *Event { return w.w.queue }

// Next returns the next event, waiting for one until ctx ends.
func (w *Watcher) Next(ctx context.Context) (*Event, error) {
	select {
	case ev := <-w.w.queue:
		return ev, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Dropped returns the number of events dropped for this watcher because
// its queue was full.
func (w *Watcher) Dropped() uint64 { return w.w.dropped.Load() }

// Close unregisters the watcher; no event is queued for it afterwards.
// It is idempotent.
func (w *Watcher) Close() {
	if w.w.closed.Swap(true) {
		return
	}
	h := w.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.load()
	next := make([]*watcher, 0, len(old))
	for _, o := range old {
		if o != w.w {
			next = append(next, o)
		}
	}
	h.watchers.Store(&next)
}

// bucket is a token bucket holding up to one second of tokens, so a
// watcher sees a burst of at most its rate. It is safe for concurrent use.
type bucket struct {
	mu     sync.Mutex // guards tokens and last
	rate   float64    // tokens per second
	tokens float64
	last   time.Time
}

func (b *bucket) init(rps int, now time.Time) {
	b.rate, b.tokens, b.last = float64(rps), float64(rps), now
}

// allow takes a token if there is one at now.
func (b *bucket) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.rate, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
