package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Validity periods of the identity certificates `mesh install` generates.
// The trust anchor outlives many issuers; the issuer is replaced yearly by
// re-running install with new files, or regenerated with a new anchor when
// it has expired.
const (
	TrustAnchorValidity = 10 * 365 * 24 * time.Hour
	IssuerValidity      = 365 * 24 * time.Hour
)

// DefaultTrustDomain is the SPIFFE trust domain of a mesh installed without
// --identity-trust-domain (DESIGN.md).
const DefaultTrustDomain = "cluster.local"

// ParseTrustDomain validates a trust domain name such as "cluster.local"
// against the SPIFFE ID specification (lower-case letters, digits, '.', '-'
// and '_'). A full SPIFFE ID is refused so that a typo like
// "spiffe://cluster.local/ns" is not silently cut down to its host.
func ParseTrustDomain(name string) (spiffeid.TrustDomain, error) {
	if strings.Contains(name, "://") {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: give the name alone, like %q, not a SPIFFE ID", name, DefaultTrustDomain)
	}
	td, err := spiffeid.TrustDomainFromString(name)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: %w", name, err)
	}
	return td, nil
}

// Identity is the mesh's identity PKI: the trust anchors every proxy
// verifies peers against and the issuer CA the controller signs workload
// certificates with.
type Identity struct {
	// TrustDomain is the SPIFFE trust domain workload IDs live in.
	TrustDomain spiffeid.TrustDomain
	// TrustAnchors are the root certificates; more than one while a root is
	// being rotated.
	TrustAnchors []*x509.Certificate
	// IssuerChain is the issuer certificate followed by the intermediates,
	// if any, between it and a trust anchor.
	IssuerChain []*x509.Certificate
	// IssuerKey is the private key of IssuerChain[0].
	IssuerKey crypto.Signer
}

// NewIdentity generates a self-signed trust anchor valid for
// TrustAnchorValidity and an issuer CA signed by it valid for
// IssuerValidity. Both carry the trust domain's SPIFFE ID as URI SAN, the
// way SPIRE's CAs do. The anchor's private key is not returned: nothing in
// the cluster needs it, and a later issuer comes from the user's own PKI.
func NewIdentity(td spiffeid.TrustDomain, now time.Time) (*Identity, error) {
	if td.IsZero() {
		return nil, errors.New("new identity: empty trust domain")
	}
	tdURI := td.ID().URL()
	rootT, err := NewCATemplate("root.identity.mesh."+td.Name(), now, TrustAnchorValidity, false)
	if err != nil {
		return nil, err
	}
	rootT.URIs = []*url.URL{tdURI}
	root, rootKey, err := Sign(rootT, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("trust anchor: %w", err)
	}
	issuerT, err := NewCATemplate("issuer.identity.mesh."+td.Name(), now, IssuerValidity, true)
	if err != nil {
		return nil, err
	}
	issuerT.URIs = []*url.URL{tdURI}
	issuer, issuerKey, err := Sign(issuerT, root, rootKey)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return &Identity{
		TrustDomain:  td,
		TrustAnchors: []*x509.Certificate{root},
		IssuerChain:  []*x509.Certificate{issuer},
		IssuerKey:    issuerKey,
	}, nil
}

// ParseIdentity parses PEM-encoded trust anchors, issuer certificate (with
// any intermediates after it) and issuer key. It only parses: call Validate
// before using the result.
func ParseIdentity(td spiffeid.TrustDomain, anchorsPEM, issuerCertPEM, issuerKeyPEM []byte) (*Identity, error) {
	anchors, err := ParseCerts(anchorsPEM)
	if err != nil {
		return nil, fmt.Errorf("trust anchors: %w", err)
	}
	chain, err := ParseCerts(issuerCertPEM)
	if err != nil {
		return nil, fmt.Errorf("issuer certificate: %w", err)
	}
	key, err := ParseKey(issuerKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	return &Identity{TrustDomain: td, TrustAnchors: anchors, IssuerChain: chain, IssuerKey: key}, nil
}

// Issuer returns the issuer certificate.
func (id *Identity) Issuer() *x509.Certificate { return id.IssuerChain[0] }

// Validate checks that the identity PKI can issue certificates at now:
// every trust anchor is a CA in its validity period, the issuer is a CA in
// its validity period whose key matches it and which chains to a trust
// anchor, and no certificate names another trust domain in a spiffe:// URI
// SAN. Errors wrap ErrExpired, ErrNotCA, ErrKeyMismatch, ErrUntrusted or
// ErrTrustDomain.
func (id *Identity) Validate(now time.Time) error {
	if len(id.TrustAnchors) == 0 {
		return errors.New("no trust anchors")
	}
	if len(id.IssuerChain) == 0 || id.IssuerKey == nil {
		return errors.New("no issuer certificate and key")
	}
	roots := x509.NewCertPool()
	for i, a := range id.TrustAnchors {
		if err := id.checkSigner(a, now); err != nil {
			return fmt.Errorf("trust anchor %d: %w", i+1, err)
		}
		roots.AddCert(a)
	}
	issuer := id.Issuer()
	if err := id.checkSigner(issuer, now); err != nil {
		return fmt.Errorf("issuer certificate: %w", err)
	}
	if err := CheckKeyPair(issuer, id.IssuerKey); err != nil {
		return fmt.Errorf("issuer key: %w", err)
	}
	inter := x509.NewCertPool()
	for _, c := range id.IssuerChain[1:] {
		inter.AddCert(c)
	}
	_, err := issuer.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("issuer certificate: %w: %v", ErrUntrusted, err)
	}
	return nil
}

// checkSigner checks one CA certificate of the identity PKI.
func (id *Identity) checkSigner(c *x509.Certificate, now time.Time) error {
	if err := CheckCA(c); err != nil {
		return err
	}
	if err := CheckValidity(c, now); err != nil {
		return err
	}
	for _, u := range spiffeURIs(c) {
		td, err := spiffeid.TrustDomainFromURI(u)
		if err != nil {
			return fmt.Errorf("%w: URI SAN %q: %v", ErrTrustDomain, u, err)
		}
		if td != id.TrustDomain {
			return fmt.Errorf("%w: %q names %q, want %q", ErrTrustDomain, c.Subject.CommonName, td.Name(), id.TrustDomain.Name())
		}
	}
	return nil
}

// TrustAnchorsPEM returns the trust bundle as PEM.
func (id *Identity) TrustAnchorsPEM() []byte { return EncodeCerts(id.TrustAnchors...) }

// IssuerCertPEM returns the issuer certificate and its intermediates as PEM.
func (id *Identity) IssuerCertPEM() []byte { return EncodeCerts(id.IssuerChain...) }

// IssuerKeyPEM returns the issuer's private key as PEM.
func (id *Identity) IssuerKeyPEM() ([]byte, error) { return EncodeKey(id.IssuerKey) }
