package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/identity/pki"
)

var testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

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
		{name: "other name", s: s, dnsName: "mesh-injector.default.svc", now: testNow, wantErr: pki.ErrUntrusted},
		{name: "expired", s: s, dnsName: "mesh-injector.mesh-system.svc", now: testNow.Add(ServingValidity + time.Minute), wantErr: pki.ErrExpired},
		{name: "other CA", s: &Serving{CA: other.CA, Cert: s.Cert, Key: s.Key}, dnsName: "mesh-injector.mesh-system.svc", now: testNow, wantErr: pki.ErrUntrusted},
		{name: "other key", s: &Serving{CA: s.CA, Cert: s.Cert, Key: other.Key}, dnsName: "mesh-injector.mesh-system.svc", now: testNow, wantErr: pki.ErrKeyMismatch},
		{name: "CA is the leaf", s: &Serving{CA: s.Cert, Cert: s.Cert, Key: s.Key}, dnsName: "mesh-injector.mesh-system.svc", now: testNow, wantErr: pki.ErrNotCA},
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
