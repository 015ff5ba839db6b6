package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func mustTD(t testing.TB, name string) spiffeid.TrustDomain {
	t.Helper()
	td, err := ParseTrustDomain(name)
	if err != nil {
		t.Fatal(err)
	}
	return td
}

func mustIdentity(t testing.TB, td string, now time.Time) *Identity {
	t.Helper()
	id, err := NewIdentity(mustTD(t, td), now)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// workloadSVID signs a workload leaf the way the controller will (DESIGN.md:
// URI SAN spiffe://<td>/ns/<ns>/sa/<sa>), to prove the issuer can make
// certificates SPIFFE libraries accept.
func workloadSVID(t testing.TB, id *Identity, spiffeID string, now time.Time) *x509.Certificate {
	t.Helper()
	tmpl, err := NewTemplate("web", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(spiffeID)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.URIs = []*url.URL{u}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	leaf, _, err := Sign(tmpl, id.Issuer(), id.IssuerKey)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func TestNewIdentity(t *testing.T) {
	id := mustIdentity(t, "cluster.local", testNow)
	if err := id.Validate(testNow); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	root, issuer := id.TrustAnchors[0], id.Issuer()

	for _, c := range []*x509.Certificate{root, issuer} {
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s: key %T, want ECDSA P-256", c.Subject.CommonName, c.PublicKey)
		}
		if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://cluster.local" {
			t.Errorf("%s: URI SANs %v, want [spiffe://cluster.local]", c.Subject.CommonName, c.URIs)
		}
	}
	if got := root.NotAfter.Sub(testNow); got != TrustAnchorValidity {
		t.Errorf("trust anchor valid for %v, want %v", got, TrustAnchorValidity)
	}
	if got := issuer.NotAfter.Sub(testNow); got != IssuerValidity {
		t.Errorf("issuer valid for %v, want %v", got, IssuerValidity)
	}
	if !issuer.IsCA || !issuer.MaxPathLenZero {
		t.Errorf("issuer: IsCA=%v MaxPathLenZero=%v, want a CA that signs leaves only", issuer.IsCA, issuer.MaxPathLenZero)
	}
	if err := issuer.CheckSignatureFrom(root); err != nil {
		t.Errorf("issuer not signed by the trust anchor: %v", err)
	}

	// A workload SVID from this issuer verifies with go-spiffe against a
	// bundle of the trust anchors, as every proxy will.
	leaf := workloadSVID(t, id, "spiffe://cluster.local/ns/shop/sa/web", testNow)
	bundle := x509bundle.FromX509Authorities(id.TrustDomain, id.TrustAnchors)
	gotID, _, err := x509svid.Verify([]*x509.Certificate{leaf, issuer}, bundle, x509svid.WithTime(testNow))
	if err != nil {
		t.Fatalf("go-spiffe rejects a workload SVID from the issuer: %v", err)
	}
	if gotID.String() != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Errorf("SPIFFE ID %q", gotID)
	}
}

func TestIdentityPEMRoundTrip(t *testing.T) {
	id := mustIdentity(t, "example.org", testNow)
	keyPEM, err := id.IssuerKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseIdentity(id.TrustDomain, id.TrustAnchorsPEM(), id.IssuerCertPEM(), keyPEM)
	if err != nil {
		t.Fatalf("ParseIdentity: %v", err)
	}
	if err := got.Validate(testNow); err != nil {
		t.Fatalf("Validate after round trip: %v", err)
	}
	if !got.TrustAnchors[0].Equal(id.TrustAnchors[0]) || !got.Issuer().Equal(id.Issuer()) {
		t.Error("certificates changed in the round trip")
	}
	if err := CheckKeyPair(got.Issuer(), got.IssuerKey); err != nil {
		t.Error(err)
	}
}

func TestIdentityValidate(t *testing.T) {
	good := mustIdentity(t, "cluster.local", testNow)
	other := mustIdentity(t, "cluster.local", testNow)
	otherTD := mustIdentity(t, "example.org", testNow)

	// A leaf from the issuer passed off as an issuer: not a CA.
	leaf := workloadSVID(t, good, "spiffe://cluster.local/ns/a/sa/b", testNow)
	leafKey := mustKey(t)

	tests := []struct {
		name    string
		id      *Identity
		now     time.Time
		wantErr error
	}{
		{name: "valid", id: good, now: testNow},
		{name: "valid just before the issuer expires", id: good, now: testNow.Add(IssuerValidity - time.Minute)},
		{name: "issuer expired", id: good, now: testNow.Add(IssuerValidity + time.Minute), wantErr: ErrExpired},
		{name: "not yet valid", id: good, now: testNow.Add(-time.Hour), wantErr: ErrExpired},
		{
			name:    "issuer from another root",
			id:      &Identity{TrustDomain: good.TrustDomain, TrustAnchors: good.TrustAnchors, IssuerChain: other.IssuerChain, IssuerKey: other.IssuerKey},
			now:     testNow,
			wantErr: ErrUntrusted,
		},
		{
			name:    "key of another issuer",
			id:      &Identity{TrustDomain: good.TrustDomain, TrustAnchors: good.TrustAnchors, IssuerChain: good.IssuerChain, IssuerKey: other.IssuerKey},
			now:     testNow,
			wantErr: ErrKeyMismatch,
		},
		{
			name:    "issuer is not a CA",
			id:      &Identity{TrustDomain: good.TrustDomain, TrustAnchors: good.TrustAnchors, IssuerChain: []*x509.Certificate{leaf}, IssuerKey: leafKey},
			now:     testNow,
			wantErr: ErrNotCA,
		},
		{
			name:    "certificates of another trust domain",
			id:      &Identity{TrustDomain: good.TrustDomain, TrustAnchors: otherTD.TrustAnchors, IssuerChain: otherTD.IssuerChain, IssuerKey: otherTD.IssuerKey},
			now:     testNow,
			wantErr: ErrTrustDomain,
		},
		{
			name:    "trust anchor is not a CA",
			id:      &Identity{TrustDomain: good.TrustDomain, TrustAnchors: []*x509.Certificate{leaf}, IssuerChain: good.IssuerChain, IssuerKey: good.IssuerKey},
			now:     testNow,
			wantErr: ErrNotCA,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.id.Validate(tc.now)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Validate = %v, want an error wrapping %q", err, tc.wantErr)
			}
		})
	}
}

// TestIdentityWithIntermediate: an issuer below an intermediate of the
// user's own PKI validates when the intermediate follows it in the file,
// and not without it.
func TestIdentityWithIntermediate(t *testing.T) {
	mustSign := func(tmpl, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer) {
		t.Helper()
		c, k, err := Sign(tmpl, parent, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	mustCA := func(cn string, leavesOnly bool) *x509.Certificate {
		t.Helper()
		c, err := NewCATemplate(cn, testNow, time.Hour, leavesOnly)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	root, rootKey := mustSign(mustCA("user root", false), nil, nil)
	inter, interKey := mustSign(mustCA("user intermediate", false), root, rootKey)
	issuer, issuerKey := mustSign(mustCA("mesh issuer", true), inter, interKey)

	id := &Identity{
		TrustDomain:  mustTD(t, "cluster.local"),
		TrustAnchors: []*x509.Certificate{root},
		IssuerChain:  []*x509.Certificate{issuer, inter},
		IssuerKey:    issuerKey,
	}
	if err := id.Validate(testNow); err != nil {
		t.Fatalf("Validate with intermediate: %v", err)
	}
	id.IssuerChain = id.IssuerChain[:1]
	if err := id.Validate(testNow); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("Validate without the intermediate = %v, want ErrUntrusted", err)
	}
}

func TestParseTrustDomain(t *testing.T) {
	tests := []struct {
		in      string
		wantErr bool
	}{
		{in: "cluster.local"},
		{in: "my_domain-1.example.org"},
		{in: "", wantErr: true},
		{in: "Cluster.Local", wantErr: true},
		{in: "spiffe://cluster.local", wantErr: true},
		{in: "cluster local", wantErr: true},
		{in: "cluster.local/ns", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			td, err := ParseTrustDomain(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseTrustDomain(%q) = %v, %v; want error %v", tc.in, td, err, tc.wantErr)
			}
			if err == nil && td.Name() != tc.in {
				t.Errorf("name %q, want %q", td.Name(), tc.in)
			}
		})
	}
}

func mustKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
