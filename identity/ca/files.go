package ca

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Files of the mesh-identity-issuer Secret (type kubernetes.io/tls, see
// install/manifests/20-identity.yaml) mounted as a directory.
const (
	CertFile    = "tls.crt" // issuer certificate, then any intermediates
	KeyFile     = "tls.key" // issuer private key
	AnchorsFile = "ca.crt"  // trust anchors
)

// dataLink is the symlink kubelet points at the current copy of a Secret
// volume's files; it replaces the link in one rename on every update, so
// reading through it sees one consistent copy.
const dataLink = "..data"

// maxFileSize bounds each file read: a chain of a few certificates is a few
// KiB, and a file far larger is a mistake worth refusing early.
const maxFileSize = 1 << 20

// files is the content of the three files at one moment.
type files struct {
	cert, key, anchors []byte
}

// readFiles reads the Secret's files from dir. When dir is a kubelet
// Secret volume, it reads through the resolved ..data link, so a rotation
// landing between two reads cannot pair a new certificate with an old key.
func readFiles(dir string) (files, error) {
	base := dir
	target, err := filepath.EvalSymlinks(filepath.Join(dir, dataLink))
	switch {
	case err == nil:
		base = target
	case !errors.Is(err, fs.ErrNotExist):
		return files{}, fmt.Errorf("read %s: %w", dir, err)
	}
	var f files
	for _, p := range []struct {
		name string
		dst  *[]byte
	}{{CertFile, &f.cert}, {KeyFile, &f.key}, {AnchorsFile, &f.anchors}} {
		b, err := readFile(filepath.Join(base, p.name))
		if err != nil {
			return files{}, err
		}
		*p.dst = b
	}
	return f, nil
}

func readFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err // names the path already
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("read %s: %d bytes, at most %d allowed", path, fi.Size(), maxFileSize)
	}
	return os.ReadFile(path)
}

// hash identifies the content, so the poll loop parses only what changed.
func (f files) hash() [sha256.Size]byte {
	h := sha256.New()
	for _, b := range [][]byte{f.cert, f.key, f.anchors} {
		// Length-prefixed, so moving bytes from one file to the next
		// changes the hash.
		_ = binary.Write(h, binary.BigEndian, uint64(len(b)))
		h.Write(b)
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}
