package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// A request whose route rule has a retry policy (docs/traffic.md 3.4,
// httpproxy.Retry) keeps its body as it is sent, up to the policy's max
// body, like one to a proven peer proxy (resend.go). Its response is held
// at its head: when the policy takes its status, or the attempt ran past
// its per-try timeout, and a retry is allowed (limit, body, budget), the
// response's body is read off when small (the connection then goes back
// to the pool) or its connection closed, and the request goes to a new
// pick of the same backend, an endpoint it has not tried when the
// balancer offers one. Otherwise, or once an informational head other
// than 100 Continue went to the client (several 100s a client takes, RFC
// 9110 15.2; another backend's 103 could contradict the first's), the
// response goes to the client as it is.
//
// Timeouts (docs/traffic.md 3.3, httpproxy.Timeouts): the request's bounds
// the whole of it from its arrival, connecting and every attempt
// included, and its response's body; an attempt's bounds its connect and
// its wait for the response head; the response timeout bounds that wait
// from the end of the request body; the idle timeout the silence of
// either connection. Past one before the head, the client gets 504; past
// the request's or the idle one after it, the client's connection closes,
// as the status cannot change any more.

// errRetry is forward's word that the request goes again under its retry
// policy.
var errRetry = errors.New("retried under the route's retry policy")

// maxDiscard bounds the body of a response that is retried and read off
// so that its connection can carry another request; a longer one closes
// the connection instead.
const maxDiscard = 64 << 10

// aLongTimeAgo is a deadline in the past: it ends a read under way.
var aLongTimeAgo = time.Unix(1, 0)

// beginTry starts an attempt's clock: its per-try bound runs from now.
func (x *exchange) beginTry(first bool) {
	if first {
		x.tryStart = x.start // no clock read on the common path
	} else {
		x.tryStart = time.Now()
		x.retries++
	}
	x.tryBy = time.Time{}
	if d := x.timeouts.Attempt; d > 0 {
		x.tryBy = x.tryStart.Add(d)
	}
}

// connect returns a connection to key, from the pool or, with fresh, a new
// one, within the request's and the attempt's bounds.
func (x *exchange) connect(key poolKey, fresh bool) (*upstream, error) {
	pool := x.cc.p.pool
	ctx := context.Background()
	if by := firstSet(x.deadline, x.tryBy); !by.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, by)
		defer cancel()
	}
	if fresh {
		return pool.fresh(ctx, key)
	}
	return pool.get(ctx, key, x.careful())
}

// firstSet is the earlier of a and b, either zero meaning none.
func firstSet(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// expired reports whether the request's deadline has passed.
func (x *exchange) expired() bool {
	return !x.deadline.IsZero() && !time.Now().Before(x.deadline)
}

// headBy is when the response head must have come: the request's
// deadline, the attempt's, and, when the body is all sent (bodySent), the
// response timeout from now; zero for none.
func (x *exchange) headBy(bodySent bool) time.Time {
	by := firstSet(x.deadline, x.tryBy)
	if bodySent && x.timeouts.Response > 0 {
		by = firstSet(by, time.Now().Add(x.timeouts.Response))
	}
	return by
}

// timeoutError is the request's deadline passing.
func (x *exchange) timeoutError() error {
	return fmt.Errorf("no response within %v: %w", x.timeouts.Request, context.DeadlineExceeded)
}

// timedOut says which bound a read of the response head that timed out
// ran into; it wraps context.DeadlineExceeded, so that the client gets 504.
func (x *exchange) timedOut(err error) error {
	now := time.Now()
	switch {
	case !x.deadline.IsZero() && !now.Before(x.deadline):
		return x.timeoutError()
	case !x.tryBy.IsZero() && !now.Before(x.tryBy):
		return fmt.Errorf("no response within %v, the attempt's timeout: %w", x.timeouts.Attempt, context.DeadlineExceeded)
	}
	return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
}

// responseLate is the response timeout passing after a streamed body.
func (x *exchange) responseLate() error {
	return fmt.Errorf("no response within %v of the request's end: %w", x.timeouts.Response, context.DeadlineExceeded)
}

// tryTimedOut reports whether err is the attempt's per-try bound passing
// while the request's has not.
func (x *exchange) tryTimedOut(err error) bool {
	if x.tryBy.IsZero() || !errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	now := time.Now()
	return !now.Before(x.tryBy) && (x.deadline.IsZero() || now.Before(x.deadline))
}

// retryStatus decides whether a response head the rule's retry policy
// takes sends the request again; if so, it reads the response off (or
// closes u) and tells the balancer how the attempt went.
func (x *exchange) retryStatus(u *upstream, body *bodySender) bool {
	p, code := x.retry.Policy, x.cc.res.status
	if p == nil || code < 200 || x.hinted || !p.RetryHTTP(code) {
		return false
	}
	if body != nil {
		x.finishBody(body) // a body still coming when the head came is not all kept
	}
	if !x.allowRetry(metrics.RetryHTTP) {
		return false
	}
	x.readOffResponse(u, body, maxDiscard)
	var err error
	if code >= 500 {
		err = fmt.Errorf("%w: %d", httpproxy.ErrServerError, code)
	}
	x.reportTry(err)
	return true
}

// retryTimeout decides whether an attempt whose response head did not
// come within its per-try bound goes again. If so, u is closed, which
// cancels the attempt at its target.
func (x *exchange) retryTimeout(u *upstream, body *bodySender, err error) bool {
	if x.retry.Policy == nil || x.hinted || !x.tryTimedOut(err) {
		return false
	}
	u.close()
	if body != nil {
		body.abandon()
		x.finishBody(body)
	}
	if !x.allowRetry(metrics.RetryTimeout) {
		return false
	}
	x.reportTry(fmt.Errorf("%w: %w", httpproxy.ErrServerError, err))
	return true
}

// allowRetry asks the request's Retry whether it goes again for why, with
// the body as it stands.
func (x *exchange) allowRetry(why metrics.RetryReason) bool {
	n := 0
	if x.place == bodyKept {
		n = x.replay.Len()
	}
	cfg := &x.cc.p.cfg
	return x.retry.Allow(cfg.Metrics, cfg.Direction, why, n, x.place != bodyLost)
}

// reportTry tells the balancer how an attempt that is not the last went.
func (x *exchange) reportTry(err error) {
	if x.ep.Report != nil {
		x.ep.Report(time.Since(x.tryStart), err)
		x.ep.Report = nil
	}
}

// readOffResponse reads off the body of a response that does not go to
// the client, when it is at most limit bytes and comes within
// earlyResponseWait, and pools u; otherwise, or when u could carry no
// other request, it closes u.
func (x *exchange) readOffResponse(u *upstream, body *bodySender, limit int) {
	r, res := &x.cc.req, &x.cc.res
	f, n, err := responseFraming(r, res)
	reuse := err == nil && r.minor == 1 && res.minor == 1 && !res.hasToken("connection", "close") &&
		(body == nil || (body.over && body.err == nil)) // an unsent body leaves the connection expecting it
	if reuse && f != noBody {
		u.tc.readBy(time.Now().Add(earlyResponseWait))
		switch f {
		case lengthBody:
			reuse = n <= int64(limit)
			if reuse {
				_, err = u.br.Discard(int(n))
				reuse = err == nil
			}
		case chunkedBody:
			sink := bufio.NewWriterSize(&capWriter{left: limit}, 512)
			_, err = copyChunked(sink, u.br, true)
			reuse = err == nil && sink.Flush() == nil
		default:
			reuse = false // ends with its connection
		}
	}
	if reuse {
		x.cc.p.pool.put(u)
	} else {
		u.close()
	}
}

// The states of a streamed body's wait for the response head.
const (
	headAwaited int32 = iota
	headCame
	headLate
)

// awaitHead starts the response timeout once the body is all sent, unless
// the head came first: past it, the read of the head ends at once. Called
// by the sender.
func (b *bodySender) awaitHead(u *upstream) {
	if b.respond <= 0 || b.head.Load() != headAwaited {
		return
	}
	time.AfterFunc(b.respond, func() {
		if b.head.CompareAndSwap(headAwaited, headLate) {
			u.tc.Conn.SetReadDeadline(aLongTimeAgo)
		}
	})
}

// headCame notes that the response head came, and reports whether it did
// so before the response timeout.
func (b *bodySender) headCame() bool {
	return b.head.CompareAndSwap(headAwaited, headCame) || b.head.Load() == headCame
}

// late reports whether the response timeout passed first.
func (b *bodySender) late() bool { return b.head.Load() == headLate }
