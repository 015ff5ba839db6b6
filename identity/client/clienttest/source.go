package clienttest

import (
	"fmt"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Source is an X509-SVID and trust-bundle source that a test sets by
// hand, with the same methods as client.Source: x509svid.Source,
// x509bundle.Source and Current. It is safe for concurrent use.
type Source struct {
	mu      sync.Mutex // guards the fields below
	svid    *x509svid.SVID
	bundle  *x509bundle.Bundle
	changed chan struct{}
}

var (
	_ x509svid.Source   = (*Source)(nil)
	_ x509bundle.Source = (*Source)(nil)
)

// NewSource returns a Source holding svid and bundle; either may be nil.
func NewSource(svid *x509svid.SVID, bundle *x509bundle.Bundle) *Source {
	return &Source{svid: svid, bundle: bundle, changed: make(chan struct{})}
}

// Set replaces the SVID and bundle, as a rotation does, and wakes
// subscribers.
func (s *Source) Set(svid *x509svid.SVID, bundle *x509bundle.Bundle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.svid, s.bundle = svid, bundle
	close(s.changed)
	s.changed = make(chan struct{})
}

// GetX509SVID implements x509svid.Source.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.svid == nil {
		return nil, fmt.Errorf("clienttest: no SVID set")
	}
	return s.svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bundle == nil || s.bundle.TrustDomain() != td {
		return nil, fmt.Errorf("clienttest: no bundle for trust domain %q", td.Name())
	}
	return s.bundle, nil
}

// Current returns the SVID and bundle and a channel closed by the next
// Set.
func (s *Source) Current() (*x509svid.SVID, *x509bundle.Bundle, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svid, s.bundle, s.changed
}
