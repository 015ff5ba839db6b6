package httpproxy

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
	"github.com/mesh-dev/mesh/proxy/route"
)

// TestRetryAllow: a retry needs the limit not reached, the body kept and
// within the policy's bound, and a token; each refusal says why, and only
// a retry made takes a token.
func TestRetryAllow(t *testing.T) {
	m := metrics.New()
	policy := &route.RetryPolicy{Limit: 2, MaxBodyBytes: 100, Budget: route.Budget{MinPerSecond: 1, TTL: 3 * time.Second}} // 3 tokens
	var bs RetryBudgets
	r := bs.Start(policy, "web:80")
	steps := []struct {
		name     string
		body     int
		complete bool
		want     bool
	}{
		{name: "body past the bound", body: 101, complete: true},
		{name: "body not all kept", body: 10},
		{name: "first", body: 100, complete: true, want: true},
		{name: "second", complete: true, want: true},
		{name: "past the limit", complete: true},
	}
	for _, st := range steps {
		if got := r.Allow(m, metrics.Outbound, metrics.RetryHTTP, st.body, st.complete); got != st.want {
			t.Errorf("%s: Allow = %v, want %v", st.name, got, st.want)
		}
	}
	if r.Made() != 2 {
		t.Errorf("Made() = %d, want 2", r.Made())
	}
	// The budget gave 2 of its 3 tokens: a second request has one.
	r2 := bs.Start(policy, "web:80")
	if !r2.Allow(m, metrics.Outbound, metrics.RetryTimeout, 0, true) {
		t.Error("the budget's last token was not given")
	}
	if r2.Allow(m, metrics.Outbound, metrics.RetryTimeout, 0, true) {
		t.Error("a retry from an empty budget")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	fams, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		family, label, value string
		want                 float64
	}{
		{"mesh_proxy_http_retries_total", "reason", "http", 2},
		{"mesh_proxy_http_retries_total", "reason", "timeout", 1},
		{"mesh_proxy_http_retry_skipped_total", "reason", "body", 2},
		{"mesh_proxy_http_retry_skipped_total", "reason", "limit", 1},
		{"mesh_proxy_http_retry_skipped_total", "reason", "budget", 1},
	} {
		if got := fams.Sum(c.family, "direction", "outbound", c.label, c.value); got != c.want {
			t.Errorf("%s{%s=%q} = %v, want %v", c.family, c.label, c.value, got, c.want)
		}
	}
	var none Retry
	if none.Allow(m, metrics.Outbound, metrics.RetryHTTP, 0, true) || none.ReplayLimit() != DefaultReplayLimit {
		t.Error("a request without a policy is retried, or keeps an unusual body")
	}
	if got := (&Retry{Policy: &route.RetryPolicy{MaxBodyBytes: 1 << 20}}).ReplayLimit(); got != 1<<20 {
		t.Errorf("ReplayLimit() = %d for a policy of 1 MiB", got)
	}
}
