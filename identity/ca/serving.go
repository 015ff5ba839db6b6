package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ServingCertificate returns a tls.Config.GetCertificate callback that
// serves an X509-SVID for id signed by the CA itself: the identity
// service's own certificate, so that a proxy sending its token can check
// with the trust bundle alone that it talks to the controller (for
// example with go-spiffe's tlsconfig.AuthorizeID), before it has an SVID.
//
// The key is made on first use and kept; the certificate is signed again
// when half of it has run out or the issuer has changed. The callback is
// safe for concurrent use; a handshake that finds the issuer unable to
// sign fails with the reason.
func (c *CA) ServingCertificate(id spiffeid.ID) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s := &serving{ca: c, id: id}
	return s.get
}

// serving caches the identity service's own certificate.
type serving struct {
	ca *CA
	id spiffeid.ID

	mu      sync.Mutex // guards the fields below
	key     *ecdsa.PrivateKey
	cert    *tls.Certificate
	issuer  *Issuer   // that signed cert
	renewAt time.Time // half way through cert's validity
}

func (s *serving) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	iss, _ := s.ca.Issuer()
	now := s.ca.cfg.Clock()
	if s.cert != nil && s.issuer == iss && now.Before(s.renewAt) {
		return s.cert, nil
	}
	if s.key == nil {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("serving certificate: %w", err)
		}
		s.key = key
	}
	leaf, err := iss.Sign(s.key.Public(), s.id, now, s.ca.cfg.Lifetime)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	chain := [][]byte{leaf.Certificate.Raw}
	for _, c := range leaf.Intermediates {
		chain = append(chain, c.Raw)
	}
	s.cert = &tls.Certificate{Certificate: chain, PrivateKey: s.key, Leaf: leaf.Certificate}
	s.issuer = iss
	s.renewAt = now.Add(leaf.Certificate.NotAfter.Sub(now) / 2)
	return s.cert, nil
}
