package httpproxy

import (
	"testing"
	"time"
)

func TestRateLimitedRetryAfter(t *testing.T) {
	tests := []struct {
		after time.Duration
		want  string
	}{
		{after: 0, want: "1"}, // never "retry at once"
		{after: 10 * time.Millisecond, want: "1"},
		{after: time.Second, want: "1"},
		{after: time.Second + time.Nanosecond, want: "2"},
		{after: 90 * time.Second, want: "90"},
	}
	for _, tc := range tests {
		if got := (&RateLimited{RetryAfter: tc.after}).RetryAfterHeader(); got != tc.want {
			t.Errorf("RetryAfter %v: header %q, want %q", tc.after, got, tc.want)
		}
	}
	e := &RateLimited{RetryAfter: 10 * time.Millisecond, Scope: "total", Server: "web", RequestsPerSecond: 100}
	if got, want := e.Error(), `server "web" allows 100 requests per second in total; retry after 1s`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e = &RateLimited{RetryAfter: 1500 * time.Millisecond, Scope: "override", Server: "web", RequestsPerSecond: 1}
	if got, want := e.Error(), `server "web" allows 1 request per second to this client; retry after 2s`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
