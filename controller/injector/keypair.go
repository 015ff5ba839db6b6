package injector

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
	certFile = "tls.crt"
	keyFile  = "tls.key"
)

// keyPair serves the certificate in a directory, reloading it when the
// files change: Kubernetes updates a mounted Secret in place when the
// certificate is rotated, and the webhook must not need a restart.
// GetCertificate is safe for concurrent use.
type keyPair struct {
	certPath, keyPath string
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

func newKeyPair(dir string, log *slog.Logger) *keyPair {
	return &keyPair{certPath: filepath.Join(dir, certFile), keyPath: filepath.Join(dir, keyFile), log: log}
}

// GetCertificate is for tls.Config: it stats both files on each handshake
// and reads them again only when either changed. While a rotation is half
// written (a new certificate with the old key), it keeps serving the last
// good pair.
func (k *keyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
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
				k.log.Info("webhook certificate reloaded", "path", k.certPath)
			}
			k.cert, k.stamps = &cert, stamps
			return k.cert, nil
		}
	}
	if k.cert == nil {
		return nil, fmt.Errorf("webhook certificate: %w", err)
	}
	k.bad = stamps
	k.log.Warn("webhook certificate not reloaded; serving the previous one", "err", err)
	return k.cert, nil
}

func (k *keyPair) stat() ([2]stamp, error) {
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
