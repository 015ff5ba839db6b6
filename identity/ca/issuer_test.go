package ca_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mesh-dev/mesh/identity/ca"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestSignIsAnX509SVID checks a leaf against X509-SVID 4 and has go-spiffe
// verify it against the CA's bundle, as every peer will.
func TestSignIsAnX509SVID(t *testing.T) {
	pki := identitytest.NewCA(t)
	iss := pki.NewIssuer(t)
	id := pki.ID("shop", "web")
	now := time.Now().Truncate(time.Second)

	leaf, err := iss.Sign(newKey(t).Public(), id, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	cert := leaf.Certificate
	chain := append([]*x509.Certificate{cert}, leaf.Intermediates...)
	got, _, err := x509svid.Verify(chain, x509bundle.NewSet(pki.Bundle()))
	if err != nil {
		t.Fatalf("go-spiffe refuses our leaf: %v", err)
	}
	if got != id {
		t.Errorf("verified ID = %q, want %q", got, id)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != id.String() {
		t.Errorf("URI SANs = %v, want exactly [%s]", cert.URIs, id)
	}
	if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
		t.Errorf("leaf has other SANs: %v %v %v", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses)
	}
	if cert.IsCA || !cert.BasicConstraintsValid {
		t.Errorf("IsCA = %v, BasicConstraintsValid = %v; want a leaf that says it is not a CA", cert.IsCA, cert.BasicConstraintsValid)
	}
	if cert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want digitalSignature only", cert.KeyUsage)
	}
	if diff := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, cert.ExtKeyUsage); diff != "" {
		t.Errorf("ExtKeyUsage (-want +got):\n%s", diff)
	}
	if want := now.Add(-ca.Backdate); !cert.NotBefore.Equal(want) {
		t.Errorf("NotBefore = %s, want backdated to %s", cert.NotBefore, want)
	}
	if want := now.Add(ca.DefaultLifetime); !cert.NotAfter.Equal(want) {
		t.Errorf("NotAfter = %s, want %s", cert.NotAfter, want)
	}
	if cert.NotAfter.After(pki.Issuer.NotAfter) {
		t.Errorf("NotAfter %s outlives the issuer's %s", cert.NotAfter, pki.Issuer.NotAfter)
	}
	if bits := cert.SerialNumber.BitLen(); cert.SerialNumber.Sign() <= 0 || bits > 128 || bits < 64 {
		t.Errorf("serial %x (%d bits): want positive and random up to 128 bits", cert.SerialNumber, bits)
	}
	if !sanCritical(t, cert) {
		t.Error("subject is empty but the SAN extension is not critical (RFC 5280 4.2.1.6)")
	}
	if err := cert.CheckSignatureFrom(pki.Issuer); err != nil {
		t.Errorf("leaf not signed by the issuer: %v", err)
	}
}

func sanCritical(t *testing.T, c *x509.Certificate) bool {
	t.Helper()
	for _, e := range c.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			return e.Critical
		}
	}
	t.Fatal("no SAN extension")
	return false
}

func TestSignNeverOutlivesIssuer(t *testing.T) {
	pki := identitytest.NewCA(t, identitytest.WithIssuerValidity(2*time.Hour))
	leaf, err := pki.NewIssuer(t).Sign(newKey(t).Public(), pki.ID("shop", "web"), time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := leaf.Certificate.NotAfter, pki.Issuer.NotAfter; !got.Equal(want) {
		t.Errorf("NotAfter = %s, want clamped to the issuer's %s", got, want)
	}
}

func TestSignRefuses(t *testing.T) {
	pki := identitytest.NewCA(t, identitytest.WithIssuerValidity(2*time.Hour))
	iss := pki.NewIssuer(t)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  any
		id   spiffeid.ID
		now  time.Time
		want error
	}{{
		name: "ID in another trust domain",
		pub:  newKey(t).Public(),
		id:   spiffeid.RequireFromString("spiffe://other.example/ns/shop/sa/web"),
		now:  time.Now(),
		want: ca.ErrForeignID,
	}, {
		name: "issuer expired",
		pub:  newKey(t).Public(),
		id:   pki.ID("shop", "web"),
		now:  time.Now().Add(3 * time.Hour),
		want: ca.ErrIssuerExpired,
	}, {
		name: "issuer not valid yet",
		pub:  newKey(t).Public(),
		id:   pki.ID("shop", "web"),
		now:  time.Now().Add(-24 * time.Hour),
		want: ca.ErrIssuerExpired,
	}, {
		name: "Ed25519 key",
		pub:  edKey.Public(),
		id:   pki.ID("shop", "web"),
		now:  time.Now(),
		want: ca.ErrCSRKey,
	}, {
		name: "P-384 key",
		pub:  p384.Public(),
		id:   pki.ID("shop", "web"),
		now:  time.Now(),
		want: ca.ErrCSRKey,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leaf, err := iss.Sign(tc.pub, tc.id, tc.now, 0)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Sign error = %v, want %v", err, tc.want)
			}
			if leaf != nil {
				t.Errorf("Sign returned a leaf with its error")
			}
		})
	}
}

// TestNewIssuerDropsAnchorFromChain: a tls.crt holding the whole chain up
// to the root still sends peers a chain that stops below the anchor, as
// CertifyResponse.intermediate_certificates promises.
func TestNewIssuerDropsAnchorFromChain(t *testing.T) {
	pki := identitytest.NewCA(t)
	id := pki.Identity()
	id.IssuerChain = append(id.IssuerChain, pki.Root)
	iss, err := ca.NewIssuer(id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := len(iss.Chain()); got != 1 || !iss.Chain()[0].Equal(pki.Issuer) {
		t.Errorf("chain has %d certificates, want the issuer alone", got)
	}

	id.IssuerChain, id.IssuerKey = []*x509.Certificate{pki.Root}, pki.IssuerKey
	if _, err := ca.NewIssuer(id, time.Now()); err == nil {
		t.Error("NewIssuer accepted a trust anchor as the issuer")
	}
}

func TestNewIssuerRefusesOtherTrustDomain(t *testing.T) {
	pki := identitytest.NewCA(t, identitytest.WithTrustDomain("other.example"))
	id := pki.Identity()
	id.TrustDomain = spiffeid.RequireTrustDomainFromString("cluster.local")
	if _, err := ca.NewIssuer(id, time.Now()); err == nil {
		t.Error("NewIssuer accepted an issuer of trust domain other.example for cluster.local")
	}
}
