// Package client is the proxy's side of mesh identity. It obtains the
// proxy's X509-SVID from mesh-controller's identity service
// (api/identity/v1), renews it before it expires, follows the trust bundle
// the controller streams, and hands both out through go-spiffe's
// x509svid.Source and x509bundle.Source, which the TLS configs of
// identity/meshtls read on every handshake. The proxy runs a second Source
// of the same identity for the application, with its own keys, which
// identity/workloadapi serves, so the proxy's key never leaves the proxy.
//
// Every request uses a new ECDSA P-256 key made in memory; keys are never
// written to disk. The ServiceAccount token is re-read for every request
// because kubelet rotates the projected file under us.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/identity/pki"
	"github.com/mesh-dev/mesh/internal/names"
)

// Defaults of the zero Config fields.
const (
	// DefaultTrustDomain is the trust domain of a mesh installed without
	// one (DESIGN.md).
	DefaultTrustDomain = pki.DefaultTrustDomain
	// DefaultTokenPath is where the injector projects the pod's
	// ServiceAccount token with the identity service's audience.
	DefaultTokenPath = names.IdentityTokenDir + "/" + names.IdentityTokenFile
	// DefaultRequestTimeout bounds one Certify call.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultMinBackoff and DefaultMaxBackoff bound the delay between
	// retries after a failure.
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
	// DefaultExpiryMargin is how close to its expiry a certificate that
	// cannot be renewed makes Health fail, for certificates that arrived
	// with more than five times as long left (see expiryMargin).
	DefaultExpiryMargin = 5 * time.Minute
)

// renewFraction is how much of a certificate's remaining validity, counted
// from when it arrived, passes before it is renewed: 70% leaves the last
// 30% (over 7 hours of a day-long certificate) to ride out a controller
// outage with a certificate peers still accept.
const renewFraction = 0.7

// Errors callers can test with errors.Is.
var (
	// ErrNotReady: no certificate has been obtained yet.
	ErrNotReady = errors.New("identity: no certificate yet")
	// ErrInvalidCertificate: the controller answered with a certificate
	// or trust bundle the client refuses to use; the error it wraps says
	// why.
	ErrInvalidCertificate = errors.New("identity: unusable certificate from the controller")
)

// ExpiryError is Health's answer when the certificate is about to expire,
// or has, and renewing it fails. It unwraps to the renewal's error.
type ExpiryError struct {
	// NotAfter is when the current certificate expires.
	NotAfter time.Time
	// Expired is true once NotAfter has passed.
	Expired bool
	// Renewal is the error of the latest renewal attempt; nil when none
	// has failed yet (the certificate ran out while one was under way).
	Renewal error
}

func (e *ExpiryError) Error() string {
	verb := "expires"
	if e.Expired {
		verb = "expired"
	}
	msg := fmt.Sprintf("identity certificate %s at %s", verb, e.NotAfter.UTC().Format(time.RFC3339))
	if e.Renewal == nil {
		return msg + "; renewal pending"
	}
	return msg + " and renewal fails: " + e.Renewal.Error()
}

func (e *ExpiryError) Unwrap() error { return e.Renewal }

// Config says who the proxy is and where to ask for its certificate.
type Config struct {
	// TrustDomain is the SPIFFE trust domain name, e.g. "cluster.local";
	// "" means DefaultTrustDomain.
	TrustDomain string
	// Namespace and ServiceAccount of the pod; both are required. The
	// proxy's ID is spiffe://<TrustDomain>/ns/<Namespace>/sa/<ServiceAccount>.
	Namespace      string
	ServiceAccount string
	// TokenPath is the file holding the projected ServiceAccount token;
	// "" means DefaultTokenPath.
	TokenPath string
	// Conn reaches mesh-controller's identity service; required. The
	// caller dials and closes it.
	Conn grpc.ClientConnInterface
	// RequestTimeout bounds each Certify call; 0 means
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay between retries after a
	// failed request or a broken trust-bundle stream; 0 means
	// DefaultMinBackoff and DefaultMaxBackoff. A certificate is never
	// renewed sooner than MinBackoff after the previous one arrived.
	MinBackoff, MaxBackoff time.Duration
	// BundleFrom, when set, is a Source of the same trust domain whose
	// trust bundle this one follows instead of opening a trust-bundle
	// stream of its own: the proxy's Source for the application follows
	// the proxy's, so a pod holds one stream. Nil means open a stream.
	BundleFrom *Source
	// Clock is read for verification and scheduling; nil means the
	// system clock.
	Clock Clock
	// Log receives renewals and failures; nil discards them.
	Log *slog.Logger
}

// Source holds the proxy's current X509-SVID and trust bundle and keeps
// them fresh while Run runs. It implements x509svid.Source and
// x509bundle.Source; all its methods are safe for concurrent use.
//
// A renewal that fails leaves the current certificate in place, even once
// it has expired: peers then refuse it, which is the same outcome as
// having none, but the failure is logged at error level on every retry
// and the proxy keeps the certificate it will need the moment a handshake
// could succeed again (a peer with a skewed clock, say).
type Source struct {
	cfg   Config
	id    spiffeid.ID
	api   identityv1.IdentityClient
	clock Clock
	log   *slog.Logger

	ready     chan struct{} // closed when the first certificate is held
	readyOnce sync.Once
	// renewNow asks the renewal loop to renew at once; it holds at most
	// one request, sent when a new trust bundle no longer verifies the
	// current certificate.
	renewNow chan struct{}
	running  atomic.Bool

	mu    sync.Mutex            // serialises writers of state
	state atomic.Pointer[state] // read without mu
	// renewalErr is the error of the latest Certify attempt, nil once one
	// succeeds; written only by the renewal loop, read by Health.
	renewalErr atomic.Pointer[error]
}

// The interfaces the TLS configs and go-spiffe read.
var (
	_ x509svid.Source   = (*Source)(nil)
	_ x509bundle.Source = (*Source)(nil)
)

// state is one consistent, immutable view of the identity material.
type state struct {
	svid   *x509svid.SVID     // nil until the first certificate
	bundle *x509bundle.Bundle // nil until the first bundle
	// received is when svid arrived, by the Source's clock.
	received time.Time
	// bundleFromWatch is true while bundle came from the trust-bundle
	// stream that is still open: that stream is then the authority on the
	// bundle, and bundles riding on Certify answers (possibly older) do
	// not replace it.
	bundleFromWatch bool
	// changed is closed when svid or bundle is replaced.
	changed chan struct{}
}

// New checks cfg and returns a Source holding nothing yet; Run fills it.
func New(cfg Config) (*Source, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("identity: trust domain %q: %w", cfg.TrustDomain, err)
	}
	if cfg.BundleFrom != nil && cfg.BundleFrom.id.TrustDomain() != td {
		return nil, fmt.Errorf("identity: BundleFrom is of trust domain %q, not %q", cfg.BundleFrom.id.TrustDomain().Name(), td.Name())
	}
	id, err := spiffeid.FromSegments(td, "ns", cfg.Namespace, "sa", cfg.ServiceAccount)
	if err != nil {
		return nil, fmt.Errorf("identity: namespace %q, service account %q: %w", cfg.Namespace, cfg.ServiceAccount, err)
	}
	s := &Source{
		cfg:      cfg,
		id:       id,
		api:      identityv1.NewIdentityClient(cfg.Conn),
		clock:    cfg.Clock,
		log:      cfg.Log.With("identity", id.String()),
		ready:    make(chan struct{}),
		renewNow: make(chan struct{}, 1),
	}
	s.state.Store(&state{changed: make(chan struct{})})
	return s, nil
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Namespace == "" || c.ServiceAccount == "":
		return c, errors.New("identity: namespace and service account are required")
	case c.Conn == nil:
		return c, errors.New("identity: no connection to the identity service")
	case c.RequestTimeout < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0:
		return c, errors.New("identity: timeouts and backoffs must not be negative")
	}
	if c.TrustDomain == "" {
		c.TrustDomain = DefaultTrustDomain
	}
	if c.TokenPath == "" {
		c.TokenPath = DefaultTokenPath
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		return c, fmt.Errorf("identity: max backoff %s is below min backoff %s", c.MaxBackoff, c.MinBackoff)
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// ID returns the SPIFFE ID the proxy asks for.
func (s *Source) ID() spiffeid.ID { return s.id }

// Ready returns a channel closed once the first certificate is held; the
// proxy should not report ready before.
func (s *Source) Ready() <-chan struct{} { return s.ready }

// Health returns nil while the proxy holds a certificate it can go on
// using: ErrNotReady before the first one (wrapping the last request's
// error too, once one has failed), and an *ExpiryError once the
// certificate has expired, or is within its expiry margin and the latest
// attempt to renew it failed. The margin is a fifth of the validity the
// certificate had left when it arrived, at most DefaultExpiryMargin:
// renewal starts at 70% of that validity, so a healthy proxy never gets
// there, and one that does has been failing to renew for a while. The
// proxy's /ready reports it, so that a pod about to present a certificate
// peers refuse is taken out of its Services first.
func (s *Source) Health() error {
	st := s.state.Load()
	var renewal error
	if p := s.renewalErr.Load(); p != nil {
		renewal = *p
	}
	if st.svid == nil {
		if renewal != nil {
			return fmt.Errorf("%w; the last request failed: %w", ErrNotReady, renewal)
		}
		return ErrNotReady
	}
	notAfter := st.svid.Certificates[0].NotAfter
	now := s.clock.Now()
	switch {
	case !now.Before(notAfter):
		return &ExpiryError{NotAfter: notAfter, Expired: true, Renewal: renewal}
	case renewal != nil && notAfter.Sub(now) <= expiryMargin(notAfter.Sub(st.received)):
		return &ExpiryError{NotAfter: notAfter, Renewal: renewal}
	}
	return nil
}

// expiryMargin returns Health's margin for a certificate that arrived with
// validity left: a fifth of it, at most DefaultExpiryMargin. Of a day-long
// certificate that is the last five minutes; of a minute-long one, as
// tests use, the last twelve seconds, after six of failed retries.
func expiryMargin(validity time.Duration) time.Duration {
	return min(validity/5, DefaultExpiryMargin)
}

// GetX509SVID returns the current X509-SVID, or ErrNotReady before the
// first. The result is shared and must not be modified.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	st := s.state.Load()
	if st.svid == nil {
		return nil, ErrNotReady
	}
	return st.svid, nil
}

// GetX509BundleForTrustDomain returns the current trust bundle if td is
// the proxy's trust domain. The result is shared and must not be
// modified.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != s.id.TrustDomain() {
		return nil, fmt.Errorf("identity: no trust bundle for trust domain %q, only for %q", td.Name(), s.id.TrustDomain().Name())
	}
	st := s.state.Load()
	if st.bundle == nil {
		return nil, fmt.Errorf("identity: trust bundle for %q: %w", td.Name(), ErrNotReady)
	}
	return st.bundle, nil
}

// Current returns the SVID and bundle held now (nil before the first of
// each) and a channel closed when either is next replaced, so a
// subscriber that loops on Current never misses an update.
func (s *Source) Current() (*x509svid.SVID, *x509bundle.Bundle, <-chan struct{}) {
	st := s.state.Load()
	return st.svid, st.bundle, st.changed
}

// Run obtains the first certificate, renews it at 70% of its validity,
// and follows the trust-bundle stream, retrying every failure with
// jittered exponential backoff, until ctx is done. It returns nil then;
// it may be called once.
func (s *Source) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("identity: Run called twice")
	}
	var wg sync.WaitGroup
	if s.cfg.BundleFrom != nil {
		wg.Go(func() { s.followBundle(ctx, s.cfg.BundleFrom) })
	} else {
		wg.Go(func() { s.watchBundle(ctx) })
	}
	s.renew(ctx)
	wg.Wait()
	return nil
}

// publish replaces the state by next and, if notify, wakes every
// subscriber. Callers hold s.mu.
func (s *Source) publish(next state, notify bool) {
	prev := s.state.Load()
	if notify {
		next.changed = make(chan struct{})
	} else {
		next.changed = prev.changed
	}
	s.state.Store(&next)
	if notify {
		close(prev.changed)
	}
	if next.svid != nil {
		s.readyOnce.Do(func() { close(s.ready) })
	}
}

// sleep waits for d, for a request to renew now when wake is not nil, or
// for ctx.
func (s *Source) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	t := s.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
