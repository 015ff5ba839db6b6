package ca_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mesh-dev/mesh/identity/ca"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

const webID = "spiffe://cluster.local/ns/shop/sa/web"

// csr signs tmpl with key (a new P-256 key when nil).
func csr(t testing.TB, tmpl *x509.CertificateRequest, key crypto.Signer) []byte {
	t.Helper()
	if key == nil {
		key = newKey(t)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func uris(t testing.TB, ss ...string) []*url.URL {
	t.Helper()
	var out []*url.URL
	for _, s := range ss {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

// otherNameSAN is a SAN extension holding the web ID and an otherName,
// which Go's parser skips: the raw check must catch it.
func otherNameSAN(t testing.TB) pkix.Extension {
	t.Helper()
	names := []asn1.RawValue{
		{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(webID)},
		{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: mustMarshal(t, asn1.ObjectIdentifier{1, 2, 3})},
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: mustMarshal(t, names)}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// badSignature flips a bit in the last byte of der, which lies in the
// signature of a DER CSR.
func badSignature(der []byte) []byte {
	b := append([]byte(nil), der...)
	b[len(b)-1] ^= 1
	return b
}

func TestParseCSR(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := csr(t, &x509.CertificateRequest{URIs: uris(t, webID)}, nil)
	tests := []struct {
		name string
		der  []byte
		want error // nil: accepted as webID
	}{
		{"one SPIFFE ID", good, nil},
		{"a CN is ignored", csr(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "web.shop"}, URIs: uris(t, webID)}, nil), nil},
		{"empty", nil, ca.ErrMalformedCSR},
		{"garbage", []byte("not a CSR"), ca.ErrMalformedCSR},
		{"truncated", good[:len(good)/2], ca.ErrMalformedCSR},
		{"trailing data", append(append([]byte(nil), good...), 0), ca.ErrMalformedCSR},
		{"too large", make([]byte, ca.MaxCSRSize+1), ca.ErrMalformedCSR},
		{"bad signature", badSignature(good), ca.ErrCSRSignature},
		{"Ed25519 key", csr(t, &x509.CertificateRequest{URIs: uris(t, webID)}, edKey), ca.ErrCSRKey},
		{"P-384 key", csr(t, &x509.CertificateRequest{URIs: uris(t, webID)}, p384), ca.ErrCSRKey},
		{"no SAN", csr(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: webID}}, nil), ca.ErrCSRSAN},
		{"extra SPIFFE ID", csr(t, &x509.CertificateRequest{URIs: uris(t, webID, "spiffe://cluster.local/ns/shop/sa/admin")}, nil), ca.ErrCSRSAN},
		{"extra https URI", csr(t, &x509.CertificateRequest{URIs: uris(t, webID, "https://web.shop")}, nil), ca.ErrCSRSAN},
		{"DNS name", csr(t, &x509.CertificateRequest{URIs: uris(t, webID), DNSNames: []string{"web.shop.svc"}}, nil), ca.ErrCSRSAN},
		{"IP address", csr(t, &x509.CertificateRequest{URIs: uris(t, webID), IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}, nil), ca.ErrCSRSAN},
		{"e-mail address", csr(t, &x509.CertificateRequest{URIs: uris(t, webID), EmailAddresses: []string{"web@shop"}}, nil), ca.ErrCSRSAN},
		{"otherName beside the ID", csr(t, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{otherNameSAN(t)}}, nil), ca.ErrCSRSAN},
		{"not a SPIFFE URI", csr(t, &x509.CertificateRequest{URIs: uris(t, "https://cluster.local/ns/shop/sa/web")}, nil), ca.ErrCSRSAN},
		{"SPIFFE ID with a query", csr(t, &x509.CertificateRequest{URIs: uris(t, webID+"?x=1")}, nil), ca.ErrCSRSAN},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ca.ParseCSR(tc.der)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("ParseCSR error = %v, want %v", err, tc.want)
				}
				t.Logf("error: %v", err)
				if got != nil {
					t.Error("ParseCSR returned a CSR with its error")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCSR: %v", err)
			}
			if got.ID.String() != webID {
				t.Errorf("ID = %q, want %q", got.ID, webID)
			}
		})
	}
}

// FuzzCSR feeds ParseCSR arbitrary bytes. Whatever it accepts must be
// exactly what it promises: a P-256 key and one SPIFFE ID, and signing it
// must give a leaf go-spiffe verifies with that ID and no other name.
//
// Run longer with: go test ./identity/ca -run '^$' -fuzz FuzzCSR -fuzztime 1m
func FuzzCSR(f *testing.F) {
	good := csr(f, &x509.CertificateRequest{URIs: uris(f, webID)}, nil)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	// Accepted: what a proxy sends, with and without a CN.
	f.Add(good)
	f.Add(csr(f, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "web"}, URIs: uris(f, webID)}, nil))
	// Refused for their names: a DNS name or IP beside the ID, two IDs, an
	// otherName Go does not decode, a URI that is not a SPIFFE ID, none.
	f.Add(csr(f, &x509.CertificateRequest{URIs: uris(f, webID), DNSNames: []string{"web"}}, nil))
	f.Add(csr(f, &x509.CertificateRequest{URIs: uris(f, webID), IPAddresses: []net.IP{net.IPv6loopback}}, nil))
	f.Add(csr(f, &x509.CertificateRequest{URIs: uris(f, webID, webID)}, nil))
	f.Add(csr(f, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{otherNameSAN(f)}}, nil))
	f.Add(csr(f, &x509.CertificateRequest{URIs: uris(f, "spiffe://cluster.local")}, nil))
	f.Add(csr(f, &x509.CertificateRequest{}, nil))
	// Refused for the key or the signature: Ed25519, a flipped bit.
	f.Add(csr(f, &x509.CertificateRequest{URIs: uris(f, webID)}, edKey))
	f.Add(badSignature(good))
	// Refused as malformed: nothing, half a request, one byte too many.
	f.Add([]byte{})
	f.Add(good[:len(good)/2])
	f.Add(append(append([]byte(nil), good...), 0))

	pki := identitytest.NewCA(f)
	iss := pki.NewIssuer(f)
	bundles := x509bundle.NewSet(pki.Bundle())
	f.Fuzz(func(t *testing.T, der []byte) {
		got, err := ca.ParseCSR(der)
		if err != nil {
			if got != nil {
				t.Fatal("ParseCSR returned a CSR with its error")
			}
			if !errors.Is(err, ca.ErrMalformedCSR) && !errors.Is(err, ca.ErrCSRSignature) &&
				!errors.Is(err, ca.ErrCSRKey) && !errors.Is(err, ca.ErrCSRSAN) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		req, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatalf("accepted a CSR x509 cannot parse: %v", err)
		}
		if n := len(req.DNSNames) + len(req.IPAddresses) + len(req.EmailAddresses) + len(req.URIs); n != 1 {
			t.Fatalf("accepted a CSR with %d names", n)
		}
		if !got.PublicKey.Equal(req.PublicKey) || got.PublicKey.Curve != elliptic.P256() {
			t.Fatal("accepted key is not the CSR's P-256 key")
		}
		if got.ID.TrustDomain() != pki.TrustDomain {
			return // well-formed, but not ours to sign
		}
		leaf, err := iss.Sign(got.PublicKey, got.ID, time.Now(), 0)
		if err != nil {
			t.Fatalf("Sign an accepted CSR: %v", err)
		}
		id, _, err := x509svid.Verify(append([]*x509.Certificate{leaf.Certificate}, leaf.Intermediates...), bundles)
		if err != nil || id != got.ID {
			t.Fatalf("leaf verifies as %q, %v; want %q", id, err, got.ID)
		}
	})
}
