package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func mustServing(t testing.TB, now time.Time) *Serving {
	t.Helper()
	s, err := NewServing(ServiceDNSNames("mesh-injector", "mesh-system"), now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestServiceDNSNames(t *testing.T) {
	got := ServiceDNSNames("mesh-injector", "mesh-system")
	want := []string{"mesh-injector.mesh-system.svc", "mesh-injector.mesh-system.svc.cluster.local"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("ServiceDNSNames = %v, want %v", got, want)
	}
}

func TestServingValidate(t *testing.T) {
	s := mustServing(t, testNow)
	other := mustServing(t, testNow)
	tests := []struct {
		name    string
		s       *Serving
		dnsName string
		now     time.Time
		wantErr error
	}{
		{name: "service name", s: s, dnsName: "mesh-injector.mesh-system.svc", now: testNow},
		{name: "with cluster domain", s: s, dnsName: "mesh-injector.mesh-system.svc.cluster.local", now: testNow},
		{name: "other name", s: s, dnsName: "mesh-injector.default.svc", now: testNow, wantErr: ErrUntrusted},
		{name: "expired", s: s, dnsName: "mesh-injector.mesh-system.svc", now: testNow.Add(ServingValidity + time.Minute), wantErr: ErrExpired},
		{name: "other CA", s: &Serving{CA: other.CA, Cert: s.Cert, Key: s.Key}, dnsName: "mesh-injector.mesh-system.svc", now: testNow, wantErr: ErrUntrusted},
		{name: "other key", s: &Serving{CA: s.CA, Cert: s.Cert, Key: other.Key}, dnsName: "mesh-injector.mesh-system.svc", now: testNow, wantErr: ErrKeyMismatch},
		{name: "CA is the leaf", s: &Serving{CA: s.Cert, Cert: s.Cert, Key: s.Key}, dnsName: "mesh-injector.mesh-system.svc", now: testNow, wantErr: ErrNotCA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.Validate(tc.dnsName, tc.now)
			if tc.wantErr == nil && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("Validate = %v, want an error wrapping %q", err, tc.wantErr)
			}
		})
	}
}

// TestServingHandshake serves TLS with a generated certificate and connects
// the way the API server does: trusting only the CA, dialing the service name.
func TestServingHandshake(t *testing.T) {
	s := mustServing(t, time.Now())
	keyPEM, err := s.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(s.CertPEM(), keyPEM)
	if err != nil {
		t.Fatalf("tls.X509KeyPair: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.CAPEM()) {
		t.Fatal("CA PEM not accepted by AppendCertsFromPEM")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:    roots,
		ServerName: "mesh-injector.mesh-system.svc",
	}}}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatalf("GET over TLS: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "ok" {
		t.Errorf("body %q", body)
	}
}

func TestServingPEMRoundTrip(t *testing.T) {
	s := mustServing(t, testNow)
	keyPEM, err := s.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseServing(s.CAPEM(), s.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Validate("mesh-injector.mesh-system.svc", testNow); err != nil {
		t.Fatal(err)
	}
}

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
		{name: "certificate only", in: string(mustServing(t, testNow).CertPEM()), wantErr: true},
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
	s := mustServing(t, testNow)
	keyPEM, _ := s.KeyPEM()
	tests := []struct {
		name    string
		in      []byte
		want    int
		wantErr error
	}{
		{name: "two", in: EncodeCerts(s.Cert, s.CA), want: 2},
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
