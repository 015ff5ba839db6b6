package dnsresolve

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Resolver looks up host names with a TTL-honouring cache. It is safe for
// concurrent use and owns no goroutines between lookups, so it needs no
// Close.
type Resolver struct {
	cfg settings
	udp *dns.Client
	tcp *dns.Client

	mu      sync.Mutex
	cache   map[string]cacheEntry // guarded by mu; keyed by normalized name
	flights map[string]*flight    // guarded by mu; lookups in progress
}

// cacheEntry is one cached answer: addresses, or the ErrNotFound error of a
// negative answer.
type cacheEntry struct {
	addrs   []netip.Addr
	err     error
	expires time.Time
}

// flight is one lookup in progress that concurrent callers wait for. Its
// result fields are written before done is closed and only read after.
type flight struct {
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int // guarded by Resolver.mu

	addrs []netip.Addr
	ttl   time.Duration
	err   error
}

// result is what one resolution step yields. ttl is the raw TTL of the
// records (or of the SOA for a negative answer) before clamping.
type result struct {
	addrs []netip.Addr
	ttl   time.Duration
	err   error
}

// New returns a Resolver for cfg. With no Servers it reads resolv.conf, and
// fails if that cannot be read.
func New(cfg Config) (*Resolver, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	// EDNS0 with a 1232-octet buffer (RFC 6891, the 2020 DNS flag day
	// value) makes truncation rare without risking IP fragmentation.
	const udpSize = 1232
	return &Resolver{
		cfg:     s,
		udp:     &dns.Client{Net: "udp", Timeout: s.timeout, UDPSize: udpSize},
		tcp:     &dns.Client{Net: "tcp", Timeout: s.timeout},
		cache:   make(map[string]cacheEntry),
		flights: make(map[string]*flight),
	}, nil
}

// LookupHost returns the IPv4 and IPv6 addresses of name and how long they
// stay valid: the remaining time of the cached answer, which is the
// smallest TTL along its CNAME chain clamped to [MinTTL, MaxTTL]. IPv4
// addresses come first, each family in the order of the answer.
//
// An IP literal is returned as is with a ttl of 0, meaning it never
// expires; a name always has a positive ttl. A name that does not exist
// fails with an *Error wrapping ErrNotFound, and ttl then says how long that
// answer is cached. Lookups of one name share one query while it is in
// flight; a caller whose ctx ends stops waiting, and the query stops once
// no caller waits for it.
func (r *Resolver) LookupHost(ctx context.Context, name string) (addrs []netip.Addr, ttl time.Duration, err error) {
	return r.lookup(ctx, name, false)
}

// lookup is LookupHost; fresh skips the cache, for when the caller knows
// the cached addresses no longer work.
func (r *Resolver) lookup(ctx context.Context, name string, fresh bool) ([]netip.Addr, time.Duration, error) {
	if addr, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{addr}, 0, nil
	}
	key, err := normalizeName(name)
	if err != nil {
		return nil, 0, &Error{Name: name, Rcode: NoResponse, Err: err}
	}
	if !fresh {
		if addrs, ttl, err, ok := r.cached(key); ok {
			return addrs, ttl, err
		}
	}
	return r.join(ctx, name, key)
}

// cached returns the cache entry for key if it has not expired.
func (r *Resolver) cached(key string) ([]netip.Addr, time.Duration, error, bool) {
	now := r.cfg.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[key]
	if !ok {
		return nil, 0, nil, false
	}
	if !now.Before(e.expires) {
		delete(r.cache, key)
		return nil, 0, nil, false
	}
	return slices.Clone(e.addrs), e.expires.Sub(now), e.err, true
}

// join waits for the lookup of key in flight, starting one if there is
// none.
func (r *Resolver) join(ctx context.Context, name, key string) ([]netip.Addr, time.Duration, error) {
	r.mu.Lock()
	f, ok := r.flights[key]
	if !ok {
		// The query outlives the caller that started it when others wait
		// too, so it runs on a context of its own, cancelled when the last
		// waiter leaves.
		qctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel}
		r.flights[key] = f
		go r.fly(qctx, name, key, f)
	}
	f.waiters++
	r.mu.Unlock()

	select {
	case <-f.done:
		return slices.Clone(f.addrs), f.ttl, f.err
	case <-ctx.Done():
		r.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
			if r.flights[key] == f {
				delete(r.flights, key)
			}
		}
		r.mu.Unlock()
		return nil, 0, &Error{Name: name, Rcode: NoResponse, Err: ctx.Err()}
	}
}

// fly runs the lookup of one flight and publishes its result.
func (r *Resolver) fly(ctx context.Context, name, key string, f *flight) {
	defer f.cancel()
	res := r.resolve(ctx, name, key)
	now := r.cfg.now()

	r.mu.Lock()
	if r.flights[key] == f {
		delete(r.flights, key)
	}
	// Answers are cached, positive or negative; failures to get one are
	// not, so the next lookup tries again.
	if res.err == nil || errors.Is(res.err, ErrNotFound) {
		r.store(key, cacheEntry{addrs: res.addrs, err: res.err, expires: now.Add(res.ttl)}, now)
	} else {
		res.ttl = 0
	}
	r.mu.Unlock()

	f.addrs, f.ttl, f.err = res.addrs, res.ttl, res.err
	close(f.done)
}

// store adds an entry, first making room by dropping expired entries and
// then arbitrary ones. Called with mu held.
func (r *Resolver) store(key string, e cacheEntry, now time.Time) {
	if _, ok := r.cache[key]; !ok && len(r.cache) >= r.cfg.cacheSize {
		for k, old := range r.cache {
			if !now.Before(old.expires) {
				delete(r.cache, k)
			}
		}
		for k := range r.cache {
			if len(r.cache) < r.cfg.cacheSize {
				break
			}
			delete(r.cache, k)
		}
	}
	r.cache[key] = e
}

// resolve tries the search list candidates of key in order and returns the
// first that has addresses, with its TTL clamped for caching.
func (r *Resolver) resolve(ctx context.Context, name, key string) result {
	var notFound, failed *Error
	negTTL := time.Duration(-1)
	for _, fqdn := range searchNames(key, r.cfg.search, r.cfg.ndots) {
		res := r.resolveFQDN(ctx, fqdn)
		if res.err == nil {
			res.ttl = min(max(res.ttl, r.cfg.minTTL), r.cfg.maxTTL)
			return res
		}
		var e *Error
		if !errors.As(res.err, &e) {
			return res
		}
		e.Name = name
		switch {
		case errors.Is(e, ErrNotFound):
			// Go on with the next candidate, like the libc resolver; the
			// name as a whole is cached for the shortest negative TTL.
			notFound = e
			if negTTL < 0 || res.ttl < negTTL {
				negTTL = res.ttl
			}
		case errors.Is(e, ErrServerMisbehaving):
			if failed == nil {
				failed = e
			}
		default:
			// No server could be reached, or ctx ended: the other
			// candidates would go to the same servers.
			return res
		}
	}
	if failed != nil {
		// Some candidate might exist, so this is no proof that the name
		// does not.
		return result{err: failed}
	}
	return result{err: notFound, ttl: min(max(negTTL, r.cfg.minTTL), r.cfg.negativeTTL)}
}

// resolveFQDN asks for the A and AAAA records of one fully qualified name
// in parallel and merges the answers.
func (r *Resolver) resolveFQDN(ctx context.Context, fqdn string) result {
	var v4, v6 result
	var wg sync.WaitGroup
	wg.Go(func() { v4 = r.query(ctx, fqdn, dns.TypeA) })
	wg.Go(func() { v6 = r.query(ctx, fqdn, dns.TypeAAAA) })
	wg.Wait()
	return merge(v4, v6)
}

// merge combines the A and AAAA answers for one name. Addresses of either
// family make a success; if the other family failed rather than being
// absent, the TTL drops to zero (so to MinTTL) to ask again soon.
func merge(v4, v6 result) result {
	switch {
	case v4.err == nil && v6.err == nil:
		return result{addrs: slices.Concat(v4.addrs, v6.addrs), ttl: min(v4.ttl, v6.ttl)}
	case v4.err == nil:
		return partial(v4, v6)
	case v6.err == nil:
		return partial(v6, v4)
	case errors.Is(v4.err, ErrNotFound) && errors.Is(v6.err, ErrNotFound):
		return result{err: v4.err, ttl: min(v4.ttl, v6.ttl)}
	case !errors.Is(v4.err, ErrNotFound):
		return v4
	default:
		return v6
	}
}

func partial(ok, other result) result {
	if !errors.Is(other.err, ErrNotFound) {
		ok.ttl = 0
	}
	return ok
}
