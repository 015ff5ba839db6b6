package route

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mesh-dev/mesh/internal/names"
)

// The traffic policy annotations (docs/traffic.md 2.3, 3.3-3.6) of a
// Service, an HTTPRoute or a GRPCRoute. The most specific object wins,
// field by field: a rule's own timeouts, then its route's annotations,
// then its parent Service's. A bad value on a route refuses the route
// (Accepted=False, UnsupportedValue); on a Service, which has no status of
// ours, that annotation is ignored and reported (Snapshot.Warnings).

// Retry limits: a limit above maxRetryLimit multiplies a failing
// backend's load past what the budget is meant to absorb; Linkerd takes
// any u16, Envoy's default is 1.
const maxRetryLimit = 10

// maxMaxFailures bounds balancer.mesh.dev/max-failures: past it failure
// accrual is off in all but name, which "disabled" says plainly.
const maxMaxFailures = 1000

// RetryMaxBodyBytes is the largest request body kept for replay (issue 14:
// 64 KiB, Linkerd's linkerd/http/retry bound).
const RetryMaxBodyBytes = 64 << 10

// DefaultRetryBudget is the budget of every retry policy: 20% of requests
// plus 10 a second, over 10 s (issue 14; Linkerd's ServiceProfile
// default, controller/api/destination/profile_translator.go).
var DefaultRetryBudget = RetryBudget{Ratio: 0.2, MinPerSecond: 10, TTL: 10 * time.Second}

// grpcRetryCodes are the gRPC codes retry.mesh.dev/grpc takes, by name:
// those Envoy's and Linkerd's gRPC retry conditions accept, the codes a
// failure that did not come from the request itself ends with.
var grpcRetryCodes = map[string]uint32{
	"cancelled":          1,
	"deadline-exceeded":  4,
	"resource-exhausted": 8,
	"internal":           13,
	"unavailable":        14,
}

// opt is a field an object may leave unset, so that the next object's
// applies.
type opt[T any] struct {
	v  T
	ok bool
}

func some[T any](v T) opt[T] { return opt[T]{v: v, ok: true} }

// or is o if it is set, else p.
func (o opt[T]) or(p opt[T]) opt[T] {
	if o.ok {
		return o
	}
	return p
}

// policy is the retry and timeout policy an object sets.
type policy struct {
	retryHTTP    opt[[]StatusRange]
	retryGRPC    opt[[]uint32]
	retryLimit   opt[uint32]
	retryTimeout opt[time.Duration]
	request      opt[time.Duration]
	response     opt[time.Duration]
	idle         opt[time.Duration]
}

// or fills the fields p leaves unset from q: p is the more specific.
func (p policy) or(q policy) policy {
	return policy{
		retryHTTP:    p.retryHTTP.or(q.retryHTTP),
		retryGRPC:    p.retryGRPC.or(q.retryGRPC),
		retryLimit:   p.retryLimit.or(q.retryLimit),
		retryTimeout: p.retryTimeout.or(q.retryTimeout),
		request:      p.request.or(q.request),
		response:     p.response.or(q.response),
		idle:         p.idle.or(q.idle),
	}
}

func (p policy) retries() bool {
	return p.retryHTTP.ok || p.retryGRPC.ok || p.retryLimit.ok || p.retryTimeout.ok
}

func (p policy) empty() bool {
	return !p.retries() && !p.request.ok && !p.response.ok && !p.idle.ok
}

// apply sets the fields of r that p sets. Any retry annotation gives r a
// Retry: the limit defaults to 1, and without statuses or codes only
// attempts past the per-try timeout are retried.
func (p policy) apply(r *Rule) {
	if p.request.ok {
		r.Timeouts.Request = p.request.v
	}
	if p.response.ok {
		r.Timeouts.Response = p.response.v
	}
	if p.idle.ok {
		r.Timeouts.Idle = p.idle.v
	}
	if !p.retries() {
		return
	}
	r.Retry = &Retry{
		HTTP:          p.retryHTTP.v,
		GRPC:          p.retryGRPC.v,
		Limit:         1,
		PerTryTimeout: p.retryTimeout.v,
		MaxBodyBytes:  RetryMaxBodyBytes,
		Budget:        DefaultRetryBudget,
	}
	if p.retryLimit.ok {
		r.Retry.Limit = p.retryLimit.v
	}
}

// annotationError is a bad traffic annotation: its name, its value, and
// what it takes.
type annotationError struct {
	name, value, want string
}

func (e *annotationError) Error() string {
	return fmt.Sprintf("annotation %s %s: %s", e.name, quote(e.value), e.want)
}

// parsePolicy reads the retry and timeout annotations of a route, or of a
// Service when service is true, which also takes the balancer ones. Each
// bad annotation is left unset and has one error, in the order of the
// annotations' names.
func parsePolicy(ann map[string]string, service bool) (policy, opt[FailureAccrual], []error) {
	var p policy
	var errs []error
	var fa balancer
	// Every Service is read on every rebuild, and most have none of
	// these: skip the sort for them.
	if !hasTrafficAnnotation(ann) {
		return p, opt[FailureAccrual]{}, nil
	}
	for _, name := range slices.Sorted(maps.Keys(ann)) {
		value := ann[name]
		var err error
		switch {
		case strings.HasPrefix(name, names.RetryPrefix), strings.HasPrefix(name, names.TimeoutPrefix):
			err = p.set(name, value)
		case strings.HasPrefix(name, names.BalancerPrefix) && service:
			err = fa.set(name, value)
		case strings.HasPrefix(name, names.BalancerPrefix):
			err = &annotationError{name, value, "the balancer annotations apply to Services only: put it on the parent Service"}
		default:
			continue
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	accrual, err := fa.accrual()
	if err != nil {
		errs = append(errs, err)
	}
	return p, accrual, errs
}

func hasTrafficAnnotation(ann map[string]string) bool {
	for name := range ann {
		if strings.HasPrefix(name, names.RetryPrefix) || strings.HasPrefix(name, names.TimeoutPrefix) || strings.HasPrefix(name, names.BalancerPrefix) {
			return true
		}
	}
	return false
}

// set parses one retry.mesh.dev or timeout.mesh.dev annotation into p.
func (p *policy) set(name, value string) error {
	bad := func(want string) error { return &annotationError{name, value, want} }
	switch name {
	case names.AnnotationRetryHTTP:
		rs, ok := parseStatuses(value)
		if !ok {
			return bad("want a comma-separated list of statuses from 100 to 599: codes (503), ranges (500-504), classes (5xx), gateway-error (502-504)")
		}
		p.retryHTTP = some(rs)
	case names.AnnotationRetryGRPC:
		codes, ok := parseGRPCCodes(value)
		if !ok {
			return bad("want a comma-separated list of " + strings.Join(slices.Sorted(maps.Keys(grpcRetryCodes)), ", "))
		}
		p.retryGRPC = some(codes)
	case names.AnnotationRetryLimit:
		n, err := strconv.ParseUint(strings.TrimSpace(value), 10, 32)
		if err != nil || n > maxRetryLimit {
			return bad(fmt.Sprintf("want a whole number of retries from 0 to %d", maxRetryLimit))
		}
		p.retryLimit = some(uint32(n))
	case names.AnnotationRetryTimeout, names.AnnotationTimeoutRequest, names.AnnotationTimeoutResponse, names.AnnotationTimeoutIdle:
		d, ok := parseDuration(value)
		if !ok {
			return bad("want a duration such as 500ms, 10s or 1m30s (0s for none)")
		}
		switch name {
		case names.AnnotationRetryTimeout:
			p.retryTimeout = some(d)
		case names.AnnotationTimeoutRequest:
			p.request = some(d)
		case names.AnnotationTimeoutResponse:
			p.response = some(d)
		default:
			p.idle = some(d)
		}
	default:
		return bad("unknown annotation: want one of " + strings.Join([]string{
			names.AnnotationRetryHTTP, names.AnnotationRetryGRPC, names.AnnotationRetryLimit, names.AnnotationRetryTimeout,
			names.AnnotationTimeoutRequest, names.AnnotationTimeoutResponse, names.AnnotationTimeoutIdle}, ", "))
	}
	return nil
}

// balancer is what a Service's balancer.mesh.dev annotations set.
type balancer struct {
	mode                   opt[string]
	maxFailures            opt[uint32]
	minBackoff, maxBackoff opt[time.Duration]
	// minValue and maxValue are the backoffs as written, for the error
	// about them in the wrong order.
	minValue, maxValue string
}

func (b *balancer) set(name, value string) error {
	bad := func(want string) error { return &annotationError{name, value, want} }
	switch name {
	case names.AnnotationFailureAccrual:
		v := strings.TrimSpace(value)
		if v != names.FailureAccrualConsecutive && v != names.FailureAccrualDisabled {
			return bad("want " + names.FailureAccrualConsecutive + " or " + names.FailureAccrualDisabled)
		}
		b.mode = some(v)
	case names.AnnotationMaxFailures:
		n, err := strconv.ParseUint(strings.TrimSpace(value), 10, 32)
		if err != nil || n < 1 || n > maxMaxFailures {
			return bad(fmt.Sprintf("want a whole number of consecutive failures from 1 to %d", maxMaxFailures))
		}
		b.maxFailures = some(uint32(n))
	case names.AnnotationMinBackoff, names.AnnotationMaxBackoff:
		d, ok := parseDuration(value)
		if !ok || d == 0 {
			return bad("want a duration above zero such as 500ms, 10s or 1m")
		}
		if name == names.AnnotationMinBackoff {
			b.minBackoff, b.minValue = some(d), value
		} else {
			b.maxBackoff, b.maxValue = some(d), value
		}
	default:
		return bad("unknown annotation: want one of " + strings.Join([]string{
			names.AnnotationFailureAccrual, names.AnnotationMaxFailures, names.AnnotationMinBackoff, names.AnnotationMaxBackoff}, ", "))
	}
	return nil
}

// accrual is the FailureAccrual b sets, unset when it sets nothing.
// Backoffs in the wrong order are both ignored.
func (b *balancer) accrual() (opt[FailureAccrual], error) {
	var err error
	if b.minBackoff.ok && b.maxBackoff.ok && b.minBackoff.v > b.maxBackoff.v {
		err = &annotationError{names.AnnotationMinBackoff, b.minValue,
			fmt.Sprintf("want at most %s %s", names.AnnotationMaxBackoff, quote(b.maxValue))}
		b.minBackoff, b.maxBackoff = opt[time.Duration]{}, opt[time.Duration]{}
	}
	if !b.mode.ok && !b.maxFailures.ok && !b.minBackoff.ok && !b.maxBackoff.ok {
		return opt[FailureAccrual]{}, err
	}
	if b.mode.v == names.FailureAccrualDisabled {
		return some(FailureAccrual{Disabled: true}), err
	}
	return some(FailureAccrual{MaxFailures: b.maxFailures.v, MinBackoff: b.minBackoff.v, MaxBackoff: b.maxBackoff.v}), err
}

// parseStatuses parses retry.mesh.dev/http: comma-separated items, each a
// status ("503"), a range ("500-504"), a class ("5xx") or
// "gateway-error" (502-504, as Envoy's retry_on names them). The ranges
// come back sorted and merged.
func parseStatuses(s string) ([]StatusRange, bool) {
	var out []StatusRange
	for item := range strings.SplitSeq(s, ",") {
		item = strings.ToLower(strings.TrimSpace(item))
		var r StatusRange
		switch {
		case item == "gateway-error":
			r = StatusRange{502, 504}
		case len(item) == 3 && item[1:] == "xx" && item[0] >= '1' && item[0] <= '5':
			c := uint32(item[0]-'0') * 100
			r = StatusRange{c, c + 99}
		default:
			first, last, isRange := strings.Cut(item, "-")
			lo, err1 := strconv.ParseUint(strings.TrimSpace(first), 10, 32)
			hi, err2 := lo, error(nil)
			if isRange {
				hi, err2 = strconv.ParseUint(strings.TrimSpace(last), 10, 32)
			}
			if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
				return nil, false
			}
			r = StatusRange{uint32(lo), uint32(hi)}
		}
		out = append(out, r)
	}
	return mergeRanges(out), true
}

// mergeRanges sorts rs and joins those that overlap or touch.
func mergeRanges(rs []StatusRange) []StatusRange {
	slices.SortFunc(rs, func(a, b StatusRange) int { return int(a.Min) - int(b.Min) })
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

// parseGRPCCodes parses retry.mesh.dev/grpc: comma-separated code names,
// in any case, "_" taken as "-" (gRPC's own spelling is
// DEADLINE_EXCEEDED). The codes come back sorted, once each.
func parseGRPCCodes(s string) ([]uint32, bool) {
	var out []uint32
	for item := range strings.SplitSeq(s, ",") {
		name := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(item)), "_", "-")
		c, ok := grpcRetryCodes[name]
		if !ok {
			return nil, false
		}
		out = append(out, c)
	}
	slices.Sort(out)
	return slices.Compact(out), true
}

// parseDuration parses a Go duration, which every Gateway API duration
// ("1h30m", "500ms") is; negative ones are refused.
func parseDuration(s string) (time.Duration, bool) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	return d, err == nil && d >= 0
}

// quote quotes an annotation's value for a message, cut at 64
// characters: values can be long, and they end up in status and Events.
func quote(s string) string {
	if r := []rune(s); len(r) > 64 {
		return strconv.Quote(string(r[:64])) + "..."
	}
	return strconv.Quote(s)
}
