package client_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mesh-dev/mesh/identity/client"
)

// TestHealthFollowsExpiry: a certificate that cannot be renewed makes
// Health fail from the start of its expiry margin (a fifth of the validity
// it arrived with, at most five minutes), saying when it expires and why
// renewal fails, and again once it has expired; the first renewal that
// succeeds makes it healthy again.
func TestHealthFollowsExpiry(t *testing.T) {
	tests := []struct {
		name     string
		lifetime time.Duration
		// wantMargin is the margin of a leaf that arrived with exactly
		// lifetime left; leaves carry whole seconds, so the test computes
		// it from the leaf and checks it against this within a second.
		wantMargin time.Duration
	}{
		{name: "day-long certificate", lifetime: 24 * time.Hour, wantMargin: client.DefaultExpiryMargin},
		{name: "hour-long certificate", lifetime: time.Hour, wantMargin: client.DefaultExpiryMargin},
		{name: "minute-long certificate", lifetime: time.Minute, wantMargin: 12 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, harnessConfig{lifetime: tc.lifetime})
			first := h.waitReady(t)
			received := h.clock.Now() // the fake clock has not moved
			if err := h.src.Health(); err != nil {
				t.Fatalf("Health with a fresh certificate = %v, want nil", err)
			}
			notAfter := first.Certificates[0].NotAfter
			margin := min(notAfter.Sub(received)/5, client.DefaultExpiryMargin)
			if d := tc.wantMargin - margin; d < 0 || d > time.Second {
				t.Fatalf("margin %s, want %s", margin, tc.wantMargin)
			}

			h.ctrl.SetFailure(status.Error(codes.Unavailable, "identity service down"))
			h.clock.Advance(h.clock.waitTimers(t, 1)[0]) // the renewal, which fails
			h.clock.waitTimers(t, 1)                     // its retry is set after the failure is recorded
			if err := h.src.Health(); err != nil {
				t.Fatalf("Health after one failed renewal, %s before expiry = %v, want nil", notAfter.Sub(h.clock.Now()), err)
			}

			// Just outside the margin, then at its start. The clock jumps
			// over the retries; each fails like the first.
			h.clock.Advance(notAfter.Add(-margin - time.Millisecond).Sub(h.clock.Now()))
			if err := h.src.Health(); err != nil {
				t.Fatalf("Health just before the margin = %v, want nil", err)
			}
			h.clock.Advance(time.Millisecond)
			checkExpiryError(t, h.src.Health(), notAfter, false)

			h.clock.Advance(margin)
			checkExpiryError(t, h.src.Health(), notAfter, true)

			h.ctrl.SetFailure(nil)
			h.clock.Advance(h.clock.waitTimers(t, 1)[0])
			h.waitFor(t, "a new certificate once the controller answers", func(svid *x509svid.SVID, _ *x509bundle.Bundle) bool {
				return svid != first
			})
			if err := h.src.Health(); err != nil {
				t.Errorf("Health after a successful renewal = %v, want nil", err)
			}
		})
	}
}

// checkExpiryError fails unless err is an *ExpiryError for notAfter whose
// message says when the certificate expires (or expired) and the
// controller's error.
func checkExpiryError(t *testing.T, err error, notAfter time.Time, expired bool) {
	t.Helper()
	var ee *client.ExpiryError
	if !errors.As(err, &ee) {
		t.Fatalf("Health = %v, want an *ExpiryError", err)
	}
	if !ee.NotAfter.Equal(notAfter) || ee.Expired != expired {
		t.Errorf("ExpiryError{NotAfter: %s, Expired: %t}, want {%s, %t}", ee.NotAfter, ee.Expired, notAfter, expired)
	}
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("the error unwraps to code %s, want the renewal's Unavailable", got)
	}
	verb := "expires"
	if expired {
		verb = "expired"
	}
	for _, want := range []string{verb + " at " + notAfter.UTC().Format(time.RFC3339), "renewal fails", "identity service down"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Health = %q, want it to say %q", err, want)
		}
	}
}
