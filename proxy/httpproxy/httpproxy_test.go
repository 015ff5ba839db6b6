package httpproxy_test

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/route"
)

// TestWithDefaults: zero fields get their documented defaults, set ones
// are kept, and fields without a default stay zero.
func TestWithDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   httpproxy.Config
		want httpproxy.Config
	}{
		{
			name: "zero",
			want: httpproxy.Config{ConnectTimeout: time.Second, ReadHeaderTimeout: 10 * time.Second,
				IdleTimeout: 90 * time.Second, MaxHeaderBytes: 64 << 10, MaxConcurrentStreams: 1000},
		},
		{
			name: "set",
			in: httpproxy.Config{ConnectTimeout: 2 * time.Second, ReadHeaderTimeout: time.Second,
				IdleTimeout: time.Minute, MaxHeaderBytes: 4096, MaxConcurrentStreams: 10,
				ResponseTimeout: 5 * time.Second, BodyIdleTimeout: time.Minute, MaxConnsPerHost: 3},
			want: httpproxy.Config{ConnectTimeout: 2 * time.Second, ReadHeaderTimeout: time.Second,
				IdleTimeout: time.Minute, MaxHeaderBytes: 4096, MaxConcurrentStreams: 10,
				ResponseTimeout: 5 * time.Second, BodyIdleTimeout: time.Minute, MaxConnsPerHost: 3},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in.WithDefaults()
			if got.Log == nil {
				t.Error("Log is nil, want slog.Default()")
			}
			if got.RetryBudgets == nil {
				t.Error("RetryBudgets is nil, want the forwarder's own")
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(httpproxy.Config{}, "Log", "RetryBudgets")); diff != "" {
				t.Errorf("WithDefaults (-want +got):\n%s", diff)
			}
		})
	}
}

// TestConnectError: a connect failure ejects its endpoint
// (balance.ErrUnreachable) and still shows what it wraps, a timeout
// included.
func TestConnectError(t *testing.T) {
	// What a dial past its timeout returns.
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	var err error = &httpproxy.ConnectError{Err: dialErr}
	if !errors.Is(err, balance.ErrUnreachable) {
		t.Error("errors.Is(ConnectError, balance.ErrUnreachable) = false")
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("errors.As(ConnectError, net.Error) = %v: the timeout is hidden", ne)
	}
	if err.Error() != dialErr.Error() {
		t.Errorf("Error() = %q, want the wrapped %q", err.Error(), dialErr.Error())
	}
}

// TestTimeoutsOf: a rule's timeouts, the per-try timeout the smaller of
// its backend request timeout and its retry policy's, and the proxy's
// ResponseTimeout where the rule sets no response timeout.
func TestTimeoutsOf(t *testing.T) {
	cfg := httpproxy.Config{ResponseTimeout: 9 * time.Second}
	tests := []struct {
		name string
		rule *route.Rule
		want httpproxy.Timeouts
	}{
		{name: "no route", want: httpproxy.Timeouts{Response: 9 * time.Second}},
		{name: "none", rule: &route.Rule{}, want: httpproxy.Timeouts{Response: 9 * time.Second}},
		{
			name: "all",
			rule: &route.Rule{RequestTimeout: 5 * time.Second, BackendRequestTimeout: 2 * time.Second,
				ResponseTimeout: time.Second, IdleTimeout: 3 * time.Second},
			want: httpproxy.Timeouts{Request: 5 * time.Second, Attempt: 2 * time.Second, Response: time.Second, Idle: 3 * time.Second},
		},
		{
			name: "per try shorter",
			rule: &route.Rule{BackendRequestTimeout: 2 * time.Second, Retry: &route.RetryPolicy{PerTryTimeout: time.Second}},
			want: httpproxy.Timeouts{Attempt: time.Second, Response: 9 * time.Second},
		},
		{
			name: "per try longer",
			rule: &route.Rule{BackendRequestTimeout: 2 * time.Second, Retry: &route.RetryPolicy{PerTryTimeout: 3 * time.Second}},
			want: httpproxy.Timeouts{Attempt: 2 * time.Second, Response: 9 * time.Second},
		},
		{
			name: "per try alone",
			rule: &route.Rule{Retry: &route.RetryPolicy{PerTryTimeout: 3 * time.Second}},
			want: httpproxy.Timeouts{Attempt: 3 * time.Second, Response: 9 * time.Second},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, cfg.TimeoutsOf(tc.rule)); diff != "" {
				t.Errorf("TimeoutsOf (-want +got):\n%s", diff)
			}
		})
	}
}
