// Package certs makes and checks the serving certificates `mesh install`
// puts in the cluster for servers the Kubernetes API server calls (the
// proxy-injector webhook, the tap API), each with the small CA the API
// server verifies it against. The identity PKI, trust anchors and issuer,
// is identity/pki's; this package builds on its templates, PEM encoding
// and checks, so both fail with the same errors (pki.ErrExpired, ...).
//
// Every key is ECDSA P-256. Nothing here talks to a cluster: callers read
// and write the PEM this package produces.
package certs

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/mesh-dev/mesh/identity/pki"
)

// Validity of the webhook serving certificate and of the CA that signs it.
// The CA's key is thrown away after signing, so both are replaced together
// when the serving certificate is renewed.
const (
	ServingValidity   = 365 * 24 * time.Hour
	ServingCAValidity = ServingValidity
)

// Serving is a TLS serving certificate with the CA that signed it, for a
// server that the Kubernetes API server calls, like an admission webhook:
// the API server trusts CA through the webhook configuration's caBundle.
type Serving struct {
	// CA signed Cert.
	CA *x509.Certificate
	// Cert is the serving certificate, with DNS SANs for the Service.
	Cert *x509.Certificate
	// Key is the private key of Cert.
	Key crypto.Signer
}

// ServiceDNSNames returns the names a client may use for Service name in
// namespace: the API server dials "<name>.<namespace>.svc"; the form with
// the default cluster domain is there for clients inside the cluster.
func ServiceDNSNames(name, namespace string) []string {
	svc := name + "." + namespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

// NewServing generates a CA and a serving certificate for dnsNames signed by
// it; the first name is also the certificate's common name.
func NewServing(dnsNames []string, now time.Time) (*Serving, error) {
	if len(dnsNames) == 0 {
		return nil, errors.New("new serving certificate: no DNS names")
	}
	caT, err := pki.NewCATemplate(dnsNames[0]+" CA", now, ServingCAValidity, true)
	if err != nil {
		return nil, err
	}
	ca, caKey, err := pki.Sign(caT, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("serving CA: %w", err)
	}
	t, err := pki.NewTemplate(dnsNames[0], now, ServingValidity)
	if err != nil {
		return nil, err
	}
	t.DNSNames = dnsNames
	t.KeyUsage = x509.KeyUsageDigitalSignature
	t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	cert, key, err := pki.Sign(t, ca, caKey)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	return &Serving{CA: ca, Cert: cert, Key: key}, nil
}

// ParseServing parses a PEM-encoded CA, serving certificate and key. It
// only parses: call Validate before using the result.
func ParseServing(caPEM, certPEM, keyPEM []byte) (*Serving, error) {
	cas, err := pki.ParseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("serving CA: %w", err)
	}
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	return &Serving{CA: cas[0], Cert: certs[0], Key: key}, nil
}

// Validate checks that a client verifying with s.CA accepts s.Cert for
// dnsName at now, and that s.Key belongs to s.Cert. Errors wrap
// pki.ErrExpired, pki.ErrNotCA, pki.ErrKeyMismatch or pki.ErrUntrusted.
func (s *Serving) Validate(dnsName string, now time.Time) error {
	if err := VerifyServing(s.CA, s.Cert, dnsName, now); err != nil {
		return err
	}
	if err := pki.CheckKeyPair(s.Cert, s.Key); err != nil {
		return fmt.Errorf("serving key: %w", err)
	}
	return nil
}

// VerifyServing checks, as a TLS client trusting only ca would, that cert
// is valid for dnsName at now.
func VerifyServing(ca, cert *x509.Certificate, dnsName string, now time.Time) error {
	if err := pki.CheckCA(ca); err != nil {
		return fmt.Errorf("serving CA: %w", err)
	}
	if err := pki.CheckValidity(ca, now); err != nil {
		return fmt.Errorf("serving CA: %w", err)
	}
	if err := pki.CheckValidity(cert, now); err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := cert.Verify(x509.VerifyOptions{
		DNSName:     dnsName,
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("serving certificate: %w: %v", pki.ErrUntrusted, err)
	}
	return nil
}

// CAPEM returns the CA certificate as PEM.
func (s *Serving) CAPEM() []byte { return pki.EncodeCerts(s.CA) }

// CertPEM returns the serving certificate as PEM.
func (s *Serving) CertPEM() []byte { return pki.EncodeCerts(s.Cert) }

// KeyPEM returns the serving key as PEM.
func (s *Serving) KeyPEM() ([]byte, error) { return pki.EncodeKey(s.Key) }
