package identitytest_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/identity/ca"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestIssueSVID(t *testing.T) {
	pki := identitytest.NewCA(t, identitytest.WithTrustDomain("example.org"))
	id := pki.ID("shop", "web")
	svid := pki.IssueSVID(t, id)
	got, _, err := x509svid.Verify(svid.Certificates, x509bundle.NewSet(pki.Bundle()))
	if err != nil || got != id {
		t.Fatalf("SVID verifies as %q, %v; want %q", got, err, id)
	}
	if id.String() != "spiffe://example.org/ns/shop/sa/web" {
		t.Errorf("ID = %q", id)
	}
}

// TestSecretDir checks the layout kubelet gives a Secret volume: names are
// symlinks through ..data, and a write swaps ..data and drops the old copy.
func TestSecretDir(t *testing.T) {
	d := identitytest.NewSecretDir(t)
	d.Write(t, map[string][]byte{ca.CertFile: []byte("one")})
	first, err := os.Readlink(filepath.Join(d.Path, "..data"))
	if err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(d.Path, ca.CertFile)); err != nil || target != filepath.Join("..data", ca.CertFile) {
		t.Fatalf("%s links to %q, %v; want ..data/%s", ca.CertFile, target, err, ca.CertFile)
	}
	d.Write(t, map[string][]byte{ca.CertFile: []byte("two")})
	if b, err := os.ReadFile(filepath.Join(d.Path, ca.CertFile)); err != nil || !bytes.Equal(b, []byte("two")) {
		t.Fatalf("after the second write %s = %q, %v", ca.CertFile, b, err)
	}
	if _, err := os.Stat(filepath.Join(d.Path, first)); !os.IsNotExist(err) {
		t.Errorf("the first copy %s is still there: %v", first, err)
	}
}
