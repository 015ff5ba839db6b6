package identitytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// SecretDir is a directory laid out the way kubelet lays out a Secret
// volume: each file is a symlink through ..data, which points at a
// timestamped directory holding the real files. Write replaces them the way
// kubelet's atomic writer does, by swapping ..data in one rename.
type SecretDir struct {
	// Path is the directory a pod would see as the mount point.
	Path string
}

// NewSecretDir returns an empty SecretDir in a test temporary directory.
func NewSecretDir(t testing.TB) *SecretDir {
	t.Helper()
	return &SecretDir{Path: t.TempDir()}
}

// Write makes files, by name, the content of the volume: it writes them to
// a new hidden directory, points ..data at it atomically, links any new
// names through ..data and removes the previous directory.
func (d *SecretDir) Write(t testing.TB, files map[string][]byte) {
	t.Helper()
	data := filepath.Join(d.Path, "..data")
	old, _ := os.Readlink(data)
	dir, err := os.MkdirTemp(d.Path, "..gen_")
	if err != nil {
		t.Fatalf("identitytest: %v", err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatalf("identitytest: %v", err)
		}
	}
	tmp := filepath.Join(d.Path, "..data_tmp")
	if err := os.Symlink(filepath.Base(dir), tmp); err != nil {
		t.Fatalf("identitytest: %v", err)
	}
	if err := os.Rename(tmp, data); err != nil {
		t.Fatalf("identitytest: swap ..data: %v", err)
	}
	for name := range files {
		link := filepath.Join(d.Path, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatalf("identitytest: %v", err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(d.Path, old)); err != nil {
			t.Fatalf("identitytest: %v", err)
		}
	}
}

// WriteSecret writes c's mesh-identity-issuer Secret files into d.
func (c *CA) WriteSecret(t testing.TB, d *SecretDir) {
	t.Helper()
	d.Write(t, c.SecretFiles(t))
}

// NewCSR returns a DER certificate signing request for id, as a proxy sends
// it, with its new P-256 key.
func NewCSR(t testing.TB, id spiffeid.ID) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("identitytest: generate key: %v", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		t.Fatalf("identitytest: CSR: %v", err)
	}
	return der, key
}
