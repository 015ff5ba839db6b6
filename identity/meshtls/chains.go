package meshtls

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// chainCache remembers the certificate chains that verified as
// X509-SVIDs, so that the next handshake presenting the same chain skips
// its signature checks: every resumed handshake (its chain is the
// session's), and every full one of a peer that has not renewed its
// certificate since. Those checks are the larger part of a resumed
// handshake's CPU (BenchmarkHandshake).
//
// A chain is known by the SHA-256 of its certificates' bytes, on which all
// that x509svid.Verify checks depends, except two things that change with
// time and are checked again on every hit: that each certificate of the
// chain is valid now, and that the chain's root is still an authority of
// the current bundle for the peer's trust domain. A chain that failed is
// not remembered. Safe for concurrent use.
type chainCache struct {
	capacity int
	mu       sync.Mutex
	verified map[[sha256.Size]byte]*verifiedChain // guarded by mu
}

// verifiedChain is what x509svid.Verify found of a chain.
type verifiedChain struct {
	id     spiffeid.ID
	chains [][]*x509.Certificate
	// notBefore and notAfter bound the time every certificate of chains
	// is valid.
	notBefore, notAfter time.Time
}

// chainCacheSize bounds a chainCache: the chains of a proxy's peers (a few
// KB each, shared with their sessions); past it, a peer's handshake may
// verify its chain again.
const chainCacheSize = 256

func newChainCache(capacity int) *chainCache {
	return &chainCache{capacity: capacity, verified: map[[sha256.Size]byte]*verifiedChain{}}
}

// verify is x509svid.Verify(certs, bundle), answered from the cache when
// certs verified before and still would.
func (c *chainCache) verify(certs []*x509.Certificate, bundle x509bundle.Source, now time.Time) (spiffeid.ID, [][]*x509.Certificate, error) {
	key := chainKey(certs)
	c.mu.Lock()
	v := c.verified[key]
	c.mu.Unlock()
	if v != nil && v.stillValid(bundle, now) {
		return v.id, v.chains, nil
	}
	id, chains, err := x509svid.Verify(certs, bundle, x509svid.WithTime(now))
	if err != nil {
		if v != nil {
			c.mu.Lock()
			delete(c.verified, key) // expired, or its root left the bundle
			c.mu.Unlock()
		}
		return id, chains, err
	}
	v = &verifiedChain{id: id, chains: chains}
	for _, chain := range chains {
		for _, cert := range chain {
			if v.notBefore.IsZero() || cert.NotBefore.After(v.notBefore) {
				v.notBefore = cert.NotBefore
			}
			if v.notAfter.IsZero() || cert.NotAfter.Before(v.notAfter) {
				v.notAfter = cert.NotAfter
			}
		}
	}
	c.mu.Lock()
	if len(c.verified) >= c.capacity {
		// Any one: chains of peers that went away, or expired, are as
		// likely as any to be the one dropped, and a live one only costs
		// its next handshake a full verification.
		for k := range c.verified {
			delete(c.verified, k)
			break
		}
	}
	c.verified[key] = v
	c.mu.Unlock()
	return id, chains, nil
}

// stillValid reports whether the chain verified before would verify now
// against bundle: its certificates are all valid at now, and the root of
// one of its chains is an authority of bundle.
func (v *verifiedChain) stillValid(bundle x509bundle.Source, now time.Time) bool {
	if now.Before(v.notBefore) || now.After(v.notAfter) {
		return false
	}
	b, err := bundle.GetX509BundleForTrustDomain(v.id.TrustDomain())
	if err != nil {
		return false
	}
	for _, chain := range v.chains {
		if b.HasX509Authority(chain[len(chain)-1]) {
			return true
		}
	}
	return false
}

// chainKey is the SHA-256 of certs' DER bytes, each preceded by its
// length so that no two chains share a key by splitting differently.
func chainKey(certs []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, c := range certs {
		binary.BigEndian.PutUint32(n[:], uint32(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}
