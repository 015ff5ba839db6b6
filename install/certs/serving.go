package certs

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
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
	caT, err := caTemplate(dnsNames[0]+" CA", now, ServingCAValidity, true)
	if err != nil {
		return nil, err
	}
	ca, caKey, err := sign(caT, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("serving CA: %w", err)
	}
	t, err := template(dnsNames[0], now, ServingValidity)
	if err != nil {
		return nil, err
	}
	t.DNSNames = dnsNames
	t.KeyUsage = x509.KeyUsageDigitalSignature
	t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	cert, key, err := sign(t, ca, caKey)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	return &Serving{CA: ca, Cert: cert, Key: key}, nil
}

// ParseServing parses a PEM-encoded CA, serving certificate and key. It
// only parses: call Validate before using the result.
func ParseServing(caPEM, certPEM, keyPEM []byte) (*Serving, error) {
	cas, err := ParseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("serving CA: %w", err)
	}
	certs, err := ParseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	return &Serving{CA: cas[0], Cert: certs[0], Key: key}, nil
}

// Validate checks that a client verifying with s.CA accepts s.Cert for
// dnsName at now, and that s.Key belongs to s.Cert. Errors wrap ErrExpired,
// ErrNotCA, ErrKeyMismatch or ErrUntrusted.
func (s *Serving) Validate(dnsName string, now time.Time) error {
	if err := VerifyServing(s.CA, s.Cert, dnsName, now); err != nil {
		return err
	}
	if err := checkKeyPair(s.Cert, s.Key); err != nil {
		return fmt.Errorf("serving key: %w", err)
	}
	return nil
}

// VerifyServing checks, as a TLS client trusting only ca would, that cert
// is valid for dnsName at now.
func VerifyServing(ca, cert *x509.Certificate, dnsName string, now time.Time) error {
	if err := checkCA(ca); err != nil {
		return fmt.Errorf("serving CA: %w", err)
	}
	if err := checkTime(ca, now); err != nil {
		return fmt.Errorf("serving CA: %w", err)
	}
	if err := checkTime(cert, now); err != nil {
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
		return fmt.Errorf("serving certificate: %w: %v", ErrUntrusted, err)
	}
	return nil
}

// CAPEM returns the CA certificate as PEM.
func (s *Serving) CAPEM() []byte { return EncodeCerts(s.CA) }

// CertPEM returns the serving certificate as PEM.
func (s *Serving) CertPEM() []byte { return EncodeCerts(s.Cert) }

// KeyPEM returns the serving key as PEM.
func (s *Serving) KeyPEM() ([]byte, error) { return EncodeKey(s.Key) }
