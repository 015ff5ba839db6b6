package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
)

func TestParseKey(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{name: "PKCS #8", in: enc("PRIVATE KEY", pkcs8)},
		// openssl ecparam -genkey writes the parameters first.
		{name: "SEC 1 after EC PARAMETERS", in: enc("EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}) + enc("EC PRIVATE KEY", sec1)},
		{name: "PKCS #1", in: enc("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))},
		{name: "certificate only", in: string(mustIdentity(t, "cluster.local", testNow).IssuerCertPEM()), wantErr: true},
		{name: "not PEM", in: "hello", wantErr: true},
		{name: "corrupt", in: enc("PRIVATE KEY", []byte("nope")), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseKey([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseKey: %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

func TestParseCerts(t *testing.T) {
	id := mustIdentity(t, "cluster.local", testNow)
	keyPEM, _ := id.IssuerKeyPEM()
	tests := []struct {
		name    string
		in      []byte
		want    int
		wantErr error
	}{
		{name: "two", in: EncodeCerts(id.Issuer(), id.TrustAnchors[0]), want: 2},
		{name: "empty", in: nil, wantErr: ErrNoPEM},
		{name: "a key where a certificate belongs", in: keyPEM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCerts(tc.in)
			switch {
			case tc.want > 0 && err != nil:
				t.Fatalf("ParseCerts: %v", err)
			case tc.want > 0 && len(got) != tc.want:
				t.Fatalf("%d certificates, want %d", len(got), tc.want)
			case tc.want == 0 && err == nil:
				t.Fatal("ParseCerts accepted bad input")
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("ParseCerts = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// FuzzParseIdentity feeds the three user-supplied PEM inputs of
// `mesh install --identity-*-file`; nothing may panic, and whatever parses
// must either validate or say why not.
func FuzzParseIdentity(f *testing.F) {
	id, err := NewIdentity(mustTD(f, "cluster.local"), testNow)
	if err != nil {
		f.Fatal(err)
	}
	keyPEM, _ := id.IssuerKeyPEM()
	f.Add(id.TrustAnchorsPEM(), id.IssuerCertPEM(), keyPEM)                                             // valid
	f.Add(id.IssuerCertPEM(), id.TrustAnchorsPEM(), keyPEM)                                             // swapped files
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"), []byte{}, []byte{}) // truncated DER
	f.Fuzz(func(t *testing.T, anchors, issuer, key []byte) {
		got, err := ParseIdentity(id.TrustDomain, anchors, issuer, key)
		if err != nil {
			return
		}
		_ = got.Validate(testNow)
	})
}
