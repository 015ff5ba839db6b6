// Package certs makes and checks the certificates `mesh install` puts in the
// cluster: the identity PKI (a long-lived trust anchor and the issuer CA the
// controller signs workload SVIDs with, see DESIGN.md "Workload identity") and
// the serving certificate of the proxy-injector webhook with the small CA the
// API server verifies it against.
//
// Every key is ECDSA P-256. Nothing here talks to a cluster: callers read
// and write the PEM this package produces.
package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
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

// template returns the fields every certificate made here shares.
func template(cn string, now time.Time, validity time.Duration) (*x509.Certificate, error) {
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

// caTemplate is a CA certificate template. maxPathLenZero limits the CA to
// signing leaves only.
func caTemplate(cn string, now time.Time, validity time.Duration, maxPathLenZero bool) (*x509.Certificate, error) {
	t, err := template(cn, now, validity)
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

// sign creates a certificate from t for a new P-256 key, signed by parent
// and parentKey, or self-signed when parent is nil.
func sign(t, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, *ecdsa.PrivateKey, error) {
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

// EncodeCerts returns certs as concatenated PEM CERTIFICATE blocks.
func EncodeCerts(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// ParseCerts parses every CERTIFICATE block in data, in order. Other block
// types are an error, so a key pasted into a certificate file is caught.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, want CERTIFICATE", n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: want CERTIFICATE blocks", ErrNoPEM)
	}
	return certs, nil
}

// EncodeKey returns key as a PKCS #8 "PRIVATE KEY" PEM block.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey parses the first private key in data: PKCS #8 ("PRIVATE KEY"),
// SEC 1 ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY"), the forms
// openssl, step and cfssl write.
func ParseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%w: want a PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block", ErrNoPEM)
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue // e.g. "EC PARAMETERS" that openssl writes first
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		default:
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
	}
}

// checkKeyPair reports whether key is the private half of cert's public key.
func checkKeyPair(cert *x509.Certificate, key crypto.Signer) error {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return ErrKeyMismatch
	}
	return nil
}

// checkTime reports whether now lies in c's validity period.
func checkTime(c *x509.Certificate, now time.Time) error {
	switch {
	case now.After(c.NotAfter):
		return fmt.Errorf("%w: %q expired on %s", ErrExpired, c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.NotBefore):
		return fmt.Errorf("%w: %q is not valid before %s", ErrExpired, c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkCA reports whether c may sign certificates.
func checkCA(c *x509.Certificate) error {
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
