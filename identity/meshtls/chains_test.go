package meshtls

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/mesh-dev/mesh/identity/identitytest"
)

func TestChainCache(t *testing.T) {
	ca := identitytest.NewCA(t)
	svid := ca.IssueSVID(t, ca.ID("shop", "web"))
	certs := svid.Certificates
	now := time.Now()

	tests := []struct {
		name string
		// second verifies certs again, after a first verification at now
		// against ca's bundle.
		bundle  x509bundle.Source
		at      time.Time
		wantHit bool
		wantErr string
	}{
		{name: "same chain, same bundle", bundle: ca.Bundle(), at: now.Add(time.Minute), wantHit: true},
		{name: "the bundle has one more root", bundle: withRoot(t, ca.Bundle(), identitytest.NewCA(t).Root), at: now, wantHit: true},
		{name: "the root left the bundle", bundle: identitytest.NewCA(t).Bundle(), at: now, wantErr: "could not verify leaf certificate"},
		{name: "the leaf expired", bundle: ca.Bundle(), at: certs[0].NotAfter.Add(time.Second), wantErr: "expired"},
		{name: "before the leaf", bundle: ca.Bundle(), at: certs[0].NotBefore.Add(-time.Minute), wantErr: "not yet valid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newChainCache(8)
			id, first, err := c.verify(certs, ca.Bundle(), now)
			if err != nil || id != svid.ID {
				t.Fatalf("first verification: %v, %v", id, err)
			}
			id, second, err := c.verify(certs, tc.bundle, tc.at)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("second verification = %v, %v; want an error saying %q", id, err, tc.wantErr)
				}
				if len(c.verified) != 0 {
					t.Errorf("the chain is still remembered after it failed")
				}
				return
			}
			if err != nil || id != svid.ID {
				t.Fatalf("second verification: %v, %v", id, err)
			}
			// A hit returns the chains of the first verification.
			if hit := &first[0][0] == &second[0][0]; hit != tc.wantHit {
				t.Errorf("answered from the cache: %v, want %v", hit, tc.wantHit)
			}
		})
	}
}

// withRoot is b with root as one more authority.
func withRoot(t *testing.T, b *x509bundle.Bundle, root *x509.Certificate) *x509bundle.Bundle {
	t.Helper()
	out := b.Clone()
	out.AddX509Authority(root)
	return out
}

// TestChainCacheKeepsNoFailure: a chain that failed is verified again the
// next time, so a bundle that gains its root admits it at once.
func TestChainCacheKeepsNoFailure(t *testing.T) {
	ca, other := identitytest.NewCA(t), identitytest.NewCA(t)
	certs := ca.IssueSVID(t, ca.ID("shop", "web")).Certificates
	c := newChainCache(8)
	if _, _, err := c.verify(certs, other.Bundle(), time.Now()); err == nil {
		t.Fatal("a chain of another root verified")
	}
	if len(c.verified) != 0 {
		t.Errorf("%d chains remembered after a failure, want none", len(c.verified))
	}
	if _, _, err := c.verify(certs, withRoot(t, other.Bundle(), ca.Root), time.Now()); err != nil {
		t.Errorf("once the bundle has the root: %v", err)
	}
}

func TestChainCacheIsBounded(t *testing.T) {
	ca := identitytest.NewCA(t)
	c := newChainCache(2)
	for i := range 5 {
		certs := ca.IssueSVID(t, ca.ID("shop", "web")).Certificates
		if _, _, err := c.verify(certs, ca.Bundle(), time.Now()); err != nil {
			t.Fatalf("chain %d: %v", i, err)
		}
		if len(c.verified) > 2 {
			t.Fatalf("after %d chains: %d remembered, want at most 2", i+1, len(c.verified))
		}
	}
}

func TestChainKey(t *testing.T) {
	ca := identitytest.NewCA(t)
	a := ca.IssueSVID(t, ca.ID("shop", "web")).Certificates
	b := ca.IssueSVID(t, ca.ID("shop", "web")).Certificates
	if chainKey(a) == chainKey(b) {
		t.Error("two certificates of the same ID share a key")
	}
	if chainKey(a) != chainKey(append([]*x509.Certificate(nil), a...)) {
		t.Error("the same chain has two keys")
	}
	if chainKey(a[:1]) == chainKey(a) {
		t.Error("a chain and its leaf alone share a key")
	}
}
