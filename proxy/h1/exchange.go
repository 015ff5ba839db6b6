package h1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/route"
	"github.com/mesh-dev/mesh/proxy/tap"
	"github.com/mesh-dev/mesh/proxy/trace"
)

// maxAttempts bounds the endpoints one balanced request is sent to: its
// first, and up to two others of the same destination when it provably
// reached no application: no connection could be made, or the endpoint's
// proxy said it could not reach its own (resend.go). That holds for any
// method.
const maxAttempts = 3

// maxRedraws bounds the picks that look for an endpoint the request has
// not tried yet.
const maxRedraws = 4

// maxResponseHead bounds a response head: generous, for the cookies some
// applications send, yet a bound.
const maxResponseHead = 1 << 20

// expectContinueWait is how long a request with Expect: 100-continue
// waits for the target's 100 before its body is sent anyway (RFC 9110
// §10.1.1 lets a client stop waiting; net/http waits 1s too).
const expectContinueWait = time.Second

// earlyResponseWait is how long, once a response is over, the proxy waits
// for the request body still being sent before it gives up on both
// connections: the target answered without reading all of it.
const earlyResponseWait = time.Second

// exchange is one request on its way: where it went and how it went.
type exchange struct {
	cc     *clientConn
	start  time.Time
	ep     httpproxy.Endpoint
	key    metrics.RouteKey
	route  *metrics.Route
	tapped *tap.Pending
	status int           // of the final response, or the proxy's answer
	after  time.Duration // time to the response head
	failed bool          // the response broke after it began
	// unreached says why the proxy answered itself, "" once the request
	// reached an application.
	unreached metrics.UnreachedReason
	routed    routed // what the target's route decided; zero without one

	// The request's bounds (docs/traffic.md 3.3, retry.go): its rule's
	// timeouts, the request's deadline from them, and the attempt's.
	timeouts httpproxy.Timeouts
	deadline time.Time // start + timeouts.Request; zero: none
	tryStart time.Time // when this attempt began
	tryBy    time.Time // this attempt's bound to its response head; zero: none
	retry    httpproxy.Retry

	// What another attempt needs to know (resend.go).
	hadBody   bool              // the request came with a body
	place     bodyPlace         // where that body is now
	replay    *httpproxy.Replay // the body as sent, to a proven peer proxy or under a retry policy; nil until kept
	recording bool              // this attempt keeps its body in replay
	sender    *bodySender       // this attempt's, if it streams the body
	written   bool              // a byte of this attempt went into a connection: it may have reached the target
	informed  bool              // a 1xx response went to the client
	hinted    bool              // one other than 100 Continue, which a retry could contradict

	// For the access log: the body bytes each way, and the attempts
	// after the first.
	reqBytes, resBytes int64
	retries            int

	span *trace.Span // nil without a tracer
}

// exchange forwards the request in cc.req and relays its response. It
// returns whether the client connection may carry another request.
func (cc *clientConn) exchange() bool {
	x := &exchange{cc: cc, start: time.Now(), hadBody: cc.req.body != noBody}
	defer x.dropReplay()
	if t := cc.p.cfg.Tracer; t != nil {
		x.startSpan(t)
	}
	if cc.info.Authz != nil {
		if why := cc.authorize(); why != nil {
			return cc.refuse(x, why)
		}
	}
	x.timeouts.Response = cc.p.cfg.ResponseTimeout
	if ok, keep := cc.route(x); !ok {
		return keep
	}
	if x.timeouts.Idle > 0 {
		cc.tc.idle = minTimeout(cc.tc.idle, x.timeouts.Idle)
	}
	return x.attempts()
}

// attempts sends the request to endpoints until one answers it: the
// first, others of the same destination when it provably reached no
// application (resend.go), and as its rule's retry policy allows
// (retry.go). It returns whether the client connection may go on.
func (x *exchange) attempts() bool {
	cc, p := x.cc, x.cc.p
	var triedBuf [maxAttempts]netip.AddrPort
	tried := triedBuf[:0]
	var lastErr error // why the last attempt reached no application
	undelivered := 0
	for {
		if x.expired() {
			if lastErr != nil {
				x.unreached = metrics.ConnectFailed
			}
			return x.answerFailure(x.timeoutError())
		}
		// A configured retry may go back to an endpoint it tried, when the
		// balancer offers no other; a request that reached none may not.
		ep, err := cc.pick(tried, x.routed.backend, lastErr == nil)
		if err != nil {
			if lastErr != nil {
				break // the failure held is the answer
			}
			return cc.noEndpoint(x, err)
		}
		if lastErr != nil {
			p.cfg.Metrics.Retried(p.cfg.Direction, metrics.NotDelivered)
		}
		tried = append(tried, ep.Addr)
		x.ep = ep
		x.key = cc.routeKey(ep, x.routed.rule)
		x.beginTry(len(tried) == 1)
		u, err := x.connect(poolKey{addr: ep.Addr, identity: cc.identity(ep)}, false)
		if err == nil {
			x.publishTap()
			keep, again := x.forward(u)
			if again == nil {
				return keep
			}
			if again == errRetry {
				lastErr = nil
				continue
			}
			err = again
		}
		lastErr = err
		p.cfg.Log.Debug("request reached no application", "direction", p.cfg.Direction,
			"target", cc.info.Target.String(), "endpoint", ep.Addr.String(), "err", err)
		if x.ep.Report == nil {
			break // not balanced: there is no other endpoint to try
		}
		x.ep.Report(0, err) // ejects it (balance.ErrUnreachable) before the next pick
		x.ep.Report = nil
		if undelivered++; undelivered >= maxAttempts {
			break
		}
	}
	return x.connectFailed(lastErr)
}

// pick chooses an endpoint not in tried, of backend ("" for the target's
// own endpoints); with again, one in tried when the balancer offers no
// other.
func (cc *clientConn) pick(tried []netip.AddrPort, backend string, again bool) (httpproxy.Endpoint, error) {
	target := cc.info.Target
	if cc.p.cfg.Pick == nil {
		if len(tried) > 0 && !again {
			return httpproxy.Endpoint{}, errTriedAll
		}
		return httpproxy.Endpoint{Addr: target}, nil
	}
	var seen httpproxy.Endpoint // one tried before, for again
	haveSeen := false
	for range maxRedraws {
		ep, err := cc.p.cfg.Pick(context.Background(), target, backend)
		if errors.Is(err, httpproxy.ErrNoEndpoints) || errors.Is(err, httpproxy.ErrUnavailable) {
			unused(seen)
			return ep, err
		}
		if err != nil {
			ep = httpproxy.Endpoint{Addr: target} // not the mesh's: as it was addressed
		}
		if !slices.Contains(tried, ep.Addr) {
			unused(seen)
			return ep, nil
		}
		balanced := ep.Report != nil
		if again && !haveSeen {
			seen, haveSeen = ep, true
		} else {
			unused(ep)
		}
		if !balanced {
			break
		}
	}
	if haveSeen {
		return seen, nil
	}
	return httpproxy.Endpoint{}, errTriedAll
}

// unused tells the balancer that a pick it made is not used: it has no
// outcome, and is no longer pending.
func unused(ep httpproxy.Endpoint) {
	if ep.Report != nil {
		ep.Report(0, context.Canceled)
	}
}

// errTriedAll ends the attempts of a request when the balancer offers no
// endpoint it has not tried.
var errTriedAll = errors.New("no endpoint left that the request has not tried")

// identity is the mesh TLS identity a connection to ep must prove.
func (cc *clientConn) identity(ep httpproxy.Endpoint) string {
	if cc.p.cfg.MeshTLS == nil {
		return ""
	}
	return ep.Identity
}

// routeKey is the request's HTTP series once it goes to ep.
func (cc *clientConn) routeKey(ep httpproxy.Endpoint, rule *route.Rule) metrics.RouteKey {
	return metrics.RouteKey{
		Direction: cc.p.cfg.Direction, Authority: cc.authority(), Target: cc.target(),
		Dst: ep.Dst, ClientID: cc.info.ClientID, ServerID: cc.identity(ep), Route: httpproxy.RouteRef(rule),
	}
}

// forward sends the request on u and relays the response; it returns
// whether the client connection may go on. When the request provably
// reached no application through u, it answers nothing and returns why,
// for the caller to try another endpoint or answer (resend.go); when its
// retry policy sends it again, errRetry (retry.go).
func (x *exchange) forward(u *upstream) (keep bool, again error) {
	cc := x.cc
	x.written = false
	x.recording = x.hadBody && x.place == bodyUnsent && (u.key.identity != "" || x.retry.Policy != nil)
	if x.recording && x.replay == nil {
		x.replay = &httpproxy.Replay{Limit: x.retry.ReplayLimit()}
	}
	if x.timeouts.Idle > 0 {
		u.tc.idle = minTimeout(u.tc.idle, x.timeouts.Idle) // until the pool has it back
	}
	got := u.tc.got
	body, err := x.send(u)
	if err == nil {
		err = x.readResponse(u, body)
	}
	if err != nil && u.reused && x.staleResend(body, err, u.tc.got == got) {
		// The endpoint had closed the pooled connection: send the request
		// once more on a new one.
		u.close()
		fresh, derr := x.connect(u.key, true)
		if derr != nil {
			if !x.written {
				return false, derr
			}
			return x.connectFailed(derr), nil
		}
		if !x.written {
			cc.p.cfg.Metrics.Retried(cc.p.cfg.Direction, metrics.NotDelivered)
		}
		u = fresh
		if x.timeouts.Idle > 0 {
			u.tc.idle = minTimeout(u.tc.idle, x.timeouts.Idle)
		}
		if body, err = x.send(u); err == nil {
			err = x.readResponse(u, body)
		}
	}
	if err != nil {
		if x.retryTimeout(u, body, err) {
			return false, errRetry
		}
		u.close()
		if body != nil {
			body.abandon()
		}
		if !x.written && x.place != bodyLost {
			// Not a byte went out: as good as a connection never made.
			return false, &httpproxy.ConnectError{Err: err}
		}
		return x.failed502(err), nil
	}
	if x.notDeliveredBy(u) && x.dropAnswer(u, body) {
		return false, errNotDelivered
	}
	if x.retryStatus(u, body) {
		return false, errRetry
	}
	return x.relay(u, body), nil
}

// send writes the request head, and the body when it is all in hand
// (kept from an attempt before, or read with the head); otherwise it
// starts a bodySender.
func (x *exchange) send(u *upstream) (*bodySender, error) {
	cc, r := x.cc, &x.cc.req
	extra := ""
	if r.upgrade {
		extra = "Connection: Upgrade\r\n"
	}
	before := u.tc.written
	writeHead(u.bw, &r.head, extra)
	switch {
	case x.place == bodyKept:
		u.bw.Write(x.replay.Bytes())
		x.reqBytes = int64(len(x.replay.Bytes()))
	case r.body == lengthBody && !r.expect && int64(cc.br.Buffered()) >= r.length:
		// A small body already read with the head: one write for both.
		b, _ := cc.br.Peek(int(r.length))
		u.bw.Write(b)
		x.keep(b)
		x.reqBytes = r.length
		cc.br.Discard(int(r.length))
		r.body = noBody // sent
	}
	err := u.bw.Flush()
	x.written = x.written || u.tc.written != before
	if err != nil {
		return nil, &writeError{err}
	}
	if r.body == noBody || x.place == bodyKept {
		return nil, nil
	}
	b := &bodySender{cc: cc, done: make(chan error, 1), proceed: make(chan struct{}), stop: make(chan struct{}),
		respond: x.timeouts.Response}
	if x.recording {
		u.tc.tee = x.replay // cleared by the sender once the body is over
	}
	x.sender = b
	cc.bodyBusy = true
	go b.run(cc, u)
	return b, nil
}

// bodySender copies a request body to the target while the proxy waits
// for the response: a target may answer before it has read the body, and
// with Expect: 100-continue it says when to send it.
type bodySender struct {
	done    chan error    // the copy's outcome
	proceed chan struct{} // closed on the target's 100 Continue
	stop    chan struct{} // closed when the body must not be sent
	started bool          // proceed was closed
	stopped bool
	cc      *clientConn
	// Set by finish: over once the copy's outcome, err, came; gaveUp when
	// it did not come in time.
	over, gaveUp bool
	err          error
	// respond, when set, bounds the wait for the response head from the
	// end of the body (docs/traffic.md 3.3): the sender starts it, and
	// head says whether the head came first (retry.go).
	respond time.Duration
	head    atomic.Int32
	// n is the body bytes copied, set before done is sent.
	n int64
}

func (b *bodySender) run(cc *clientConn, u *upstream) {
	r := &cc.req
	if r.expect {
		t := time.NewTimer(expectContinueWait)
		select {
		case <-b.proceed:
		case <-t.C:
		case <-b.stop:
			t.Stop()
			b.done <- errNotSent
			return
		}
		t.Stop()
	}
	n, err := copyBody(u.bw, cc.br, r.body, r.length)
	b.n = n
	if err == nil {
		if ferr := u.bw.Flush(); ferr != nil {
			err = &writeError{ferr}
		}
	}
	u.tc.tee = nil
	if err == nil {
		b.awaitHead(u)
	}
	var we *writeError
	if err != nil && !errors.As(err, &we) {
		// The client's body broke off: close the target's connection, so
		// that it does not wait for the rest, and the response read ends.
		u.tc.Close()
	}
	b.done <- err
}

// errNotSent is a body the target answered before asking for.
var errNotSent = errors.New("request body not sent: the target answered first")

func (b *bodySender) goAhead() {
	if b != nil && !b.started && !b.stopped {
		b.started = true
		close(b.proceed)
	}
}

// finish waits for the body once the response is over, and reports
// whether all of it went out. It waits once: a second call says what the
// first found.
func (b *bodySender) finish() bool {
	if !b.started && !b.stopped {
		b.stopped = true
		close(b.stop)
	}
	if !b.over && !b.gaveUp {
		t := time.NewTimer(earlyResponseWait)
		select {
		case b.err = <-b.done:
			b.over = true
			b.cc.bodyBusy = false
		case <-t.C:
			b.gaveUp = true // still reading: the connection's buffers stay with it
		}
		t.Stop()
	}
	return b.over && b.err == nil
}

// abandon stops a body whose exchange failed; the caller closes the
// connections it copies between.
func (b *bodySender) abandon() {
	if !b.started && !b.stopped {
		b.stopped = true
		close(b.stop)
	}
}

// readResponse reads the response head, passing 1xx heads on to the
// client (but to HTTP/1.0 ones, which cannot take them), until the final
// one or a 101 for an upgrade. The head is awaited until the request's
// deadline, the attempt's, or the response timeout from the end of the
// body, whichever comes first (retry.go); the response's body then until
// the request's deadline.
func (x *exchange) readResponse(u *upstream, body *bodySender) error {
	cc := x.cc
	if by := x.headBy(body == nil); !by.IsZero() {
		u.tc.readBy(by)
	}
	for {
		if err := readHead(u.br, &cc.res, maxResponseHead); err != nil {
			switch {
			case body != nil && body.late():
				return x.responseLate()
			case errors.Is(err, io.EOF):
				return errClosedFirst
			case isTimeout(err):
				return x.timedOut(err)
			}
			return err
		}
		if err := cc.res.parseStatusLine(); err != nil {
			return err
		}
		code := cc.res.status
		if code >= 200 || (code == http.StatusSwitchingProtocols && cc.req.upgrade) {
			if body != nil && !body.headCame() {
				return x.responseLate()
			}
			u.tc.readBy(time.Time{})
			if !x.deadline.IsZero() {
				u.tc.readBy(x.deadline) // the body too, and its client connection closes past it
			}
			return nil
		}
		if code == http.StatusSwitchingProtocols {
			return errors.New("101 Switching Protocols to a request that did not ask to upgrade")
		}
		if code == http.StatusContinue {
			body.goAhead()
		}
		if cc.req.minor == 1 {
			x.informed = true
			x.hinted = x.hinted || code != http.StatusContinue
			writeHead(cc.bw, &cc.res, "")
			if err := cc.bw.Flush(); err != nil {
				return &clientGone{err}
			}
		}
	}
}

// errClosedFirst is a target that closed the connection before the first
// byte of a response.
var errClosedFirst = fmt.Errorf("the target closed the connection before responding: %w", io.ErrUnexpectedEOF)

// clientGone is a failure to write to the client.
type clientGone struct{ err error }

func (e *clientGone) Error() string { return "client gone: " + e.err.Error() }
func (e *clientGone) Unwrap() error { return e.err }

// relay passes the final response head and body to the client, and
// returns whether the client connection may go on.
func (x *exchange) relay(u *upstream, body *bodySender) bool {
	cc, r, res := x.cc, &x.cc.req, &x.cc.res
	x.status, x.after = res.status, time.Since(x.start)
	x.countRequest()

	f, n, err := responseFraming(r, res)
	if err != nil {
		u.close()
		if body != nil {
			body.abandon()
		}
		x.status = http.StatusBadGateway
		x.done(false)
		cc.writeLocal(local{code: http.StatusBadGateway, what: "unreachable", msg: "mesh-proxy: malformed response: " + err.Error()}, true)
		cc.bw.Flush()
		return false
	}
	tunnel := (res.status == http.StatusSwitchingProtocols && r.upgrade) ||
		(r.connect && res.status >= 200 && res.status < 300)
	upstreamKeep := !tunnel && f != closeBody && r.minor == 1 && !res.hasToken("connection", "close") &&
		(res.minor == 1 || res.hasToken("connection", "keep-alive"))
	dechunk := f == chunkedBody && r.minor == 0
	keep := !tunnel && r.keepAlive && f != closeBody && !dechunk && !cc.p.shuttingDown()
	res.dropHopByHop(tunnel && res.status == http.StatusSwitchingProtocols)
	extra := ""
	switch {
	case tunnel && res.status == http.StatusSwitchingProtocols:
		extra = "Connection: Upgrade\r\n"
	case tunnel:
	case !keep:
		extra = "Connection: close\r\n"
	case r.minor == 0:
		extra = "Connection: keep-alive\r\n"
	}
	if dechunk {
		res.dropFields("transfer-encoding")
	}
	// Only the proxy's own answer to a peer proxy says it (resend.go):
	// never one an application sent, nor to a client.
	res.dropFields(notDeliveredField)
	if rule := x.routed.rule; rule != nil && rule.ResponseHeaders != nil {
		rule.ResponseHeaders.Apply(fieldEditor{h: res})
	}
	writeHead(cc.bw, res, extra)
	if tunnel {
		// A tunnel lasts: the request's deadline was for its head, and the
		// balancer learns from that.
		u.tc.readBy(time.Time{})
		x.report(nil)
		if err := cc.bw.Flush(); err != nil {
			u.close()
			x.done(false)
			return false
		}
		x.tunnel(u)
		return false
	}
	var copyErr error
	if dechunk {
		x.resBytes, copyErr = copyChunked(cc.bw, u.br, true)
	} else {
		x.resBytes, copyErr = copyBody(cc.bw, u.br, f, n)
	}
	sent := body == nil || x.finishBody(body)
	// Back to the pool, and counted, before the client has the last byte:
	// its next request must find the connection, and whoever reads the
	// metrics once it has the response must find it counted.
	if copyErr != nil || !sent || !upstreamKeep {
		u.close()
	} else {
		cc.p.pool.put(u)
	}
	if copyErr != nil {
		var we *writeError
		if !errors.As(copyErr, &we) {
			// The target broke off its response: the client gets a cut
			// one, as the connection closes.
			x.failed = true
			cc.p.cfg.Log.Info("response broke off", "direction", cc.p.cfg.Direction,
				"target", cc.info.Target.String(), "err", copyErr)
		}
		x.done(false)
		cc.bw.Flush()
		return false
	}
	x.done(true)
	if err := cc.bw.Flush(); err != nil {
		return false
	}
	return keep && sent
}

// responseFraming says how the response body ends (RFC 9112 §6.3).
func responseFraming(r *request, res *head) (framing, int64, error) {
	code := res.status
	if r.isHead || code == http.StatusNoContent || code == http.StatusNotModified ||
		code == http.StatusSwitchingProtocols || (r.connect && code >= 200 && code < 300) {
		return noBody, 0, nil
	}
	te, chunked := res.transferEncoding()
	if te {
		if chunked {
			res.dropFields("content-length")
			return chunkedBody, 0, nil
		}
		return closeBody, 0, nil
	}
	n, err := res.contentLength()
	if err != nil {
		return 0, 0, err
	}
	if n >= 0 {
		return lengthBody, n, nil
	}
	return closeBody, 0, nil
}

// began reports whether the response head reached the client side: after
// that, nothing about the request can be retried.
func (x *exchange) began() bool { return x.status != 0 }

// countRequest counts the request under its route, once, and tells its
// connection's TCP series whether it reached an application.
func (x *exchange) countRequest() {
	if x.route == nil {
		x.route = x.cc.info.CountRequest(x.cc.p.cfg.Metrics, x.key, x.unreached)
	}
}

// done records the end of the exchange: metrics, tap and the balancer.
func (x *exchange) done(ok bool) {
	x.countRequest()
	success := ok && !x.failed && x.status < 500
	x.route.Response(x.status, success, x.after)
	if x.tapped != nil {
		x.tapped.Response(tap.Response{Status: x.status, GRPCStatus: -1, Latency: x.after, Success: success})
	}
	if x.span != nil {
		x.endSpan()
	}
	if l := x.cc.p.cfg.AccessLog; l != nil {
		x.logAccess(l)
	}
	var err error
	switch {
	case x.failed:
		err = fmt.Errorf("%w: the response broke off", httpproxy.ErrServerError)
	case x.status >= 500:
		err = fmt.Errorf("%w: %d", httpproxy.ErrServerError, x.status)
	}
	x.report(err)
}

// report tells the balancer how the request went, once: the time to its
// response head from when the attempt that got it began.
func (x *exchange) report(err error) {
	if x.ep.Report != nil {
		rtt := x.after
		if !x.tryStart.IsZero() {
			rtt -= x.tryStart.Sub(x.start)
		}
		x.ep.Report(rtt, err)
		x.ep.Report = nil
	}
}

// publishTap shows the request to tap watchers, once it has somewhere to go.
func (x *exchange) publishTap() {
	h := x.cc.p.cfg.Tap
	if h == nil || x.tapped != nil || h.Watchers() == 0 {
		return // no allocation on the common path
	}
	cc := x.cc
	x.tapped = h.Request(tap.Request{
		Direction: string(cc.p.cfg.Direction), Src: cc.c.RemoteAddr().String(), Dst: x.ep.Addr.String(),
		DstWorkload: x.key.Dst.Workload, ClientID: x.key.ClientID, ServerID: x.key.ServerID,
		Method: methodString(cc.req.get(cc.req.method)), Scheme: "http", Authority: x.key.Authority,
		Path: string(cc.req.path), TraceID: tap.TraceIDOf(x.span),
	})
}

// refuse answers a request the connection's Authorizer denied with 403,
// or 429 with Retry-After for one a rate limit held back
// (httpproxy.RateLimited), counted and tapped like any other.
func (cc *clientConn) refuse(x *exchange, why error) bool {
	x.key = metrics.RouteKey{Direction: cc.p.cfg.Direction, Authority: cc.authority(), Target: cc.target(), ClientID: cc.info.ClientID}
	x.unreached = metrics.PolicyDenied
	x.route = cc.p.cfg.Metrics.Route(x.key) // denied requests keep their target
	x.route.Request()
	if cc.info.TCP != nil {
		cc.info.TCP.RequestUnreached(metrics.PolicyDenied)
	}
	x.ep.Addr = cc.info.Target
	x.publishTap()
	a := local{code: http.StatusForbidden, what: "unauthorized", msg: "mesh-proxy: unauthorized: " + why.Error()}
	var limited *httpproxy.RateLimited
	if errors.As(why, &limited) {
		a = local{code: http.StatusTooManyRequests, what: "rate limited", msg: "mesh-proxy: rate limited: " + limited.Error(),
			retryAfter: limited.RetryAfterHeader()}
	}
	var noRoute *httpproxy.NoInboundRoute
	if errors.As(why, &noRoute) {
		a = local{code: http.StatusNotFound, what: "no route", msg: "mesh-proxy: " + noRoute.Error()}
	}
	x.status, x.after = a.code, time.Since(x.start)
	x.resBytes = a.bodyLen()
	keep := cc.writeLocal(a, false)
	x.done(true)
	return cc.bw.Flush() == nil && keep
}

// noEndpoint answers 503 for a destination with no endpoint to send to,
// or one the controller could not answer for (err says which).
func (cc *clientConn) noEndpoint(x *exchange, err error) bool {
	host := cc.authority()
	msg := fmt.Sprintf("mesh-proxy: no endpoints available for %s (%s)", host, cc.info.Target)
	what := "no endpoints"
	if errors.Is(err, httpproxy.ErrUnavailable) {
		msg = fmt.Sprintf("mesh-proxy: %s (%s) not sent: the controller could not say whether it is meshed, and it is never sent in plain text then; retry once the controller is back", host, cc.info.Target)
		what = "controller unavailable"
	}
	cc.p.cfg.Log.Info("request failed", "direction", cc.p.cfg.Direction, "target", cc.info.Target.String(),
		"authority", host, "status", http.StatusServiceUnavailable, "err", err)
	x.key = metrics.RouteKey{Direction: cc.p.cfg.Direction, Authority: host, ClientID: cc.info.ClientID, Route: httpproxy.RouteRef(x.routed.rule)}
	x.unreached = metrics.NoEndpoint
	return x.answer(local{code: http.StatusServiceUnavailable, what: what, msg: msg})
}

// connectFailed answers a request that reached no application: no
// endpoint could be connected to (504 when connecting timed out, 502
// otherwise), or their proxies could not reach theirs (503). A peer proxy
// is told that nothing was delivered (resend.go).
func (x *exchange) connectFailed(err error) bool {
	x.unreached = metrics.ConnectFailed
	if x.tellsPeer() {
		return x.tellNotDelivered(err)
	}
	return x.answerFailure(err)
}

// failed502 answers a request whose target took it but gave no usable
// response: 504 when waiting for it timed out, 502 otherwise.
func (x *exchange) failed502(err error) bool {
	var cg *clientGone
	if errors.As(err, &cg) {
		x.status = http.StatusBadGateway
		x.done(false)
		return false
	}
	// The connection goes on only if the request's body was all read
	// (writeLocal says so in the answer, with Connection: close).
	return x.answerFailure(err)
}

// answerFailure logs err and answers it: 504 for a timeout, 502 otherwise.
func (x *exchange) answerFailure(err error) bool {
	cc := x.cc
	code, what := http.StatusBadGateway, "unreachable"
	switch {
	case errors.Is(err, errNotDelivered):
		code = http.StatusServiceUnavailable
	case isTimeout(err) || errors.Is(err, context.DeadlineExceeded):
		code, what = http.StatusGatewayTimeout, "timed out"
	}
	target := x.ep.Addr
	cc.p.cfg.Log.Info("request failed", "direction", cc.p.cfg.Direction, "target", target.String(),
		"authority", cc.authority(), "status", code, "err", err)
	return x.answer(local{code: code, what: what, msg: fmt.Sprintf("mesh-proxy: target %s %s: %v", target, what, err)})
}

// answer is the proxy's own response to the request, counted and tapped.
func (x *exchange) answer(a local) bool {
	x.status, x.after = a.code, time.Since(x.start)
	x.resBytes = a.bodyLen()
	x.countRequest()
	if x.tapped == nil {
		x.ep.Addr = x.cc.info.Target
		x.publishTap()
	}
	keep := x.cc.writeLocal(a, false)
	x.done(true)
	return x.cc.bw.Flush() == nil && keep
}

// local is a response of the proxy's own: its status, what went wrong
// (its Mesh-Proxy-Error field), and msg as its text.
type local struct {
	code      int
	what, msg string
	// notDelivered adds Mesh-Proxy-Not-Delivered: 1, for a peer proxy
	// (resend.go).
	notDelivered bool
	// retryAfter, when set, is the value of a Retry-After header (a 429
	// for a rate limit, httpproxy.RateLimited).
	retryAfter string
}

// writeLocal buffers a response of the proxy's own, for the caller to
// flush once it has counted it. The client connection closes after it
// when closing says so, or when the request's body was not read. It
// returns whether the connection may go on.
func (cc *clientConn) writeLocal(a local, closing bool) bool {
	r := &cc.req
	if r.body != noBody {
		closing = true // its body is still on the wire, unread
	}
	if !r.keepAlive || cc.p.shuttingDown() {
		closing = true
	}
	w := cc.bw
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(a.code))
	w.WriteString(" ")
	w.WriteString(http.StatusText(a.code))
	w.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nMesh-Proxy-Error: ")
	w.WriteString(a.what)
	if a.notDelivered {
		w.WriteString("\r\nMesh-Proxy-Not-Delivered: 1")
	}
	if a.retryAfter != "" {
		w.WriteString("\r\nRetry-After: ")
		w.WriteString(a.retryAfter)
	}
	bodyless := a.code == http.StatusNoContent || a.code == http.StatusNotModified // a fault's abort may be either
	if !bodyless {
		w.WriteString("\r\nContent-Length: ")
		w.WriteString(strconv.Itoa(len(a.msg) + 1))
	}
	if closing {
		w.WriteString("\r\nConnection: close")
	}
	w.WriteString("\r\n\r\n")
	if !bodyless {
		w.WriteString(a.msg)
		w.WriteString("\n")
	}
	return !closing
}

// headAuthorizer is an Authorizer that decides from the method, the path
// and the raw query, with no *http.Request to build (policy.Conn).
type headAuthorizer interface {
	AuthorizeHTTP(method, path, rawQuery string) error
}

// authorize asks the connection's Authorizer about the request. The path
// it reads is the decoded one, as net/http's URL.Path is.
func (cc *clientConn) authorize() error {
	r := &cc.req
	if a, ok := cc.info.Authz.(httpproxy.RouteAuthorizer); ok {
		// The raw path and query and the head's fields: the policy
		// decodes the path itself, and matches inbound routes on them.
		return a.AuthorizeRoute(headRequest{r})
	}
	path := string(r.path)
	if p, err := url.PathUnescape(path); err == nil {
		path = p
	}
	method, query := methodString(r.get(r.method)), string(r.query)
	if a, ok := cc.info.Authz.(headAuthorizer); ok {
		return a.AuthorizeHTTP(method, path, query)
	}
	return cc.info.Authz.AuthorizeRequest(&http.Request{Method: method, URL: &url.URL{Path: path, RawQuery: query},
		Host: string(r.host), Proto: "HTTP/1." + strconv.Itoa(r.minor), ProtoMajor: 1, ProtoMinor: r.minor, Header: http.Header{}})
}

// methodString returns the method as a string, the common ones without
// allocating.
func methodString(m []byte) string {
	switch string(m) {
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "HEAD":
		return "HEAD"
	case "PATCH":
		return "PATCH"
	case "OPTIONS":
		return "OPTIONS"
	}
	return string(m)
}

// authority is the request's Host as a string, kept from request to
// request while the client sends the same one.
func (cc *clientConn) authority() string {
	h := cc.req.host
	if string(h) != cc.lastHost {
		cc.lastHost = string(h)
	}
	return cc.lastHost
}

// target is the connection's original destination as a string.
func (cc *clientConn) target() string {
	if cc.targetStr == "" {
		cc.targetStr = cc.info.Target.String()
	}
	return cc.targetStr
}
