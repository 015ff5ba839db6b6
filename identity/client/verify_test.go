package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
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

// answer is what the controller would send for key as id.
func answer(t testing.TB, c *identitytest.CA, key *ecdsa.PrivateKey, id spiffeid.ID) *identityv1.CertifyResponse {
	t.Helper()
	leaf, err := c.NewIssuer(t).Sign(key.Public(), id, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	resp := &identityv1.CertifyResponse{
		LeafCertificate: leaf.Certificate.Raw,
		TrustBundle:     &identityv1.TrustBundle{TrustDomain: c.TrustDomain.Name(), X509Authorities: [][]byte{c.Root.Raw}},
	}
	for _, ic := range leaf.Intermediates {
		resp.IntermediateCertificates = append(resp.IntermediateCertificates, ic.Raw)
	}
	return resp
}

func TestVerifyResponse(t *testing.T) {
	pki := identitytest.NewCA(t)
	other := identitytest.NewCA(t)
	id := pki.ID("shop", "web")
	key := newKey(t)
	tests := []struct {
		name    string
		change  func(*identityv1.CertifyResponse)
		now     time.Time
		wantErr string // "" for success
	}{
		{name: "good", change: func(*identityv1.CertifyResponse) {}},
		{name: "garbage leaf", change: func(r *identityv1.CertifyResponse) { r.LeafCertificate = []byte("nope") }, wantErr: "leaf"},
		{name: "garbage intermediate", change: func(r *identityv1.CertifyResponse) { r.IntermediateCertificates[0] = []byte{0x30} }, wantErr: "intermediate 0"},
		{name: "no intermediates", change: func(r *identityv1.CertifyResponse) { r.IntermediateCertificates = nil }, wantErr: "could not verify"},
		{name: "no bundle", change: func(r *identityv1.CertifyResponse) { r.TrustBundle = nil }, wantErr: "no trust bundle"},
		{name: "empty bundle", change: func(r *identityv1.CertifyResponse) { r.TrustBundle.X509Authorities = nil }, wantErr: "no authorities"},
		{name: "garbage bundle", change: func(r *identityv1.CertifyResponse) { r.TrustBundle.X509Authorities[0] = []byte("x") }, wantErr: "authority 0"},
		{name: "bundle of other trust domain", change: func(r *identityv1.CertifyResponse) { r.TrustBundle.TrustDomain = "other.example" }, wantErr: "other.example"},
		{name: "bundle of other anchor", change: func(r *identityv1.CertifyResponse) { r.TrustBundle.X509Authorities[0] = other.Root.Raw }, wantErr: "could not verify"},
		{name: "another key", change: func(r *identityv1.CertifyResponse) {
			r.LeafCertificate = answer(t, pki, newKey(t), id).LeafCertificate
		}, wantErr: "another key"},
		{name: "another ID", change: func(r *identityv1.CertifyResponse) {
			r.LeafCertificate = answer(t, pki, key, pki.ID("shop", "admin")).LeafCertificate
		}, wantErr: `"spiffe://cluster.local/ns/shop/sa/admin"`},
		{name: "expired by now", change: func(*identityv1.CertifyResponse) {}, now: time.Now().Add(2 * time.Hour), wantErr: "expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := answer(t, pki, key, id)
			tc.change(resp)
			now := tc.now
			if now.IsZero() {
				now = time.Now()
			}
			svid, bundle, err := verifyResponse(resp, id, key, now)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("verifyResponse: %v", err)
				}
				if svid.ID != id || svid.PrivateKey != key || len(svid.Certificates) != 2 || !bundle.Equal(pki.Bundle()) {
					t.Errorf("got SVID %s with %d certificates, bundle of %d", svid.ID, len(svid.Certificates), len(bundle.X509Authorities()))
				}
				return
			}
			if !errors.Is(err, ErrInvalidCertificate) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("verifyResponse error = %v, want ErrInvalidCertificate saying %q", err, tc.wantErr)
			}
		})
	}
}

// TestCSRPassesTheController checks the CSR against the controller's own
// parser, which refuses anything but one SPIFFE ID.
func TestCSRPassesTheController(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web")
	key := newKey(t)
	der, err := newCSR(id, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.ParseCSR(der)
	if err != nil {
		t.Fatalf("ParseCSR: %v", err)
	}
	if csr.ID != id || !csr.PublicKey.Equal(key.Public()) {
		t.Errorf("CSR asks for %s with another key, want %s", csr.ID, id)
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		want    string
		wantErr string
	}{
		{name: "trailing newline", path: write("ok", "eyJ.token.sig\n"), want: "eyJ.token.sig"},
		{name: "missing", path: filepath.Join(dir, "missing"), wantErr: "no such file"},
		{name: "empty", path: write("empty", " \n"), wantErr: "empty"},
		{name: "too large", path: write("large", strings.Repeat("a", maxTokenSize+1)), wantErr: "larger"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readToken(tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("readToken error = %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Errorf("readToken = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// FuzzParseBundle feeds parseBundle, which reads what the controller
// streams, arbitrary trust domains and authorities: it must never panic,
// and a bundle it accepts is for the trust domain asked for.
func FuzzParseBundle(f *testing.F) {
	pki := identitytest.NewCA(f)
	f.Add("cluster.local", pki.Root.Raw)          // a real anchor
	f.Add("cluster.local", []byte{})              // no authorities
	f.Add("other.example", pki.Root.Raw)          // another trust domain
	f.Add("cluster.local", []byte{0x30})          // truncated DER
	f.Add("", pki.Root.Raw[:len(pki.Root.Raw)/2]) // no trust domain, half a certificate
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	f.Fuzz(func(t *testing.T, name string, der []byte) {
		tb := &identityv1.TrustBundle{TrustDomain: name}
		if len(der) > 0 {
			tb.X509Authorities = [][]byte{der}
		}
		b, err := parseBundle(tb, td)
		if err != nil {
			if !errors.Is(err, ErrInvalidCertificate) {
				t.Errorf("error %v does not wrap ErrInvalidCertificate", err)
			}
			return
		}
		if b.TrustDomain() != td || len(b.X509Authorities()) != 1 {
			t.Errorf("accepted a bundle for %q with %d authorities", b.TrustDomain(), len(b.X509Authorities()))
		}
	})
}
