package httpproxy

import (
	"time"

	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/route"
)

// Retry is one request's retries under its route rule's retry policy
// (docs/traffic.md 3.4). Both forwarders ask it whether a failed attempt
// goes again, so that they decide alike. The zero value is a request with
// no policy, which nothing retries but what provably reached no
// application (3.5, no policy's business). Used by one request at a time.
type Retry struct {
	// Policy is the rule's; nil for none.
	Policy *route.RetryPolicy
	budget *RetryBudget
	made   int
}

// Start readies the retries of a request whose rule has policy p (nil:
// none) and that goes to authority (its route's backend, or its target's
// address for a Service's own rule), and deposits the request's share in
// that backend's budget.
func (bs *RetryBudgets) Start(p *route.RetryPolicy, authority string) Retry {
	if p == nil {
		return Retry{}
	}
	b := bs.Get(authority, p.Budget)
	b.Deposit()
	return Retry{Policy: p, budget: b}
}

// Made is how many retries the request had.
func (r *Retry) Made() int { return r.made }

// ReplayLimit is how much of the request's body its attempts keep for
// another: the policy's max body, or more for a resend of a request that
// reached no application, which goes again whatever the policy says.
func (r *Retry) ReplayLimit() int {
	if r.Policy == nil {
		return DefaultReplayLimit
	}
	return max(DefaultReplayLimit, r.Policy.MaxBodyBytes)
}

// Allow decides whether an attempt that failed for why goes again; the
// caller found that the policy takes that failure (RetryHTTP, RetryGRPC,
// or a per-try timeout). body is the request body the next attempt would
// send from its replay, in bytes, and complete whether that is all of it.
// A retry needs the policy's limit not reached, the body complete and
// within the policy's max, and a token of the budget, taken last, so that
// a retry skipped for another reason costs none. It counts the retry, or
// why it was skipped, in m.
func (r *Retry) Allow(m *metrics.Metrics, dir metrics.Direction, why metrics.RetryReason, body int, complete bool) bool {
	var skip metrics.RetrySkip
	switch {
	case r.Policy == nil:
		return false
	case r.made >= r.Policy.Limit:
		skip = metrics.SkipLimit
	case !complete || body > r.Policy.MaxBodyBytes:
		skip = metrics.SkipBody
	case !r.budget.Withdraw():
		skip = metrics.SkipBudget
	default:
		r.made++
		m.Retried(dir, why)
		return true
	}
	m.RetrySkipped(dir, skip)
	return false
}

// Timeouts are the bounds of one request (docs/traffic.md 3.3); zero
// means none.
type Timeouts struct {
	// Request bounds the whole request from its arrival to the end of its
	// response, across attempts, connecting included (timeouts.request,
	// timeout.mesh.dev/request).
	Request time.Duration
	// Attempt bounds each attempt from its start (connecting included) to
	// its response head: the smaller of timeouts.backendRequest and the
	// retry policy's per-try timeout (retry.mesh.dev/timeout). An attempt
	// past it is cancelled, and retried when the policy allows.
	Attempt time.Duration
	// Response bounds the wait for the response head from the end of the
	// request body (timeout.mesh.dev/response; Config.ResponseTimeout
	// without it).
	Response time.Duration
	// Idle ends an exchange that moved no byte either way for that long
	// (timeout.mesh.dev/idle).
	Idle time.Duration
}

// TimeoutsOf returns the bounds of a request of rule r (nil: no route).
func (c *Config) TimeoutsOf(r *route.Rule) Timeouts {
	if r == nil {
		return Timeouts{Response: c.ResponseTimeout}
	}
	t := Timeouts{Request: r.RequestTimeout, Attempt: r.BackendRequestTimeout, Response: r.ResponseTimeout, Idle: r.IdleTimeout}
	if r.Retry != nil && r.Retry.PerTryTimeout > 0 && (t.Attempt == 0 || r.Retry.PerTryTimeout < t.Attempt) {
		t.Attempt = r.Retry.PerTryTimeout
	}
	if t.Response == 0 {
		t.Response = c.ResponseTimeout
	}
	return t
}
