package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/status"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/internal/backoff"
)

// maxTokenSize bounds the token file read: a projected ServiceAccount
// token is a JWT of a kilobyte or two, and a larger file is a mistake we
// should report instead of sending.
const maxTokenSize = 64 << 10

// renew is the renewal loop: certify, wait until 70% of the certificate's
// remaining validity has passed (or for a backoff after a failure), and
// again, until ctx is done.
func (s *Source) renew(ctx context.Context) {
	bo := backoff.Backoff{Min: s.cfg.MinBackoff, Max: s.cfg.MaxBackoff}
	var wait time.Duration
	for {
		if err := s.sleep(ctx, wait, s.renewNow); err != nil {
			return
		}
		svid, err := s.certify(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.renewalErr.Store(&err)
			wait = bo.Next()
			s.logFailure(err, wait)
			continue
		}
		s.renewalErr.Store(nil)
		bo.Reset()
		wait = s.untilRenewal(svid)
		leaf := svid.Certificates[0]
		s.log.Info("identity certificate issued", "serial", leaf.SerialNumber.Text(16),
			"not_after", leaf.NotAfter, "renew_in", wait)
	}
}

// untilRenewal returns how long to wait before renewing svid: 70% of the
// validity it has left now, when it has just arrived. Counting from
// arrival rather than from NotBefore keeps the controller's backdating of
// NotBefore (for clock skew) from eating into the schedule. It is never
// less than MinBackoff, so a controller handing out nearly expired
// certificates is not asked again in a tight loop.
func (s *Source) untilRenewal(svid *x509svid.SVID) time.Duration {
	left := svid.Certificates[0].NotAfter.Sub(s.clock.Now())
	return max(time.Duration(float64(left)*renewFraction), s.cfg.MinBackoff)
}

// logFailure reports a failed request, louder the worse off the proxy is.
func (s *Source) logFailure(err error, retry time.Duration) {
	attrs := []any{"err", err, "code", status.Code(err).String(), "retry_in", retry}
	svid, _ := s.GetX509SVID()
	switch {
	case svid == nil:
		s.log.Warn("no identity certificate yet; the proxy stays unready", attrs...)
	case !s.clock.Now().Before(svid.Certificates[0].NotAfter):
		s.log.Error("identity certificate EXPIRED and could not be renewed: peers refuse mTLS with this proxy until the controller answers",
			append(attrs, "expired_at", svid.Certificates[0].NotAfter)...)
	default:
		s.log.Warn("could not renew the identity certificate; still using the current one",
			append(attrs, "not_after", svid.Certificates[0].NotAfter)...)
	}
}

// certify asks for, checks and installs a new certificate.
func (s *Source) certify(ctx context.Context) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	csr, err := newCSR(s.id, key)
	if err != nil {
		return nil, err
	}
	token, err := readToken(s.cfg.TokenPath)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	resp, err := s.api.Certify(rctx, &identityv1.CertifyRequest{
		Identity:                  s.id.String(),
		Token:                     token,
		CertificateSigningRequest: csr,
	})
	if err != nil {
		return nil, fmt.Errorf("certify: %w", err)
	}
	svid, bundle, err := verifyResponse(resp, s.id, key, s.clock.Now())
	if err != nil {
		return nil, err
	}
	if err := s.adopt(svid, bundle); err != nil {
		return nil, err
	}
	return svid, nil
}

// newCSR returns a DER PKCS #10 request whose only subject alternative
// name is id (X509-SVID 2: one URI SAN); the subject stays empty because
// the ID is the whole identity.
func newCSR(id spiffeid.ID, key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return der, nil
}

// readToken reads the projected ServiceAccount token at path.
func readToken(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("service account token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenSize+1))
	if err != nil {
		return nil, fmt.Errorf("service account token %s: %w", path, err)
	}
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return nil, fmt.Errorf("service account token %s is empty", path)
	case len(b) > maxTokenSize:
		return nil, fmt.Errorf("service account token %s is larger than %d bytes", path, maxTokenSize)
	}
	return b, nil
}

// verifyResponse checks a Certify answer before anything of it is used:
// the trust bundle is for our trust domain, the leaf certifies our key,
// and the chain verifies as an X509-SVID of exactly our ID against that
// bundle at now. Errors wrap ErrInvalidCertificate.
func verifyResponse(resp *identityv1.CertifyResponse, want spiffeid.ID, key *ecdsa.PrivateKey, now time.Time) (*x509svid.SVID, *x509bundle.Bundle, error) {
	bundle, err := parseBundle(resp.GetTrustBundle(), want.TrustDomain())
	if err != nil {
		return nil, nil, err
	}
	leaf, err := x509.ParseCertificate(resp.GetLeafCertificate())
	if err != nil {
		return nil, nil, fmt.Errorf("%w: leaf: %v", ErrInvalidCertificate, err)
	}
	chain := []*x509.Certificate{leaf}
	for i, der := range resp.GetIntermediateCertificates() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: intermediate %d: %v", ErrInvalidCertificate, i, err)
		}
		chain = append(chain, c)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, nil, fmt.Errorf("%w: the leaf certifies another key than the one we sent", ErrInvalidCertificate)
	}
	got, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(now))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalidCertificate, err)
	}
	if got != want {
		return nil, nil, fmt.Errorf("%w: the leaf is for %q, we asked for %q", ErrInvalidCertificate, got, want)
	}
	return &x509svid.SVID{ID: got, Certificates: chain, PrivateKey: key}, bundle, nil
}

// parseBundle turns a TrustBundle from the controller into a go-spiffe
// bundle for td. Errors wrap ErrInvalidCertificate.
func parseBundle(tb *identityv1.TrustBundle, td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	switch {
	case tb == nil:
		return nil, fmt.Errorf("%w: no trust bundle", ErrInvalidCertificate)
	case tb.GetTrustDomain() != td.Name():
		return nil, fmt.Errorf("%w: trust bundle is for trust domain %q, we are in %q", ErrInvalidCertificate, tb.GetTrustDomain(), td.Name())
	case len(tb.GetX509Authorities()) == 0:
		return nil, fmt.Errorf("%w: trust bundle has no authorities", ErrInvalidCertificate)
	}
	roots := make([]*x509.Certificate, 0, len(tb.GetX509Authorities()))
	for i, der := range tb.GetX509Authorities() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: trust bundle authority %d: %v", ErrInvalidCertificate, i, err)
		}
		roots = append(roots, c)
	}
	return x509bundle.FromX509Authorities(td, roots), nil
}

// adopt installs a verified certificate with the bundle of its answer. If
// the trust-bundle stream is open, its bundle stays and the certificate
// must verify against it as well: an answer signed just before a root was
// removed would otherwise be presented to peers that no longer trust it,
// or put the old root back.
func (s *Source) adopt(svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.state.Load()
	next := state{svid: svid, bundle: bundle, received: s.clock.Now()}
	if cur.bundleFromWatch {
		if _, _, err := x509svid.Verify(svid.Certificates, cur.bundle, x509svid.WithTime(s.clock.Now())); err != nil {
			return fmt.Errorf("%w: it does not verify against the trust bundle the controller streams: %v", ErrInvalidCertificate, err)
		}
		next.bundle, next.bundleFromWatch = cur.bundle, true
	}
	s.publish(next, true)
	// The new certificate satisfies any renewal a bundle change asked for
	// before it; under s.mu no newer request can be lost here.
	select {
	case <-s.renewNow:
	default:
	}
	return nil
}
