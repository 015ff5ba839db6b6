// Package identitytest makes throwaway identity PKIs for tests: a trust
// anchor and an issuer per test, written in the layout kubelet gives the
// mesh-identity-issuer Secret, and SVIDs signed by them.
package identitytest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mesh-dev/mesh/identity/ca"
	"github.com/mesh-dev/mesh/identity/pki"
)

// Defaults of NewCA.
const (
	DefaultTrustDomain    = pki.DefaultTrustDomain
	DefaultIssuerValidity = 30 * 24 * time.Hour
	rootValidity          = 365 * 24 * time.Hour
	// backdate lets a test pin its clock a little in the past.
	backdate = time.Hour
)

// CA is a trust anchor and an issuer signed by it. Its fields are for
// inspection; change the PKI with the methods.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Root        *x509.Certificate
	Issuer      *x509.Certificate
	IssuerKey   crypto.Signer

	rootKey crypto.Signer
	opts    options
}

type options struct {
	td             spiffeid.TrustDomain
	issuerValidity time.Duration
	now            time.Time
}

// Option changes what NewCA and RotateIssuer make.
type Option func(*options)

// WithTrustDomain sets the trust domain; it must be a valid name.
func WithTrustDomain(name string) Option {
	return func(o *options) { o.td = spiffeid.RequireTrustDomainFromString(name) }
}

// WithIssuerValidity sets how long the issuer is valid from now, to test
// leaves that would outlive it.
func WithIssuerValidity(d time.Duration) Option {
	return func(o *options) { o.issuerValidity = d }
}

// WithNow sets the moment the certificates are made at.
func WithNow(now time.Time) Option {
	return func(o *options) { o.now = now }
}

func newOptions(opts []Option) options {
	o := options{
		td:             spiffeid.RequireTrustDomainFromString(DefaultTrustDomain),
		issuerValidity: DefaultIssuerValidity,
		now:            time.Now(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// NewCA makes a new trust anchor and an issuer signed by it, both P-256
// CAs carrying the trust domain's ID like those `mesh install` makes.
func NewCA(t testing.TB, opts ...Option) *CA {
	t.Helper()
	o := newOptions(opts)
	root := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "root.identitytest." + o.td.Name()},
		NotBefore:             o.now.Add(-backdate),
		NotAfter:              o.now.Add(rootValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{o.td.ID().URL()},
	}
	rootCert, rootKey := sign(t, root, nil, nil)
	c := &CA{TrustDomain: o.td, Root: rootCert, rootKey: rootKey, opts: o}
	c.Issuer, c.IssuerKey = c.newIssuer(t, o)
	return c
}

// RotateIssuer returns a copy of c with a new issuer under the same trust
// anchor, as an operator rotating the issuer would make. Options other than
// the trust domain apply to the new issuer.
func (c *CA) RotateIssuer(t testing.TB, opts ...Option) *CA {
	t.Helper()
	o := c.opts
	o.now = time.Now()
	for _, opt := range opts {
		opt(&o)
	}
	o.td = c.TrustDomain
	n := *c
	n.opts = o
	n.Issuer, n.IssuerKey = c.newIssuer(t, o)
	return &n
}

func (c *CA) newIssuer(t testing.TB, o options) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "issuer.identitytest." + o.td.Name()},
		NotBefore:             o.now.Add(-backdate),
		NotAfter:              o.now.Add(o.issuerValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{o.td.ID().URL()},
	}
	return sign(t, tmpl, c.Root, c.rootKey)
}

// sign makes a certificate from tmpl for a new P-256 key, self-signed when
// parent is nil.
func sign(t testing.TB, tmpl, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("identitytest: generate key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatalf("identitytest: serial: %v", err)
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1))
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatalf("identitytest: sign %s: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("identitytest: parse %s: %v", tmpl.Subject.CommonName, err)
	}
	return cert, key
}

// Identity returns the PKI as package pki describes it.
func (c *CA) Identity() *pki.Identity {
	return &pki.Identity{
		TrustDomain:  c.TrustDomain,
		TrustAnchors: []*x509.Certificate{c.Root},
		IssuerChain:  []*x509.Certificate{c.Issuer},
		IssuerKey:    c.IssuerKey,
	}
}

// Bundle returns the trust bundle: the trust anchor alone.
func (c *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.TrustDomain, []*x509.Certificate{c.Root})
}

// SecretFiles returns the files of the mesh-identity-issuer Secret for this
// PKI, by name.
func (c *CA) SecretFiles(t testing.TB) map[string][]byte {
	t.Helper()
	key, err := pki.EncodeKey(c.IssuerKey)
	if err != nil {
		t.Fatalf("identitytest: %v", err)
	}
	return map[string][]byte{
		ca.CertFile:    pki.EncodeCerts(c.Issuer),
		ca.KeyFile:     key,
		ca.AnchorsFile: pki.EncodeCerts(c.Root),
	}
}

// NewIssuer returns the production ca.Issuer for this PKI, valid now.
func (c *CA) NewIssuer(t testing.TB) *ca.Issuer {
	t.Helper()
	iss, err := ca.NewIssuer(c.Identity(), time.Now())
	if err != nil {
		t.Fatalf("identitytest: %v", err)
	}
	return iss
}

// IssueSVID signs a new P-256 key as id the way the identity service does,
// valid for ca.DefaultLifetime from now.
func (c *CA) IssueSVID(t testing.TB, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("identitytest: generate key: %v", err)
	}
	leaf, err := c.NewIssuer(t).Sign(key.Public(), id, time.Now(), 0)
	if err != nil {
		t.Fatalf("identitytest: %v", err)
	}
	return &x509svid.SVID{
		ID:           id,
		Certificates: append([]*x509.Certificate{leaf.Certificate}, leaf.Intermediates...),
		PrivateKey:   key,
	}
}

// ID returns spiffe://<trust domain>/ns/<ns>/sa/<sa>, the mesh's ID for a
// ServiceAccount.
func (c *CA) ID(ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(c.TrustDomain, "ns", ns, "sa", sa)
}
