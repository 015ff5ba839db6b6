package route

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

// The retry defaults of docs/traffic.md 3.4, for fields a Retry leaves
// unset: Linkerd's 64 KiB replay buffer (linkerd/http/retry) and the
// budget of its ServiceProfile retries, 20% of requests plus 10 a second
// over 10 s, which issue 14 asks for.
const DefaultMaxBodyBytes = 64 << 10

// DefaultBudget is the budget of a Retry that names none.
var DefaultBudget = Budget{Ratio: 0.2, MinPerSecond: 10, TTL: 10 * time.Second}

// RetryPolicy is a rule's retry policy (retry.mesh.dev/*). The HTTP paths
// retry an attempt whose response RetryHTTP or RetryGRPC accepts, or
// that ran past PerTryTimeout, while fewer than Limit retries were made,
// the request's body fit MaxBodyBytes, and the Budget has a token.
type RetryPolicy struct {
	// HTTP are the statuses retried, sorted, not overlapping nor
	// adjacent.
	HTTP []StatusRange
	// GRPC are the gRPC status codes retried (14 is UNAVAILABLE), sorted,
	// without repeats.
	GRPC []int
	// Limit is how many retries may follow the first attempt; 0 retries
	// nothing, while PerTryTimeout still bounds the one attempt.
	Limit int
	// PerTryTimeout bounds each attempt; zero means none.
	PerTryTimeout time.Duration
	// MaxBodyBytes is the largest request body kept for replay: a
	// request with a longer body is sent once.
	MaxBodyBytes int
	Budget       Budget
}

// StatusRange is the HTTP statuses from Min to Max, both included.
type StatusRange struct{ Min, Max int }

// Budget bounds retries against original requests: every original
// request deposits Ratio tokens and MinPerSecond tokens come every
// second regardless, each lasting TTL; a retry takes one token, and
// with none left the failed response goes to the client as it is.
type Budget struct {
	Ratio        float64
	MinPerSecond int
	TTL          time.Duration
}

// RetryHTTP reports whether an attempt answered with status may be
// retried; false for a nil policy.
func (p *RetryPolicy) RetryHTTP(status int) bool {
	if p == nil {
		return false
	}
	for _, r := range p.HTTP {
		if status < r.Min {
			return false
		}
		if status <= r.Max {
			return true
		}
	}
	return false
}

// RetryGRPC reports whether an attempt that ended with gRPC status code
// may be retried; false for a nil policy.
func (p *RetryPolicy) RetryGRPC(code int) bool {
	if p == nil {
		return false
	}
	_, found := slices.BinarySearch(p.GRPC, code)
	return found
}

// FailureAccrual is how a balancer ejects failing endpoints
// (balancer.mesh.dev/*, docs/traffic.md 3.6), in the terms of
// proxy/balance's Config. Zero fields keep the balancer's defaults.
type FailureAccrual struct {
	// Disabled: no endpoint is ejected for failing (balance.Config's
	// negative MaxFailures); the other fields do not apply.
	Disabled bool
	// MaxFailures consecutive failures eject an endpoint.
	MaxFailures int
	// MinBackoff is how long the first ejection lasts, MaxBackoff what
	// doubling it stops at. When both are set MinBackoff is at most
	// MaxBackoff; when one is, the balancer's default for the other may
	// be on the wrong side of it, and the balancer must widen that one.
	MinBackoff, MaxBackoff time.Duration
}

// grpcCodes is how many gRPC status codes there are: 0 OK to 16
// UNAUTHENTICATED (grpc/codes).
const grpcCodes = 17

// compileRetry compiles a rule's Retry; nil for none.
func compileRetry(pr *destinationv1.Retry) (*RetryPolicy, error) {
	if pr == nil {
		return nil, nil
	}
	p := &RetryPolicy{Limit: int(pr.GetLimit()), MaxBodyBytes: int(pr.GetMaxBodyBytes()), Budget: DefaultBudget}
	if p.MaxBodyBytes == 0 {
		p.MaxBodyBytes = DefaultMaxBodyBytes
	}
	for _, r := range pr.GetHttp() {
		if r.GetMin() < 100 || r.GetMin() > r.GetMax() || r.GetMax() > 599 {
			return nil, fmt.Errorf("%w: http status range %d-%d", ErrInvalid, r.GetMin(), r.GetMax())
		}
		p.HTTP = append(p.HTTP, StatusRange{Min: int(r.GetMin()), Max: int(r.GetMax())})
	}
	p.HTTP = mergeRanges(p.HTTP)
	for _, c := range pr.GetGrpc() {
		// OK is no failure, and a code past the last is none gRPC has.
		if c == 0 || c >= grpcCodes {
			return nil, fmt.Errorf("%w: grpc code %d", ErrInvalid, c)
		}
		p.GRPC = append(p.GRPC, int(c))
	}
	slices.Sort(p.GRPC)
	p.GRPC = slices.Compact(p.GRPC)
	var err error
	if p.PerTryTimeout, err = timeout(pr.GetPerTryTimeout()); err != nil {
		return nil, fmt.Errorf("per_try_timeout: %w", err)
	}
	if pb := pr.GetBudget(); pb != nil {
		if math.IsNaN(pb.GetRatio()) || math.IsInf(pb.GetRatio(), 0) || pb.GetRatio() < 0 {
			return nil, fmt.Errorf("%w: budget ratio %v", ErrInvalid, pb.GetRatio())
		}
		p.Budget = Budget{Ratio: pb.GetRatio(), MinPerSecond: int(pb.GetMinPerSecond()), TTL: DefaultBudget.TTL}
		ttl, err := timeout(pb.GetTtl())
		if err != nil {
			return nil, fmt.Errorf("budget ttl: %w", err)
		}
		if ttl > 0 {
			p.Budget.TTL = ttl
		}
	}
	return p, nil
}

// mergeRanges sorts rs and joins the ranges that overlap or touch, so
// that RetryHTTP can stop at the first range above a status.
func mergeRanges(rs []StatusRange) []StatusRange {
	slices.SortFunc(rs, func(a, b StatusRange) int { return cmp.Compare(a.Min, b.Min) })
	var out []StatusRange
	for _, r := range rs {
		if n := len(out); n > 0 && r.Min <= out[n-1].Max+1 {
			out[n-1].Max = max(out[n-1].Max, r.Max)
			continue
		}
		out = append(out, r)
	}
	return out
}

// compileFailureAccrual compiles a table's FailureAccrual; the zero value
// for none.
func compileFailureAccrual(pf *destinationv1.FailureAccrual) (FailureAccrual, error) {
	if pf == nil {
		return FailureAccrual{}, nil
	}
	if pf.GetDisabled() {
		return FailureAccrual{Disabled: true}, nil
	}
	f := FailureAccrual{MaxFailures: int(pf.GetMaxFailures())}
	var err error
	if f.MinBackoff, err = timeout(pf.GetMinBackoff()); err != nil {
		return FailureAccrual{}, fmt.Errorf("min_backoff: %w", err)
	}
	if f.MaxBackoff, err = timeout(pf.GetMaxBackoff()); err != nil {
		return FailureAccrual{}, fmt.Errorf("max_backoff: %w", err)
	}
	if f.MinBackoff > 0 && f.MaxBackoff > 0 && f.MinBackoff > f.MaxBackoff {
		return FailureAccrual{}, fmt.Errorf("%w: min_backoff %v above max_backoff %v", ErrInvalid, f.MinBackoff, f.MaxBackoff)
	}
	return f, nil
}

// compileDefault compiles a table's default rule. Its matches, if any,
// are not looked at: Match gives it every request of a table without
// rules. Without backends (the controller sends none) and without a
// local answer, its one backend is the target itself, empty Authority,
// which the HTTP paths resolve to the target's own endpoints.
func compileDefault(pr *destinationv1.Rule) (*Rule, error) {
	r, err := compileRule(pr)
	if err != nil {
		return nil, err
	}
	if len(r.Backends) == 0 && r.Fail == nil && r.Redirect == nil {
		r.Backends = []Backend{{Weight: 1}}
	}
	return r, nil
}
