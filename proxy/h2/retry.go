package h2

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"golang.org/x/net/http2"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// A request whose route rule has a retry policy (docs/traffic.md 3.4,
// httpproxy.Retry) keeps the body it sends, up to the policy's max body,
// like one to a proven peer proxy (resend.go). Its response is held at its
// HEADERS: when the policy takes its status (for gRPC, the grpc-status of
// a trailers-only response; a gRPC response with a body is not retried),
// or the attempt ran past its per-try timeout, and a retry is allowed
// (limit, body, budget), the target's stream is cancelled and the request
// goes to a new pick of the same backend, an endpoint it has not tried
// when the balancer offers one, its body replayed. Otherwise the response
// goes to the client as it is.
//
// Timeouts (docs/traffic.md 3.3, httpproxy.Timeouts) are deadlines on the
// stream, with one timer for the earliest: the request's from its arrival
// (through a fault's delay, connecting, every attempt and the response
// body), the attempt's from its start to its response head, the response
// one from the end of the request to the head, the idle one from the last
// frame either way. Past one before the head, the client gets 504 (gRPC
// DEADLINE_EXCEEDED) and the target's stream is cancelled; past the
// request's or the idle one after it, both streams are reset, as the
// status cannot change any more.

// limits is what bounds one request (retry.go): its rule's timeouts and
// the deadlines they set, with one timer for the earliest, the time of the
// last frame either way, its retries, and a fault's delay. A stream has
// one only when something bounds it, so that the many requests nothing
// does cost no more. Guarded by the stream's mu.
type limits struct {
	timeouts httpproxy.Timeouts
	deadline time.Time   // the request's; zero: none
	tryStart time.Time   // when the attempt under way began
	tryBy    time.Time   // the attempt's, to its response head; zero: none
	respBy   time.Time   // the response timeout's, from the request's end; zero: none
	moved    time.Time   // the last frame either way, with an idle timeout
	timer    *time.Timer // fires at the earliest of the above
	held     *time.Timer // a fault's delay, while it holds the request
	retry    httpproxy.Retry
	gen      int              // the attempt under way: a connect for another one lets its connection go
	tried    []netip.AddrPort // endpoints picked past exchange.tried
}

// limits returns the stream's limits, making them. Called with s.mu held.
func (s *stream) limits() *limits {
	if s.lim == nil {
		s.lim = &limits{}
	}
	return s.lim
}

// stop stops the timers, as the stream closes.
func (l *limits) stop() {
	if l.timer != nil {
		l.timer.Stop()
	}
	if l.held != nil {
		l.held.Stop()
	}
}

// attempt names the attempt under way, for a connect made for it.
func (s *stream) attempt() int {
	if s.lim == nil {
		return 0
	}
	return s.lim.gen
}

// noteTried records an endpoint picked for the request.
func (s *stream) noteTried(addr netip.AddrPort) {
	x := &s.x
	if x.attempts < maxAttempts {
		x.tried[x.attempts] = addr
	} else {
		l := s.limits()
		l.tried = append(l.tried, addr)
	}
	x.attempts++
}

// triedBefore reports whether the request was sent to addr already.
func (s *stream) triedBefore(addr netip.AddrPort) bool {
	x := &s.x
	if slices.Contains(x.tried[:min(x.attempts, maxAttempts)], addr) {
		return true
	}
	return s.lim != nil && slices.Contains(s.lim.tried, addr)
}

// beginTry starts an attempt's clock: its per-try bound runs from now.
// Called with s.mu held.
func (s *stream) beginTry(first bool) {
	if !first {
		s.x.retries++
	}
	l := s.lim
	if l == nil {
		return
	}
	if first {
		l.tryStart = s.x.start // no clock read when nothing needs one
	} else {
		l.tryStart = time.Now()
	}
	l.tryBy, l.respBy = time.Time{}, time.Time{}
	if d := l.timeouts.Attempt; d > 0 {
		l.tryBy = l.tryStart.Add(d)
	}
	if l.timeouts.Idle > 0 && first {
		l.moved = s.x.start
	}
	s.armTimer()
}

// requestSent starts the response timeout once the request went out
// whole. Called with s.mu held.
func (s *stream) requestSent() {
	if l := s.lim; l != nil && l.timeouts.Response > 0 && !s.resBegan {
		l.respBy = time.Now().Add(l.timeouts.Response)
		s.armTimer()
	}
}

// noteMove records a frame of the stream, either way, for the idle
// timeout. Called with s.mu held.
func (s *stream) noteMove() {
	if l := s.lim; l != nil && l.timeouts.Idle > 0 {
		l.moved = time.Now()
	}
}

// nextDeadline is the earliest bound of the stream: all of them until the
// response head, then the request's and the idle one; zero for none.
func (s *stream) nextDeadline() time.Time {
	l := s.lim
	next := l.deadline
	sooner := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if !s.resBegan {
		sooner(l.tryBy)
		sooner(l.respBy)
	}
	if d := l.timeouts.Idle; d > 0 {
		sooner(l.moved.Add(d))
	}
	return next
}

// armTimer sets the stream's timer to its earliest bound, or stops it
// when there is none. Called with s.mu held, s.lim set.
func (s *stream) armTimer() {
	l := s.lim
	next := s.nextDeadline()
	switch {
	case next.IsZero():
		if l.timer != nil {
			l.timer.Stop()
		}
	case l.timer == nil:
		l.timer = time.AfterFunc(time.Until(next), s.timedOut)
	default:
		l.timer.Reset(time.Until(next))
	}
}

// timedOut acts on the bound that passed: a per-try one may retry, the
// others end the request; an idle bound that frames moved since sets the
// timer again.
func (s *stream) timedOut() {
	var fl flusher
	defer fl.flushAll()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	l, now := s.lim, time.Now()
	passed := func(t time.Time) bool { return !t.IsZero() && !now.Before(t) }
	switch {
	case passed(l.deadline):
		s.expire(&fl, fmt.Errorf("no response within %v: %w", l.timeouts.Request, context.DeadlineExceeded))
	case !s.resBegan && passed(l.tryBy):
		s.tryExpired(&fl)
	case !s.resBegan && passed(l.respBy):
		s.expire(&fl, fmt.Errorf("no response within %v of the request's end: %w", l.timeouts.Response, context.DeadlineExceeded))
	case l.timeouts.Idle > 0 && now.Sub(l.moved) >= l.timeouts.Idle:
		s.expire(&fl, fmt.Errorf("nothing moved either way for %v: %w", l.timeouts.Idle, context.DeadlineExceeded))
	default:
		s.armTimer() // frames moved since it was set
	}
}

// expire ends a request past one of its bounds: before the response head,
// the client gets 504 and the target's stream is cancelled (one still
// connecting is let go by connect); after it, both streams are reset.
// Called with s.mu held.
func (s *stream) expire(fl *flusher, err error) {
	if s.resBegan {
		s.x.failed = true
		cfg := &s.sc.p.cfg
		cfg.Log.Info("response cut off", "direction", cfg.Direction, "target", s.sc.target(),
			"authority", s.authority, "err", err)
		s.resetBoth(fl, http2.ErrCodeCancel, http2.ErrCodeCancel, true, true)
		return
	}
	if s.x.key.Direction == "" {
		s.routeLocal() // held by a fault's delay: it went nowhere
	}
	if s.uc != nil {
		s.uc.writeRST(fl, s.upID, http2.ErrCodeCancel)
	}
	s.failed(fl, err)
}

// tryExpired sends the request again when the attempt under way ran past
// its per-try bound and its policy allows; otherwise the client gets 504.
// Called with s.mu held.
func (s *stream) tryExpired(fl *flusher) {
	err := fmt.Errorf("no response within %v, the attempt's timeout: %w", s.lim.timeouts.Attempt, context.DeadlineExceeded)
	if s.mayRetry(metrics.RetryTimeout) {
		s.again(fl, fmt.Errorf("%w: %w", httpproxy.ErrServerError, err), false)
		return
	}
	s.expire(fl, err)
}

// retryHead decides whether the response head f, of status code, sends
// the request again under its retry policy: for gRPC, a trailers-only
// response whose grpc-status the policy takes (or, without one, whose
// HTTP status it takes); otherwise a status the policy takes. Called with
// s.mu held, before the head goes anywhere.
func (s *stream) retryHead(fl *flusher, f *headerBlock, code int) bool {
	p := s.lim.retry.Policy
	why, retryable := metrics.RetryHTTP, false
	grpcCode := -1
	switch {
	case !s.grpc:
		retryable = p.RetryHTTP(code)
	case !f.StreamEnded():
		// A body follows: not retried (its trailers come too late).
	default:
		for _, hf := range f.RegularFields() {
			if hf.Name == "grpc-status" {
				if n, err := strconv.Atoi(hf.Value); err == nil {
					grpcCode = n
				}
			}
		}
		if grpcCode >= 0 {
			why, retryable = metrics.RetryGRPC, p.RetryGRPC(grpcCode)
		} else {
			retryable = code != 200 && p.RetryHTTP(code)
		}
	}
	if !retryable || !s.mayRetry(why) {
		return false
	}
	var err error
	if code >= 500 || grpcCode > 0 {
		err = fmt.Errorf("%w: %d grpc-status %d", httpproxy.ErrServerError, code, grpcCode)
	}
	s.again(fl, err, f.StreamEnded())
	return true
}

// mayRetry asks the request's Retry whether it goes again for why: it
// must have all its body (the client ended it) and all of it kept, and no
// informational head but 100 Continue went to the client (a client takes
// several of those, RFC 9110 15.2). Called with s.mu held.
func (s *stream) mayRetry(why metrics.RetryReason) bool {
	if s.lim == nil || s.lim.retry.Policy == nil || s.hinted {
		return false
	}
	n := s.req.queued()
	if s.req.rec != nil {
		n += s.req.rec.Len()
	}
	cfg := &s.sc.p.cfg
	return s.lim.retry.Allow(cfg.Metrics, cfg.Direction, why, n, s.req.end && s.resendable())
}

// again sends the request to a new pick of its backend once its policy
// allowed a retry: the balancer hears how the attempt went (err), the
// target's stream is cancelled unless both its sides ended (upEnded: the
// target ended its own), and the request's body goes back to its queue.
// Called with s.mu held.
func (s *stream) again(fl *flusher, err error, upEnded bool) {
	if s.x.ep.Report != nil {
		s.x.ep.Report(time.Since(s.lim.tryStart), err)
		s.x.ep.Report = nil
	}
	if s.uc != nil {
		if !upEnded || !s.req.done {
			s.uc.writeRST(fl, s.upID, http2.ErrCodeCancel)
		}
		s.takeOff()
	}
	s.lim.gen++ // a connect under way is for the attempt given up
	s.beginTry(false)
	s.route(fl, nil)
}
