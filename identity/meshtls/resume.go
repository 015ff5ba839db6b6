package meshtls

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Session resumption. A full mesh TLS handshake costs each side a
// signature and the verification of the other's signature, on top of the
// key exchange and the chain verification; a resumed one (TLS 1.3 PSK
// with (EC)DHE key exchange, RFC 8446 §2.2) skips both signatures and
// keeps forward secrecy, at the same chain verification and authorization
// as a full one (verifyPeer).

// SessionCache keeps the sessions of a proxy's outbound mesh TLS
// connections, so that the next connection to a server resumes. It is
// safe for concurrent use; one serves all of a proxy's connections.
type SessionCache struct {
	lru    tls.ClientSessionCache
	chains *chainCache // of the servers, shared by the configs of every connection
}

// NewSessionCache returns a cache of the last session with each of at most
// capacity servers, the least recently used dropped first.
func NewSessionCache(capacity int) *SessionCache {
	return &SessionCache{lru: tls.NewLRUClientSessionCache(capacity), chains: newChainCache(chainCacheSize)}
}

// ClientConfig is ClientConfig that resumes the sessions kept in c, and
// does not verify again a server chain that verified before. Sessions
// are kept by the server's expected identity as well as its address, so a
// session is only ever offered where that same identity is expected: an
// endpoint that changed hands (a new pod on the address, another identity)
// gets a full handshake, not a resumption that would fail.
func (c *SessionCache) ClientConfig(svid x509svid.Source, bundle x509bundle.Source, server spiffeid.ID) *tls.Config {
	cfg := ClientConfig(svid, bundle, server)
	cfg.ClientSessionCache = peerSessions{id: server.String(), lru: c.lru}
	cfg.VerifyConnection = verifyPeer(bundle, authorizeID(server), c.chains)
	return cfg
}

// peerSessions is the SessionCache of connections that expect the server
// id. crypto/tls's own key is the server's address, since the config
// names no server.
type peerSessions struct {
	id  string
	lru tls.ClientSessionCache
}

func (p peerSessions) key(addr string) string { return p.id + " " + addr }

func (p peerSessions) Get(addr string) (*tls.ClientSessionState, bool) {
	return p.lru.Get(p.key(addr))
}

func (p peerSessions) Put(addr string, cs *tls.ClientSessionState) {
	p.lru.Put(p.key(addr), cs)
}

// TicketKeyPeriod is how often a proxy's inbound side takes a new session
// ticket key (TicketKeys): a session resumes for at most two periods
// after its ticket was issued, and a ticket key that leaked opens no
// session older than that.
const TicketKeyPeriod = time.Hour

// TicketKeys rotates the session ticket keys of a server config: new
// tickets are sealed with the current key, and the one before stays
// accepted for one more period, so a ticket issued just before a rotation
// still resumes. Without it, crypto/tls takes a new key every day and
// accepts each for a week.
type TicketKeys struct {
	cfg *tls.Config
	// prev and cur are touched only by Rotate, called from one
	// goroutine.
	prev, cur [32]byte
}

// NewTicketKeys gives cfg its first session ticket key.
func NewTicketKeys(cfg *tls.Config) *TicketKeys {
	k := &TicketKeys{cfg: cfg}
	rand.Read(k.cur[:]) // never fails (crypto/rand)
	cfg.SetSessionTicketKeys([][32]byte{k.cur})
	return k
}

// Rotate seals new tickets with a fresh key and drops the key before the
// current one: tickets sealed with it get a full handshake.
func (k *TicketKeys) Rotate() {
	k.prev = k.cur
	rand.Read(k.cur[:])
	k.cfg.SetSessionTicketKeys([][32]byte{k.cur, k.prev})
}

// Run rotates the keys every period until ctx ends, and returns ctx's
// error.
func (k *TicketKeys) Run(ctx context.Context, period time.Duration) error {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			k.Rotate()
		}
	}
}
