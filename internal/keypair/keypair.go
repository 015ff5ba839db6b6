// Package keypair serves a TLS certificate from a mounted
// kubernetes.io/tls Secret, reading it again when the files change: `mesh
// install` renews the webhook's and the tap API's Secrets in place, the
// kubelet swaps the mounted files, and the servers must pick the new
// certificate up without a restart.
package keypair

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Files of a kubernetes.io/tls Secret mounted as a directory.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// KeyPair serves the certificate in a directory. GetCertificate is safe for
// concurrent use.
type KeyPair struct {
	certPath, keyPath string
	name              string // what the certificate is, for logs and errors
	log               *slog.Logger

	mu     sync.Mutex // guards the fields below
	cert   *tls.Certificate
	stamps [2]stamp // of the files cert was loaded from
	bad    [2]stamp // of the files that last failed to load, not retried
}

// stamp tells whether a file changed without reading it.
type stamp struct {
	mod  time.Time
	size int64
}

// New returns the key pair of dir's tls.crt and tls.key; name says what it
// is ("webhook certificate") in logs and errors.
func New(dir, name string, log *slog.Logger) *KeyPair {
	return &KeyPair{certPath: filepath.Join(dir, CertFile), keyPath: filepath.Join(dir, KeyFile), name: name, log: log}
}

// GetCertificate is for tls.Config: it stats both files on each handshake
// and reads them again only when either changed. While a rotation is half
// written (a new certificate with the old key), it keeps serving the last
// good pair.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	stamps, err := k.stat()
	if err == nil && k.cert != nil && (stamps == k.stamps || stamps == k.bad) {
		return k.cert, nil
	}
	if err == nil {
		var cert tls.Certificate
		if cert, err = tls.LoadX509KeyPair(k.certPath, k.keyPath); err == nil {
			if k.cert != nil {
				k.log.Info(k.name+" reloaded", "path", k.certPath)
			}
			k.cert, k.stamps = &cert, stamps
			return k.cert, nil
		}
	}
	if k.cert == nil {
		return nil, fmt.Errorf("%s: %w (from the Secret mounted at %s)", k.name, err, filepath.Dir(k.certPath))
	}
	k.bad = stamps
	k.log.Warn(k.name+" not reloaded; serving the previous one", "err", err)
	return k.cert, nil
}

func (k *KeyPair) stat() ([2]stamp, error) {
	var out [2]stamp
	for i, p := range []string{k.certPath, k.keyPath} {
		fi, err := os.Stat(p) // follows the Secret volume's symlinks
		if err != nil {
			return out, err
		}
		out[i] = stamp{fi.ModTime(), fi.Size()}
	}
	return out, nil
}
