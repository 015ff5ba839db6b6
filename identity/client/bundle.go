package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/internal/backoff"
)

// errStreamClosed reports a trust-bundle stream the controller ended
// without an error.
var errStreamClosed = errors.New("the controller closed the trust-bundle stream")

// watchBundle follows WatchTrustBundle until ctx is done, reconnecting
// with backoff whenever the stream breaks, so a new trust anchor reaches
// the proxy without a restart.
func (s *Source) watchBundle(ctx context.Context) {
	bo := backoff.Backoff{Min: s.cfg.MinBackoff, Max: s.cfg.MaxBackoff}
	for {
		err := s.watchOnce(ctx, &bo)
		s.streamEnded()
		if ctx.Err() != nil {
			return
		}
		wait := bo.Next()
		s.log.Warn("trust bundle stream broke; reconnecting", "err", err, "retry_in", wait)
		if s.sleep(ctx, wait, nil) != nil {
			return
		}
	}
}

// watchOnce reads one WatchTrustBundle stream until it fails. A bundle the
// client cannot use ends the stream too: reconnecting gets the current
// bundle afresh, while skipping it would leave the proxy on an old one
// that the controller believes replaced.
func (s *Source) watchOnce(ctx context.Context, bo *backoff.Backoff) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.api.WatchTrustBundle(ctx, &identityv1.WatchTrustBundleRequest{})
	if err != nil {
		return fmt.Errorf("watch trust bundle: %w", err)
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errStreamClosed
		}
		if err != nil {
			return fmt.Errorf("watch trust bundle: %w", err)
		}
		b, err := parseBundle(msg, s.id.TrustDomain())
		if err != nil {
			return err
		}
		bo.Reset()
		s.setWatchedBundle(b)
	}
}

// followBundle mirrors from's trust bundle until ctx is done: while from
// holds one from its open stream, so does s (renewing at once if it no
// longer verifies s's certificate); otherwise s takes the bundles of its
// own Certify answers. A change of from's stream state that replaces no
// bundle reaches s at from's next change.
func (s *Source) followBundle(ctx context.Context, from *Source) {
	for {
		st := from.state.Load()
		if st.bundle != nil && st.bundleFromWatch {
			s.setWatchedBundle(st.bundle)
		} else {
			s.streamEnded()
		}
		select {
		case <-st.changed:
		case <-ctx.Done():
			return
		}
	}
}

// setWatchedBundle installs a bundle from the stream. When the current
// certificate no longer verifies against it (its root was removed), it
// asks for a new certificate at once instead of waiting for the schedule.
func (s *Source) setWatchedBundle(b *x509bundle.Bundle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.state.Load()
	next := *cur
	next.bundle, next.bundleFromWatch = b, true
	changed := cur.bundle == nil || !cur.bundle.Equal(b)
	if !changed {
		next.bundle = cur.bundle
	}
	s.publish(next, changed)
	if !changed {
		return
	}
	s.log.Info("trust bundle updated", "authorities", len(b.X509Authorities()))
	if cur.svid == nil {
		return
	}
	if _, _, err := x509svid.Verify(cur.svid.Certificates, b, x509svid.WithTime(s.clock.Now())); err != nil {
		s.log.Warn("the new trust bundle does not verify the current certificate; renewing now", "err", err)
		select {
		case s.renewNow <- struct{}{}:
		default:
		}
	}
}

// streamEnded records that the held bundle no longer comes from an open
// stream; from now on the bundles on Certify answers are the newest the
// proxy can get.
func (s *Source) streamEnded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.state.Load()
	if !cur.bundleFromWatch {
		return
	}
	next := *cur
	next.bundleFromWatch = false
	s.publish(next, false)
}
