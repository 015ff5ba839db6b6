package detect

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"github.com/mesh-dev/mesh/internal/ports"
)

// DefaultOpaquePorts are forwarded as TCP without waiting for the client:
// the server speaks first on them (a client would wait for the greeting
// while the proxy waited for the client), or the protocol is binary and
// never HTTP, so detection would only add latency.
//
//	21 FTP, 22 SSH, 25 and 587 SMTP, 110 POP3, 143 IMAP: server greeting
//	3306 MySQL, 4222 NATS, 4444 Galera, 11211 memcached: server first/binary
//	5432 PostgreSQL, 6379 Redis, 9300 Elasticsearch transport, 27017 MongoDB:
//	binary protocols Linkerd also marks opaque by default
var DefaultOpaquePorts = ports.MustParse("21,22,25,110,143,587,3306,4222,4444,5432,6379,9300,11211,27017")

// OpaqueCache remembers destinations whose clients stayed silent past the
// detect timeout, so later connections to them skip detection. It is an LRU
// of bounded size whose entries expire; safe for concurrent use (mu guards
// entries and order).
type OpaqueCache struct {
	size int
	ttl  time.Duration
	now  func() time.Time // time.Now, or a fake clock in tests

	mu      sync.Mutex
	entries map[netip.AddrPort]*list.Element
	order   *list.List // of *cacheEntry, most recently remembered first
}

type cacheEntry struct {
	dst     netip.AddrPort
	expires time.Time
}

// NewOpaqueCache holds at most size destinations, each for ttl.
func NewOpaqueCache(size int, ttl time.Duration) *OpaqueCache {
	return &OpaqueCache{size: max(size, 1), ttl: ttl, now: time.Now,
		entries: map[netip.AddrPort]*list.Element{}, order: list.New()}
}

// Remember marks dst as server-speaks-first for the cache's ttl.
func (c *OpaqueCache) Remember(dst netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp := c.now().Add(c.ttl)
	if e, ok := c.entries[dst]; ok {
		e.Value.(*cacheEntry).expires = exp
		c.order.MoveToFront(e)
		return
	}
	c.entries[dst] = c.order.PushFront(&cacheEntry{dst: dst, expires: exp})
	for c.order.Len() > c.size {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.entries, oldest.Value.(*cacheEntry).dst)
	}
}

// Contains reports whether dst was remembered and has not expired.
func (c *OpaqueCache) Contains(dst netip.AddrPort) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[dst]
	if !ok {
		return false
	}
	if c.now().After(e.Value.(*cacheEntry).expires) {
		c.order.Remove(e)
		delete(c.entries, dst)
		return false
	}
	return true
}
