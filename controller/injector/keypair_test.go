package injector

import (
	"github.com/mesh-dev/mesh/internal/keypair"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/mesh-dev/mesh/controller/injector/injectortest"
)

// servedSerial makes a new TLS connection to s and returns the serial of
// the certificate the server presents.
func (s *server) servedSerial(t testing.TB) *big.Int {
	t.Helper()
	resp, err := s.ca.Client().Get(s.url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber
}

func TestCertificateReload(t *testing.T) {
	s := startServer(t, serverOptions{})
	first := s.servedSerial(t)

	// Rotation, as a Secret update does it: both files replaced.
	second := s.ca.WriteServing(t, s.tlsDir).SerialNumber
	if got := s.servedSerial(t); got.Cmp(second) != 0 || got.Cmp(first) == 0 {
		t.Fatalf("after rotation the server presents serial %v, want %v", got, second)
	}

	// Half a rotation: a new certificate with the old key. The last good
	// pair is served meanwhile.
	other := t.TempDir()
	s.ca.WriteServing(t, other)
	oldKey, err := os.ReadFile(filepath.Join(s.tlsDir, keypair.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	newCert, err := os.ReadFile(filepath.Join(other, keypair.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	injectortest.WriteFiles(t, s.tlsDir, newCert, oldKey)
	if got := s.servedSerial(t); got.Cmp(second) != 0 {
		t.Fatalf("with a mismatched pair the server presents serial %v, want the previous %v", got, second)
	}

	// The rest of the rotation arrives.
	third := s.ca.WriteServing(t, s.tlsDir).SerialNumber
	if got := s.servedSerial(t); got.Cmp(third) != 0 {
		t.Fatalf("after the rotation completed the server presents serial %v, want %v", got, third)
	}
}
