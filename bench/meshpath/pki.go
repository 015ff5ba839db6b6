package main

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mesh-dev/mesh/identity/ca"
	"github.com/mesh-dev/mesh/identity/pki"
)

// labPKI is the run's test CA: a trust anchor and an issuer made as
// `mesh install` makes them (pki.NewIdentity). The controller signs the
// proxies' certificates with the issuer; the nginx pair's certificates
// come from the same issuer, so both pairs verify the same kind of chain
// (a P-256 leaf, the issuer, the anchor).
type labPKI struct {
	id *pki.Identity
}

func newLabPKI(td spiffeid.TrustDomain) (*labPKI, error) {
	id, err := pki.NewIdentity(td, time.Now())
	if err != nil {
		return nil, fmt.Errorf("test CA: %w", err)
	}
	return &labPKI{id: id}, nil
}

// anchorsPEM is what proxies are given as their trust anchors.
func (k *labPKI) anchorsPEM() []byte { return k.id.TrustAnchorsPEM() }

// writeIssuer writes the issuer Secret's files into dir, as the
// controller's volume mount holds them.
func (k *labPKI) writeIssuer(dir string) error {
	key, err := k.id.IssuerKeyPEM()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		ca.CertFile: k.id.IssuerCertPEM(), ca.KeyFile: key, ca.AnchorsFile: k.anchorsPEM(),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// leaf is a certificate to issue for the nginx pair.
type leaf struct {
	name  string // files dir/<name>.crt (leaf, then the issuer) and dir/<name>.key
	usage x509.ExtKeyUsage
	// dnsName is what the other side checks (nginx's proxy_ssl_name); id
	// rides along as URI SAN, as in a mesh certificate.
	dnsName string
	id      spiffeid.ID
}

// writeLeaf issues l, valid for a day, and writes it into dir.
func (k *labPKI) writeLeaf(dir string, l leaf) error {
	t, err := pki.NewTemplate(l.dnsName, time.Now(), 24*time.Hour)
	if err != nil {
		return err
	}
	t.KeyUsage = x509.KeyUsageDigitalSignature
	t.ExtKeyUsage = []x509.ExtKeyUsage{l.usage}
	t.DNSNames = []string{l.dnsName}
	t.URIs = []*url.URL{l.id.URL()}
	cert, key, err := pki.Sign(t, k.id.Issuer(), k.id.IssuerKey)
	if err != nil {
		return fmt.Errorf("certificate %s: %w", l.name, err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return err
	}
	chain := pki.EncodeCerts(append([]*x509.Certificate{cert}, k.id.IssuerChain...)...)
	if err := os.WriteFile(filepath.Join(dir, l.name+".crt"), chain, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, l.name+".key"), keyPEM, 0o600)
}
