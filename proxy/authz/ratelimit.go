package authz

import (
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
)

// Scope is which limit of a Server held a request back, the scope label
// of mesh_proxy_http_rate_limited_total.
type Scope string

// The limits of an HTTPLocalRateLimitPolicy.
const (
	ScopeTotal    Scope = "total"    // all the Server's requests
	ScopeIdentity Scope = "identity" // the requests of one client identity
	ScopeOverride Scope = "override" // those of the clients an override names
)

// DefaultMaxIdentities is Options.MaxIdentities' default.
const DefaultMaxIdentities = 1024

// Limiter is the rate limit of one Server (a RateLimit of inbound.proto):
// a GCRA limiter for total, one per override, and one per client identity
// for identity, in a map that keeps the most recently used identities.
//
// Each limit is the generic cell rate algorithm (GCRA, as Linkerd's
// governor crate): a rate of r requests per second admits one request
// every 1/r second, with a burst of r, so that r requests may come at once
// after a second without any. A request must pass every limit that applies
// to its client, and one refused by any counts against none.
//
// A Limiter is safe for concurrent use; one mutex guards its state, held
// for a few map and arithmetic operations per request. It outlives the
// Policy it was compiled in when the next policy gives its Server the same
// limits (Options.Previous), so a policy update does not hand out a fresh
// burst.
type Limiter struct {
	msg       *inboundv1.RateLimit // what it was compiled from
	total     rate                 // zero: no total limit
	identity  rate                 // zero: no per-identity limit
	overrides []override
	maxIDs    int

	mu    sync.Mutex
	epoch time.Time // the first request's time; the cells count from it
	// totalTAT and overrides[i].tat are theoretical arrival times in
	// nanoseconds since epoch (GCRA's TAT), as are the identity cells'.
	totalTAT int64
	ids      map[string]*idCell
	lru      idCell // sentinel of the identities, most recently used first
}

// rate is one limit: a request every interval, tolerance the burst beyond
// one (both in nanoseconds).
type rate struct {
	rps                 uint32
	interval, tolerance int64
}

func newRate(rps uint32) rate {
	if rps == 0 {
		return rate{}
	}
	// Rounded up, so the rate is never above rps.
	interval := (int64(time.Second) + int64(rps) - 1) / int64(rps)
	return rate{rps: rps, interval: interval, tolerance: int64(rps-1) * interval}
}

type override struct {
	rate
	ids *idPatterns
	tat int64 // guarded by Limiter.mu
}

// idCell is the limit of one client identity, in the LRU list.
type idCell struct {
	id         string
	tat        int64
	prev, next *idCell
}

// Limiter returns the rate limit of port's Server; nil when it has none.
func (p *Policy) Limiter(port uint16) *Limiter {
	if p == nil {
		return nil
	}
	if s, ok := p.ports[port]; ok {
		return s.limiter
	}
	return nil
}

// Name is the HTTPLocalRateLimitPolicy's name.
func (l *Limiter) Name() string { return l.msg.GetName() }

// ClientLimit is what limits the requests of one client: its Server's
// Limiter with the override that names the client, chosen once. The zero
// value limits nothing.
type ClientLimit struct {
	l        *Limiter
	id       string
	override int // index in l.overrides; -1: none names the client
}

// For returns the limits of the client that proved id ("" for none). A
// nil Limiter gives the zero ClientLimit.
func (l *Limiter) For(id string) ClientLimit {
	if l == nil {
		return ClientLimit{}
	}
	c := ClientLimit{l: l, id: id, override: -1}
	if id == "" {
		return c // an override names identities
	}
	for i := range l.overrides {
		if l.overrides[i].ids.matches(id) {
			c.override = i
			break
		}
	}
	return c
}

// Limited reports whether any limit applies.
func (c ClientLimit) Limited() bool { return c.l != nil }

// Refusal says why a request was held back.
type Refusal struct {
	// Scope is the limit that holds the client back longest.
	Scope Scope
	// RetryAfter is how long until every limit that refused would admit a
	// request of the client.
	RetryAfter time.Duration
	// RequestsPerSecond is Scope's limit.
	RequestsPerSecond uint32
}

// Admit takes a request of the client arriving at now: it returns true
// and counts it against the client's limits when every one of them admits
// it, and otherwise the refusal, counting it against none.
func (c ClientLimit) Admit(now time.Time) (Refusal, bool) {
	l := c.l
	if l == nil {
		return Refusal{}, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.epoch.IsZero() {
		l.epoch = now
	}
	t := int64(now.Sub(l.epoch))

	// The limits that apply, total first: a tie in refusals goes to the
	// more specific one, which is what the client can act on.
	var (
		tats   [2]*int64
		rates  [2]*rate
		scopes [2]Scope
		n      int
	)
	if l.total.rps > 0 {
		tats[n], rates[n], scopes[n] = &l.totalTAT, &l.total, ScopeTotal
		n++
	}
	switch {
	case c.override >= 0:
		o := &l.overrides[c.override]
		tats[n], rates[n], scopes[n] = &o.tat, &o.rate, ScopeOverride
		n++
	case l.identity.rps > 0:
		tats[n], rates[n], scopes[n] = l.identityTAT(c.id), &l.identity, ScopeIdentity
		n++
	}

	var refusal Refusal
	for i := range n {
		// GCRA: admitted unless the cell's theoretical arrival time is
		// more than the tolerance ahead of now.
		if wait := max(*tats[i], t) - rates[i].tolerance - t; wait > 0 && wait >= int64(refusal.RetryAfter) {
			refusal = Refusal{Scope: scopes[i], RetryAfter: time.Duration(wait), RequestsPerSecond: rates[i].rps}
		}
	}
	if refusal.RetryAfter > 0 {
		return refusal, false
	}
	for i := range n {
		*tats[i] = max(*tats[i], t) + rates[i].interval
	}
	return Refusal{}, true
}

// identityTAT returns the cell of id, made the most recently used; a new
// identity takes the place of the least recently used one when the map
// is full. A new cell's TAT is 0, the epoch, which admits a full burst.
// Called with mu held.
func (l *Limiter) identityTAT(id string) *int64 {
	if c, ok := l.ids[id]; ok {
		c.unlink()
		l.lru.pushFront(c)
		return &c.tat
	}
	var c *idCell
	if len(l.ids) >= l.maxIDs {
		c = l.lru.prev // the least recently used
		c.unlink()
		delete(l.ids, c.id)
		*c = idCell{}
	} else {
		c = &idCell{}
	}
	c.id = id
	l.ids[id] = c
	l.lru.pushFront(c)
	return &c.tat
}

// Identities returns how many client identities the limiter tracks.
func (l *Limiter) Identities() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ids)
}

func (c *idCell) unlink() {
	c.prev.next = c.next
	c.next.prev = c.prev
	c.prev, c.next = nil, nil
}

// pushFront puts c after the sentinel s.
func (s *idCell) pushFront(c *idCell) {
	c.prev, c.next = s, s.next
	s.next.prev = c
	s.next = c
}

// limiter compiles the rate limit of Server server, msg; nil when it sets
// no usable limit. Ports of one Server share one Limiter, and so does the
// next policy when it gives the Server the same limits.
func (c *compiler) limiter(server string, msg *inboundv1.RateLimit) *Limiter {
	if msg == nil {
		return nil
	}
	if l, ok := c.limiters[server]; ok && proto.Equal(l.msg, msg) {
		return l
	}
	if l := c.prev.serverLimiter(server); l != nil && l.maxIDs == c.maxIDs && proto.Equal(l.msg, msg) {
		c.limiters[server] = l
		return l
	}
	where := "server " + server + ": rate limit " + msg.GetName()
	l := &Limiter{
		msg:      msg,
		total:    newRate(msg.GetTotalRps()),
		identity: newRate(msg.GetIdentityRps()),
		maxIDs:   c.maxIDs,
		ids:      map[string]*idCell{},
	}
	l.lru.prev, l.lru.next = &l.lru, &l.lru
	for i, o := range msg.GetOverrides() {
		if o.GetRps() == 0 {
			c.drop("%s: override %d has no rate; it is ignored", where, i)
			continue
		}
		ids := &idPatterns{}
		for _, pat := range o.GetIdentities() {
			c.pattern(where, pat, ids)
		}
		if len(ids.exact) == 0 && len(ids.prefixes) == 0 {
			c.drop("%s: override %d matches no client; it is ignored", where, i)
			continue
		}
		ids.index()
		l.overrides = append(l.overrides, override{rate: newRate(o.GetRps()), ids: ids})
	}
	if l.total.rps == 0 && l.identity.rps == 0 && len(l.overrides) == 0 {
		c.drop("%s: sets no limit; the Server's requests are not limited", where)
		return nil
	}
	c.limiters[server] = l
	return l
}

// serverLimiter returns the Limiter of the Server named server, nil when
// none (or p is nil).
func (p *Policy) serverLimiter(server string) *Limiter {
	if p == nil {
		return nil
	}
	for _, s := range p.ports {
		if s.name == server && s.limiter != nil {
			return s.limiter
		}
	}
	return nil
}
