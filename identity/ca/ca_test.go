package ca_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mesh-dev/mesh/identity/ca"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

// syncBuffer is a log sink safe for Run's goroutine and the test's.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	pki  *identitytest.CA
	dir  *identitytest.SecretDir
	ca   *ca.CA
	reg  *prometheus.Registry
	logs *syncBuffer
}

func newFixture(t *testing.T, poll time.Duration) *fixture {
	t.Helper()
	f := &fixture{pki: identitytest.NewCA(t), dir: identitytest.NewSecretDir(t), reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	f.pki.WriteSecret(t, f.dir)
	c, err := ca.New(ca.Config{
		Dir:          f.dir.Path,
		PollInterval: poll,
		Log:          slog.New(slog.NewTextHandler(f.logs, nil)),
		Registerer:   f.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.ca = c
	return f
}

func (f *fixture) reloads(result string) float64 {
	return gathered(f.reg, "mesh_identity_issuer_reloads_total", result)
}

// gathered returns the value of the series of name whose only label has
// value label ("" for a series without labels), or -1 when there is none.
func gathered(reg *prometheus.Registry, name, label string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() != label {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

func signWith(t *testing.T, c *ca.CA, id spiffeid.ID) *ca.Leaf {
	t.Helper()
	der, _ := identitytest.NewCSR(t, id)
	req, err := ca.ParseCSR(der)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := c.Sign(req)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// TestRunFollowsSecretRotation swaps ..data as kubelet does while Run
// polls, and waits for the CA to notice: new leaves come from the new
// issuer.
func TestRunFollowsSecretRotation(t *testing.T) {
	f := newFixture(t, 10*time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.ca.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	id := f.pki.ID("shop", "web")
	if leaf := signWith(t, f.ca, id); leaf.Certificate.CheckSignatureFrom(f.pki.Issuer) != nil {
		t.Fatal("first leaf not signed by the first issuer")
	}

	_, replaced := f.ca.Issuer()
	next := f.pki.RotateIssuer(t)
	next.WriteSecret(t, f.dir)
	select {
	case <-replaced:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not pick up the rotated Secret")
	}
	iss, _ := f.ca.Issuer()
	if !iss.Certificate().Equal(next.Issuer) {
		t.Fatal("current issuer is not the rotated one")
	}
	leaf := signWith(t, f.ca, id)
	if err := leaf.Certificate.CheckSignatureFrom(next.Issuer); err != nil {
		t.Errorf("leaf after rotation not signed by the new issuer: %v", err)
	}
	if got := f.reloads("success"); got != 2 {
		t.Errorf("successful loads = %v, want 2", got)
	}
}

func TestReloadKeepsIssuerOnBadFiles(t *testing.T) {
	f := newFixture(t, time.Hour)
	good := f.pki.SecretFiles(t)
	other := identitytest.NewCA(t).SecretFiles(t)
	expired := f.pki.RotateIssuer(t, identitytest.WithNow(time.Now().Add(-48*time.Hour)), identitytest.WithIssuerValidity(time.Hour)).SecretFiles(t)
	tests := []struct {
		name    string
		change  func(map[string][]byte)
		wantErr string
	}{
		{"corrupt certificate", func(m map[string][]byte) {
			m[ca.CertFile] = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
		}, "issuer certificate"},
		{"key of another issuer", func(m map[string][]byte) { m[ca.KeyFile] = other[ca.KeyFile] }, "does not match"},
		{"issuer of another anchor", func(m map[string][]byte) { m[ca.CertFile], m[ca.KeyFile] = other[ca.CertFile], other[ca.KeyFile] }, "does not chain"},
		{"expired issuer", func(m map[string][]byte) { m[ca.CertFile], m[ca.KeyFile] = expired[ca.CertFile], expired[ca.KeyFile] }, "not valid at this time"},
		{"empty anchors", func(m map[string][]byte) { m[ca.AnchorsFile] = nil }, "trust anchors"},
		{"key file missing", func(m map[string][]byte) { delete(m, ca.KeyFile) }, ca.KeyFile},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := make(map[string][]byte)
			for k, v := range good {
				files[k] = v
			}
			tc.change(files)
			f.dir.Write(t, files)
			err := f.ca.Reload()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Reload error = %v, want one saying %q", err, tc.wantErr)
			}
			// Polling the same bad content again reports it again but
			// neither counts nor logs it twice.
			if err := f.ca.Reload(); err == nil {
				t.Fatal("second Reload of the same bad files succeeded")
			}
			if got, want := f.reloads("error"), float64(i+1); got != want {
				t.Errorf("failed loads = %v, want %v", got, want)
			}
			if got := strings.Count(f.logs.String(), "issuer not reloaded"); got != i+1 {
				t.Errorf("logged %d reload failures, want %d", got, i+1)
			}
			iss, _ := f.ca.Issuer()
			if !iss.Certificate().Equal(f.pki.Issuer) {
				t.Fatal("the issuer changed after a bad reload")
			}
			if leaf := signWith(t, f.ca, f.pki.ID("shop", "web")); leaf.Certificate.CheckSignatureFrom(f.pki.Issuer) != nil {
				t.Error("leaf not signed by the old issuer")
			}
			f.dir.Write(t, good) // back to the good files for the next case
			if err := f.ca.Reload(); err != nil {
				t.Fatalf("Reload of the original files: %v", err)
			}
		})
	}
}

func TestNewFailsWithoutIssuer(t *testing.T) {
	pki := identitytest.NewCA(t, identitytest.WithTrustDomain("other.example"))
	wrongTD := identitytest.NewSecretDir(t)
	pki.WriteSecret(t, wrongTD)
	plain := t.TempDir() // not a kubelet volume: plain files are read too
	for name, b := range identitytest.NewCA(t).SecretFiles(t) {
		if err := os.WriteFile(filepath.Join(plain, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		cfg     ca.Config
		wantErr string // "" means New succeeds
	}{
		{"no directory", ca.Config{}, "no issuer directory"},
		{"empty directory", ca.Config{Dir: t.TempDir()}, ca.CertFile},
		{"issuer of another trust domain", ca.Config{Dir: wrongTD.Path}, "other.example"},
		{"plain files", ca.Config{Dir: plain}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.New(tc.cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("New error = %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

func TestExpiryGauge(t *testing.T) {
	f := newFixture(t, time.Hour)
	got := gathered(f.reg, "mesh_identity_issuer_expiry_timestamp_seconds", "")
	if want := float64(f.pki.Issuer.NotAfter.Unix()); got != want {
		t.Errorf("issuer expiry gauge = %v, want %v", got, want)
	}
}
