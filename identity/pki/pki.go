// Package pki is the mesh's identity PKI: trust domain, trust anchors and
// issuer, as `mesh install` makes them and the identity service loads them
// (DESIGN.md "Fixed contract": X.509 SVIDs under
// spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>). It also
// holds the certificate building blocks (templates, signing, PEM, checks)
// that install/certs makes the API server's serving certificates with, so
// both agree on keys, encodings and errors.
//
// Every key it generates is ECDSA P-256. Nothing here talks to a cluster:
// callers read and write the PEM this package produces.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// Sentinel errors returned (wrapped) by the validators, for errors.Is.
var (
	// ErrExpired: a certificate is outside its validity period.
	ErrExpired = errors.New("certificate is not valid at this time")
	// ErrNotCA: a certificate that must sign others is not a CA.
	ErrNotCA = errors.New("certificate is not a CA")
	// ErrKeyMismatch: a private key does not belong to its certificate.
	ErrKeyMismatch = errors.New("private key does not match the certificate")
	// ErrUntrusted: a certificate does not chain to the expected roots.
	ErrUntrusted = errors.New("certificate does not chain to a trusted root")
	// ErrTrustDomain: a certificate names another SPIFFE trust domain.
	ErrTrustDomain = errors.New("certificate belongs to another trust domain")
	// ErrNoPEM: the input holds no PEM block of the expected type.
	ErrNoPEM = errors.New("no PEM data found")
)

// backdate is subtracted from NotBefore so that nodes whose clocks run a
// little behind the machine that ran `mesh install` accept new certificates.
const backdate = 5 * time.Minute

// NewTemplate returns the fields every certificate made here shares: a
// random serial, common name cn, organization "mesh", and a validity from
// a little before now (see backdate) to now+validity.
func NewTemplate(cn string, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	// RFC 5280 4.1.2.2: positive, at most 20 octets; 128 random bits is plenty.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"mesh"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(validity),
	}, nil
}

// NewCATemplate is a CA certificate template. maxPathLenZero limits the CA
// to signing leaves only.
func NewCATemplate(cn string, now time.Time, validity time.Duration, maxPathLenZero bool) (*x509.Certificate, error) {
	t, err := NewTemplate(cn, now, validity)
	if err != nil {
		return nil, err
	}
	t.IsCA = true
	t.BasicConstraintsValid = true
	t.MaxPathLenZero = maxPathLenZero
	// X509-SVID 4.3: signing certificates set keyCertSign and may set cRLSign.
	t.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	return t, nil
}

// Sign creates a certificate from t for a new P-256 key, signed by parent
// and parentKey, or self-signed when parent is nil.
func Sign(t, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	if parent == nil {
		parent, parentKey = t, key
	}
	der, err := x509.CreateCertificate(rand.Reader, t, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign %q: %w", t.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %q: %w", t.Subject.CommonName, err)
	}
	return cert, key, nil
}

// CheckKeyPair reports whether key is the private half of cert's public key.
func CheckKeyPair(cert *x509.Certificate, key crypto.Signer) error {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return ErrKeyMismatch
	}
	return nil
}

// CheckValidity reports whether now lies in c's validity period.
func CheckValidity(c *x509.Certificate, now time.Time) error {
	switch {
	case now.After(c.NotAfter):
		return fmt.Errorf("%w: %q expired on %s", ErrExpired, c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.NotBefore):
		return fmt.Errorf("%w: %q is not valid before %s", ErrExpired, c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// CheckCA reports whether c may sign certificates.
func CheckCA(c *x509.Certificate) error {
	if !c.BasicConstraintsValid || !c.IsCA {
		return fmt.Errorf("%w: %q lacks the CA basic constraint", ErrNotCA, c.Subject.CommonName)
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%w: %q lacks the certSign key usage", ErrNotCA, c.Subject.CommonName)
	}
	return nil
}

// ExpiresWithin reports whether c expires before now+d.
func ExpiresWithin(c *x509.Certificate, now time.Time, d time.Duration) bool {
	return c.NotAfter.Before(now.Add(d))
}

// spiffeURIs returns the spiffe:// URI SANs of c.
func spiffeURIs(c *x509.Certificate) []*url.URL {
	var out []*url.URL
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			out = append(out, u)
		}
	}
	return out
}
