package httpproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/tap"
)

// maxAttempts bounds the endpoints one balanced request is sent to: its
// first, and up to two others of the same destination when no connection
// could be made. Nothing was sent then, so this holds for any method.
const maxAttempts = 3

// maxRedraws bounds the picks that look for an endpoint the request has
// not tried yet.
const maxRedraws = 4

// errTriedAll ends the attempts of a request when the balancer offers no
// endpoint it has not tried.
var errTriedAll = errors.New("no endpoint left that the request has not tried")

// exchange is one request on its way through the proxy: the endpoints it
// tried, and how its current attempt goes. Its methods run on the request's
// handler goroutine, but for the tap's publication, which runs once.
type exchange struct {
	p    *Proxy
	in   *http.Request // as the client sent it, but for its held body
	rec  recorder
	conn *ConnInfo
	body *heldBody // nil but for a balanced request with a body

	tried  [maxAttempts]netip.AddrPort // the first ntried, in order
	ntried int
	cur    *http.Request // the current attempt, routed
	ep     Endpoint      // the current attempt's; Report nil once reported
	start  time.Time     // when the current attempt started
	// mayRetry lets writeError leave a connect failure of the current
	// attempt unanswered (held), for another endpoint to be tried.
	mayRetry   bool
	held       bool
	connectErr error // the current attempt's connect failure, nil if none

	tapOnce sync.Once
	tapped  *tap.Pending
}

// run sends the request to an endpoint, and while one cannot be connected
// to, to another one not tried yet (maxAttempts in all); the response, or
// the answer for the last failure, goes to the client.
func (x *exchange) run() {
	var last *http.Request // the attempt whose failure is held
	for attempt := 1; ; attempt++ {
		out, err := x.next(attempt)
		switch {
		case err != nil && last != nil:
			// No other endpoint: the failure held is the answer.
			x.cur, x.mayRetry = last, false
			x.p.writeError(&x.rec, last, x.connectErr)
			return
		case err != nil:
			x.rec.unreached = metrics.NoEndpoint
			x.p.writeNoEndpoints(&x.rec, out, x.conn.Target, err)
			return
		}
		x.held = false
		x.p.rp.ServeHTTP(&x.rec, out)
		if !x.held {
			return
		}
		x.p.cfg.Log.Debug("connecting failed; trying another endpoint", "direction", x.p.cfg.Direction,
			"target", x.conn.Target.String(), "endpoint", x.ep.Addr.String(), "err", x.connectErr)
		x.report() // before the next pick, so the balancer avoids the endpoint
		last = out
	}
}

// next routes the request's attempt-th attempt to an endpoint not tried
// yet, and makes it the current one.
func (x *exchange) next(attempt int) (*http.Request, error) {
	for range maxRedraws {
		out, ep, err := x.p.pick(x.in, x.conn.Target)
		if err != nil {
			if x.cur == nil {
				x.rec.key = x.routeKey(out) // for the 503, counted under the route
			}
			return out, err
		}
		if ep.Report != nil && slices.Contains(x.tried[:x.ntried], ep.Addr) {
			ep.Report(0, context.Canceled) // unused: no outcome, no longer pending
			continue
		}
		x.tried[x.ntried] = ep.Addr
		x.ntried++
		x.ep, x.start, x.connectErr = ep, time.Now(), nil
		x.mayRetry = ep.Report != nil && attempt < maxAttempts
		out = x.p.chooseWireProto(out)
		x.rec.key = x.routeKey(out)
		if x.p.cfg.Tap != nil && x.p.cfg.Tap.Watchers() > 0 {
			// Published once a connection is made, so that it names the
			// endpoint the request went to, not one it could not reach.
			out = out.WithContext(httptrace.WithClientTrace(out.Context(), &httptrace.ClientTrace{
				GotConn: func(httptrace.GotConnInfo) { x.publishTap() },
			}))
		}
		x.cur = out
		return out, nil
	}
	return x.cur, errTriedAll
}

// routeKey is the request's HTTP series, routed as out.
func (x *exchange) routeKey(out *http.Request) metrics.RouteKey {
	ctx := out.Context()
	k := metrics.RouteKey{
		Direction: x.p.cfg.Direction, Authority: out.Host, Target: x.conn.Target.String(),
		Dst: dstFrom(ctx), ClientID: x.conn.ClientID,
	}
	if x.p.cfg.MeshTLS != nil {
		k.ServerID = identityFrom(ctx) // proven by the handshake, or the request fails
	}
	return k
}

// holdConnectFailure is called by writeError for a connect failure of the
// current attempt: true leaves it unanswered, for another endpoint to be
// tried, while no byte of the request was taken and its client waits.
func (x *exchange) holdConnectFailure(r *http.Request, err error) bool {
	x.connectErr = err
	if !x.mayRetry || x.body.taken() || r.Context().Err() != nil {
		return false
	}
	x.held = true
	return true
}

// publishTap shows the request to tap watchers, once.
func (x *exchange) publishTap() {
	x.tapOnce.Do(func() {
		r := x.cur
		if r == nil {
			r = x.in // refused before any attempt
		}
		x.tapped = x.p.tap(r, x.rec.key)
	})
}

// report tells the balancer how the current attempt went, once: the time
// to its response headers and its outcome, or its connect failure.
func (x *exchange) report() {
	if x.ep.Report == nil {
		return
	}
	rtt, err := x.rec.took()-x.start.Sub(x.rec.start), outcome(x.cur, &x.rec)
	if x.connectErr != nil {
		rtt, err = 0, x.connectErr // no latency to learn from; ejects it (balance.ErrUnreachable)
	}
	x.ep.Report(rtt, err)
	x.ep.Report = nil
}

// end counts, taps and reports the request once it is over. A panic with
// http.ErrAbortHandler means the response broke after it started (the
// target reset the stream): it is counted, then passed on so that the
// server resets the client's stream.
func (x *exchange) end() {
	v := recover()
	rec := &x.rec
	success := v == nil && rec.succeeded()
	rec.countRequest() // if no response began
	rec.route.Response(rec.code(), success, rec.took())
	x.publishTap()
	x.tapped.Response(tap.Response{Status: rec.code(), GRPCStatus: rec.grpcStatus(), Latency: rec.took(), Success: success})
	if v != nil && rec.status < 500 {
		rec.status = http.StatusBadGateway // for the balancer: the stream broke
	}
	x.report()
	x.body.release()
	if v != nil {
		panic(v)
	}
}

// heldBody is a request body kept for another attempt until one reads it:
// a transport that could not connect closes the body it was given, which
// must not end the request. Once read it is the attempt's for good, and
// closing it closes the body.
type heldBody struct {
	rc    io.ReadCloser
	read  atomic.Bool
	close sync.Once
}

// holdBody wraps r's body, if it has one.
func holdBody(r *http.Request) *heldBody {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	b := &heldBody{rc: r.Body}
	r.Body = b
	return b
}

func (b *heldBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.rc.Read(p)
}

func (b *heldBody) Close() error {
	if !b.read.Load() {
		return nil // not taken yet: release closes it once the request is over
	}
	return b.closeOnce()
}

func (b *heldBody) closeOnce() (err error) {
	b.close.Do(func() { err = b.rc.Close() })
	return err
}

// taken reports whether an attempt read the body: it cannot be sent again.
func (b *heldBody) taken() bool { return b != nil && b.read.Load() }

// release closes the body at the end of the request.
func (b *heldBody) release() {
	if b != nil {
		b.closeOnce()
	}
}
