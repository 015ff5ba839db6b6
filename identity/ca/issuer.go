package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mesh-dev/mesh/identity/pki"
)

// Backdate is how far before the moment of signing a leaf's NotBefore lies,
// so that a peer whose clock runs a little behind the controller's accepts
// a certificate at once.
const Backdate = time.Minute

// DefaultLifetime is how long a leaf is valid when no lifetime is given.
// Proxies renew well before it ends, so a day bounds how long a stolen key
// is useful without making the controller a hard dependency for long.
const DefaultLifetime = 24 * time.Hour

// Errors of Issuer.Sign, for errors.Is.
var (
	// ErrIssuerExpired: the issuer is not valid now, so any leaf it signed
	// would be refused by every peer.
	ErrIssuerExpired = errors.New("issuer certificate is not valid now")
	// ErrForeignID: the ID asked for is not in the issuer's trust domain.
	ErrForeignID = errors.New("SPIFFE ID is not in the issuer's trust domain")
)

// Issuer is an immutable snapshot of the identity PKI that signs leaves:
// the issuer certificate and key, the intermediates above it, and the trust
// bundle. It is safe for concurrent use.
type Issuer struct {
	td     spiffeid.TrustDomain
	chain  []*x509.Certificate // issuer first, no trust anchor
	key    crypto.Signer
	bundle *x509bundle.Bundle
	// notAfter is the earliest NotAfter in chain: a leaf valid past it
	// would fail verification before its own expiry.
	notAfter time.Time
}

// NewIssuer checks id with pki.Identity.Validate at now and returns the
// Issuer it describes. Trust anchors found in the issuer chain (a tls.crt
// holding the whole chain up to the root) are dropped from it, since a
// chain sent to peers stops below the anchor.
func NewIssuer(id *pki.Identity, now time.Time) (*Issuer, error) {
	if id.TrustDomain.IsZero() {
		return nil, errors.New("issuer: empty trust domain")
	}
	if err := id.Validate(now); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	bundle := x509bundle.FromX509Authorities(id.TrustDomain, id.TrustAnchors)
	var chain []*x509.Certificate
	for _, c := range id.IssuerChain {
		if !bundle.HasX509Authority(c) {
			chain = append(chain, c)
		}
	}
	if len(chain) == 0 {
		return nil, errors.New("issuer: the issuer certificate is a trust anchor; sign workloads with an intermediate")
	}
	notAfter := chain[0].NotAfter
	for _, c := range chain[1:] {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	return &Issuer{td: id.TrustDomain, chain: chain, key: id.IssuerKey, bundle: bundle, notAfter: notAfter}, nil
}

// TrustDomain returns the trust domain the issuer signs IDs of.
func (i *Issuer) TrustDomain() spiffeid.TrustDomain { return i.td }

// Certificate returns the issuer certificate.
func (i *Issuer) Certificate() *x509.Certificate { return i.chain[0] }

// Chain returns the issuer certificate followed by any intermediates up to,
// not including, a trust anchor. The caller must not modify it.
func (i *Issuer) Chain() []*x509.Certificate { return i.chain }

// Bundle returns a copy of the trust bundle.
func (i *Issuer) Bundle() *x509bundle.Bundle { return i.bundle.Clone() }

// NotAfter returns the moment the first certificate of the chain expires;
// no leaf is valid beyond it.
func (i *Issuer) NotAfter() time.Time { return i.notAfter }

// Leaf is a signed X509-SVID without its private key, which only the
// requester holds.
type Leaf struct {
	ID          spiffeid.ID
	Certificate *x509.Certificate
	// Intermediates is the chain from the leaf's issuer up to, not
	// including, a trust anchor.
	Intermediates []*x509.Certificate
	// Bundle is the trust bundle the leaf was verified against.
	Bundle *x509bundle.Bundle
}

// Sign certifies pub as id for lifetime (DefaultLifetime when 0) from now,
// following X509-SVID 4: not a CA, one URI SAN, digitalSignature key
// usage, serverAuth and clientAuth extended key usages, a random 128-bit
// serial. NotBefore is now-Backdate and NotAfter never passes the issuer
// chain's. The result is verified with go-spiffe before it is returned, so
// a bad issuer shows up here and not at a peer's handshake.
func (i *Issuer) Sign(pub crypto.PublicKey, id spiffeid.ID, now time.Time, lifetime time.Duration) (*Leaf, error) {
	if !id.MemberOf(i.td) {
		return nil, fmt.Errorf("sign %q: %w %q", id, ErrForeignID, i.td.Name())
	}
	if !isP256(pub) {
		return nil, fmt.Errorf("sign %q: %w", id, ErrCSRKey)
	}
	if now.Before(i.chain[0].NotBefore) || !now.Before(i.notAfter) {
		return nil, fmt.Errorf("sign %q: %w: the chain is valid from %s until %s", id, ErrIssuerExpired,
			i.chain[0].NotBefore.UTC().Format(time.RFC3339), i.notAfter.UTC().Format(time.RFC3339))
	}
	if lifetime <= 0 {
		lifetime = DefaultLifetime
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(i.notAfter) {
		notAfter = i.notAfter
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("sign %q: %w", id, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The subject stays empty: the ID is the whole identity, and with
		// an empty subject the SAN extension is marked critical as RFC
		// 5280 4.2.1.6 asks.
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.chain[0], pub, i.key)
	if err != nil {
		return nil, fmt.Errorf("sign %q: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("sign %q: parse the new leaf: %w", id, err)
	}
	if err := i.verify(leaf, id, now); err != nil {
		return nil, fmt.Errorf("sign %q: %w", id, err)
	}
	return &Leaf{ID: id, Certificate: leaf, Intermediates: i.chain, Bundle: i.bundle.Clone()}, nil
}

// verify checks leaf as any SPIFFE peer would, at now.
func (i *Issuer) verify(leaf *x509.Certificate, want spiffeid.ID, now time.Time) error {
	certs := append([]*x509.Certificate{leaf}, i.chain...)
	got, _, err := x509svid.Verify(certs, x509bundle.NewSet(i.bundle), x509svid.WithTime(now))
	if err != nil {
		return fmt.Errorf("the new leaf does not verify: %w", err)
	}
	if got != want {
		return fmt.Errorf("the new leaf names %q", got)
	}
	return nil
}

// randomSerial returns a positive serial of 128 random bits, RFC 5280
// 4.1.2.2, unpredictable so that it cannot be used to craft collisions.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// isP256 reports whether pub is an ECDSA P-256 key.
func isP256(pub crypto.PublicKey) bool {
	k, ok := pub.(*ecdsa.PublicKey)
	return ok && k.Curve == elliptic.P256()
}
