package h2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/tap"
	"github.com/mesh-dev/mesh/proxy/trace"
)

// maxAttempts bounds the endpoints one balanced request is sent to: its
// first, and up to two others of the same destination when it provably
// reached no application: no connection could be made, or the endpoint's
// proxy refused the stream because it could not reach its own
// (resend.go). That holds for any method.
const maxAttempts = 3

// maxRedraws bounds the picks that look for an endpoint the request has
// not tried yet.
const maxRedraws = 4

// errTriedAll ends the attempts of a request when the balancer offers no
// endpoint it has not tried.
var errTriedAll = errors.New("no endpoint left that the request has not tried")

// exchange is a stream's request on its way: where it went and how it
// went, for the metrics, tap and the balancer. Guarded by its stream's mu.
type exchange struct {
	start       time.Time
	tried       [maxAttempts]netip.AddrPort // the first endpoints picked; limits.tried has those of retries past them
	attempts    int                         // endpoints picked
	undelivered int                         // attempts that provably reached no application
	resent      int                         // times sent again to the same endpoint after a target refused it unprocessed
	ep          httpproxy.Endpoint          // Report nil once reported
	key         metrics.RouteKey
	route       *metrics.Route
	tapped      *tap.Pending
	status      int           // of the final response, or the proxy's answer
	after       time.Duration // time to the response head
	failed      bool          // the response broke off after it began
	canceled    bool          // the client reset the stream before its response ended
	// unreached says why the proxy answered itself, "" once the request
	// reached an application.
	unreached metrics.UnreachedReason
	// uncounted marks a stream refused before it was a request (its
	// header list too long): net/http's server never showed those to the
	// proxy either.
	uncounted bool
	retries   int         // attempts after the first, for the access log
	span      *trace.Span // nil without a tracer
}

// dispatch decides the stream's request and sends it on its way: its
// authorization, then its route when its target's Service has any (on the
// outbound side), then its endpoint. Called with s.mu held; fl is nil off
// the client's reader goroutine.
func (s *stream) dispatch(fl *flusher) {
	if t := s.sc.p.cfg.Tracer; t != nil {
		s.startSpan(t)
	}
	if s.sc.info.Authz != nil {
		if why := s.authorize(); why != nil {
			s.refuse(fl, why)
			return
		}
	}
	if d := s.sc.p.cfg.ResponseTimeout; d > 0 {
		s.limits().timeouts.Response = d
	}
	if routes := s.sc.p.cfg.Routes; routes != nil && s.method != "CONNECT" { // a tunnel has no path to route by
		if t := routes(s.sc.info.Target); !t.Empty() && !s.applyRoute(fl, t) {
			return
		}
	}
	s.send(fl)
}

// send sends the request on its first attempt. Called with s.mu held.
func (s *stream) send(fl *flusher) {
	s.beginTry(true)
	s.route(fl, nil)
}

// route picks an endpoint and sends the request there: at once on a
// pooled connection with a stream free, or from a goroutine of its own
// that connects first. lastErr is the previous attempt's failure to reach
// an application: the endpoint must be one the request has not tried; nil
// for the first attempt, or a retry of its policy, which may go back to
// one. Called with s.mu held.
func (s *stream) route(fl *flusher, lastErr error) {
	x := &s.x
	if lastErr != nil {
		x.undelivered++
	}
	if x.undelivered < maxAttempts {
		ep, err := s.pick(lastErr == nil)
		switch {
		case err != nil && lastErr != nil:
			// The connect failure held is the answer.
		case err != nil:
			s.noEndpoint(fl, err)
			return
		default:
			if lastErr != nil {
				cfg := &s.sc.p.cfg
				cfg.Metrics.Retried(cfg.Direction, metrics.NotDelivered)
				s.beginTry(false)
			}
			s.noteTried(ep.Addr)
			x.ep = ep
			x.key = s.routeKey(ep)
			k := poolKey{addr: ep.Addr, identity: s.identity(ep)}
			if uc := s.sc.p.pool.take(k); uc != nil {
				s.attach(fl, uc)
				return
			}
			go s.connect(k, s.attempt())
			return
		}
	}
	s.connectFailed(fl, lastErr)
}

// connect waits for a connection to k, which it may have to dial, and
// sends the request on it, or tries another endpoint; unless the attempt
// it was for, gen, was given up meanwhile (a per-try timeout).
func (s *stream) connect(k poolKey, gen int) {
	p := s.sc.p
	uc, err := p.pool.get(k)
	// Flushed once the stream's lock is let go: an answer is counted
	// before its client can read it.
	var fl flusher
	defer fl.flushAll()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.resBegan || gen != s.attempt() {
		// Closed, answered meanwhile (timed out while connecting), or
		// sent elsewhere.
		if uc != nil {
			uc.release()
		}
		return
	}
	if err == nil {
		s.attach(&fl, uc)
		return
	}
	p.cfg.Log.Debug("connecting failed", "direction", p.cfg.Direction,
		"target", s.sc.info.Target.String(), "endpoint", k.addr.String(), "err", err)
	if s.x.ep.Report == nil {
		s.connectFailed(&fl, err) // not balanced: there is no other endpoint to try
		return
	}
	s.x.ep.Report(0, err) // ejects it (balance.ErrUnreachable) before the next pick
	s.x.ep.Report = nil
	s.route(&fl, err)
}

// pick chooses an endpoint the request has not tried: one of its route's
// backend, or of its target; with again, one it tried when the balancer
// offers no other.
func (s *stream) pick(again bool) (httpproxy.Endpoint, error) {
	cfg, target := &s.sc.p.cfg, s.sc.info.Target
	if cfg.Pick == nil {
		if s.backend != "" {
			// Only the mesh resolves a backend's authority.
			return httpproxy.Endpoint{}, fmt.Errorf("%w: nothing resolves backend %s", httpproxy.ErrNoEndpoints, s.backend)
		}
		if s.x.attempts > 0 && !again {
			return httpproxy.Endpoint{}, errTriedAll
		}
		return httpproxy.Endpoint{Addr: target}, nil
	}
	var seen httpproxy.Endpoint // one tried before, for again
	haveSeen := false
	for range maxRedraws {
		ep, err := cfg.Pick(context.Background(), target, s.backend)
		if errors.Is(err, httpproxy.ErrNoEndpoints) || errors.Is(err, httpproxy.ErrUnavailable) {
			unused(seen)
			return ep, err
		}
		switch {
		case err != nil && s.backend != "":
			// A backend is the mesh's by definition (httpproxy.Picker).
			unused(seen)
			return ep, fmt.Errorf("%w: backend %s: %v", httpproxy.ErrNoEndpoints, s.backend, err)
		case err != nil:
			ep = httpproxy.Endpoint{Addr: target} // not the mesh's: as it was addressed
		}
		if !s.triedBefore(ep.Addr) {
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

// identity is the mesh TLS identity a connection to ep must prove.
func (s *stream) identity(ep httpproxy.Endpoint) string {
	if s.sc.p.cfg.MeshTLS == nil {
		return ""
	}
	return ep.Identity
}

func (s *stream) routeKey(ep httpproxy.Endpoint) metrics.RouteKey {
	return metrics.RouteKey{
		Direction: s.sc.p.cfg.Direction, Authority: s.authority, Target: s.sc.target(),
		Dst: ep.Dst, ClientID: s.sc.info.ClientID, ServerID: s.identity(ep), Route: httpproxy.RouteRef(s.rule),
	}
}

// attach opens the stream on uc, whose stream slot it holds: the request
// head, then whatever of the body has come. Called with s.mu held.
func (s *stream) attach(fl *flusher, uc *upConn) {
	s.uc = uc
	s.publishTap()
	end := s.req.end && s.req.queued() == 0 && s.req.trailers == nil
	uc.lock()
	s.upID = uc.nextID
	window, ok := uc.register(s)
	if !ok {
		// Retired (GOAWAY) since its slot was taken: another connection.
		uc.unlock(fl)
		s.uc, s.upID = nil, 0
		uc.release()
		go s.connect(uc.key, s.attempt())
		return
	}
	uc.nextID += 2
	s.req.window = window
	s.req.rec = nil
	retries := s.lim != nil && s.lim.retry.Policy != nil
	if (uc.key.identity != "" || retries) && !s.kept.Capped() {
		// A proven peer proxy may refuse it for want of its application;
		// a retry policy may send it again.
		if retries {
			s.kept.Limit = s.lim.retry.ReplayLimit()
		}
		s.req.rec = &s.kept
	}
	s.req.dst, s.req.dstID = uc.peer, s.upID
	s.res.src, s.res.srcID = uc.peer, s.upID
	uc.headersLocked(s.upID, end, s.fields, keepRequestField)
	uc.unlock(fl)
	if end {
		s.req.finished()
		return
	}
	s.req.drain(fl)
}

// detach takes the stream off a connection that will not process it
// (GOAWAY below its ID, REFUSED_STREAM), for another connection to the
// same endpoint. Only a request whose body went out, if any, is still in
// hand can be sent again (resendable); it reports whether this one could.
// Called with s.mu held.
func (s *stream) detach() bool {
	if !s.resendable() || s.uc == nil || s.x.resent >= maxAttempts {
		return false // bounded: a target that refuses every stream is not asked for ever
	}
	s.x.resent++
	cfg := &s.sc.p.cfg
	cfg.Metrics.Retried(cfg.Direction, metrics.NotDelivered)
	s.takeOff()
	go s.connect(poolKey{addr: s.x.ep.Addr, identity: s.identity(s.x.ep)}, s.attempt())
	return true
}

// publishTap shows the request to tap watchers, once it has somewhere to go.
func (s *stream) publishTap() {
	h := s.sc.p.cfg.Tap
	if h == nil || s.x.tapped != nil || h.Watchers() == 0 {
		return // no allocation on the common path
	}
	path := s.path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	s.x.tapped = h.Request(tap.Request{
		Direction: string(s.sc.p.cfg.Direction), Src: s.sc.c.RemoteAddr().String(), Dst: s.x.ep.Addr.String(),
		DstWorkload: s.x.key.Dst.Workload, ClientID: s.x.key.ClientID, ServerID: s.x.key.ServerID,
		Method: s.method, Scheme: "http", Authority: s.authority, Path: path,
		TraceID: tap.TraceIDOf(s.x.span),
	})
}

// countRequest counts the request under its route, once, and tells its
// connection's TCP series whether it reached an application.
func (s *stream) countRequest() {
	x := &s.x
	if x.route == nil {
		x.route = s.sc.info.CountRequest(s.sc.p.cfg.Metrics, x.key, x.unreached)
	}
}

// finish records the end of the exchange: metrics, tap and the balancer.
// Called once, as the stream closes.
func (x *exchange) finish(s *stream) {
	if !x.canceled {
		s.sc.completed.Add(1)
	}
	if x.span != nil {
		s.endSpan()
	}
	if x.uncounted {
		return
	}
	if x.status == 0 {
		// Reset before any response: counted as the 502 net/http's
		// server recorded for a request whose client went away.
		x.status, x.after, x.failed = http.StatusBadGateway, time.Since(x.start), true
	}
	if x.key.Direction == "" {
		x.key = metrics.RouteKey{Direction: s.sc.p.cfg.Direction, Authority: s.authority, Target: s.sc.target(), ClientID: s.sc.info.ClientID, Route: httpproxy.RouteRef(s.rule)}
	}
	s.countRequest()
	success := !x.failed && x.status < 500 && s.grpcStatus <= 0
	x.route.Response(x.status, success, x.after)
	if x.tapped != nil {
		x.tapped.Response(tap.Response{Status: x.status, GRPCStatus: s.grpcStatus, Latency: x.after, Success: success})
	}
	if l := s.sc.p.cfg.AccessLog; l != nil {
		s.logAccess(l)
	}
	if x.ep.Report == nil {
		return
	}
	rtt := x.after // from the start of the attempt that got the response
	if s.lim != nil && !s.lim.tryStart.IsZero() {
		rtt -= s.lim.tryStart.Sub(x.start)
	}
	var err error
	switch {
	case x.canceled:
		err = context.Canceled // the client gave up: nothing learnt about the endpoint
	case x.failed:
		err = fmt.Errorf("%w: the response broke off", httpproxy.ErrServerError)
	case x.status >= 500:
		err = fmt.Errorf("%w: %d", httpproxy.ErrServerError, x.status)
	}
	x.ep.Report(rtt, err)
	x.ep.Report = nil
}

// headAuthorizer is an Authorizer that decides from the method, the path
// and the raw query, with no *http.Request to build (policy.Conn).
type headAuthorizer interface {
	AuthorizeHTTP(method, path, rawQuery string) error
}

// authorize asks the connection's Authorizer about the request. The path
// it reads is the decoded one, as net/http's URL.Path is.
func (s *stream) authorize() error {
	if a, ok := s.sc.info.Authz.(httpproxy.RouteAuthorizer); ok {
		// The raw :path and the fields: the policy decodes the path
		// itself, and matches inbound routes on them.
		return a.AuthorizeRoute(routeRequest{s})
	}
	path, query, _ := strings.Cut(s.path, "?")
	if p, err := url.PathUnescape(path); err == nil {
		path = p
	}
	if a, ok := s.sc.info.Authz.(headAuthorizer); ok {
		return a.AuthorizeHTTP(s.method, path, query)
	}
	h := http.Header{}
	for _, f := range s.fields {
		if !f.IsPseudo() {
			h.Add(f.Name, f.Value)
		}
	}
	return s.sc.info.Authz.AuthorizeRequest(&http.Request{Method: s.method, URL: &url.URL{Path: path, RawQuery: query},
		Host: s.authority, Proto: "HTTP/2.0", ProtoMajor: 2, Header: h})
}

// refuse answers a request the connection's Authorizer denied: 403, or for
// gRPC PERMISSION_DENIED; one a rate limit held back
// (httpproxy.RateLimited), 429 with Retry-After, or RESOURCE_EXHAUSTED;
// counted and tapped like any other.
func (s *stream) refuse(fl *flusher, why error) {
	x := &s.x
	x.key = metrics.RouteKey{Direction: s.sc.p.cfg.Direction, Authority: s.authority, Target: s.sc.target(), ClientID: s.sc.info.ClientID}
	x.route = s.sc.p.cfg.Metrics.Route(x.key) // denied requests keep their target
	x.route.Request()
	if tcp := s.sc.info.TCP; tcp != nil {
		tcp.RequestUnreached(metrics.PolicyDenied)
	}
	x.unreached = metrics.PolicyDenied
	x.ep.Addr = s.sc.info.Target
	s.publishTap()
	var noRoute *httpproxy.NoInboundRoute
	if errors.As(why, &noRoute) {
		s.answer(fl, http.StatusNotFound, 12, "no route", "mesh-proxy: "+noRoute.Error()) // 12: UNIMPLEMENTED, as grpcCodeOf(404)
		return
	}
	var limited *httpproxy.RateLimited
	if !errors.As(why, &limited) {
		s.answer(fl, http.StatusForbidden, 7, "unauthorized", "mesh-proxy: unauthorized: "+why.Error()) // 7: PERMISSION_DENIED
		return
	}
	// 8: RESOURCE_EXHAUSTED; Retry-After goes with gRPC's answer too.
	s.answer(fl, http.StatusTooManyRequests, 8, "rate limited", "mesh-proxy: rate limited: "+limited.Error(),
		hpack.HeaderField{Name: "retry-after", Value: limited.RetryAfterHeader()})
}

// noEndpoint answers 503 (gRPC: UNAVAILABLE) for a destination with no
// endpoint to send to, or one the controller could not answer for.
func (s *stream) noEndpoint(fl *flusher, err error) {
	cfg, target := &s.sc.p.cfg, s.sc.info.Target
	msg := fmt.Sprintf("mesh-proxy: no endpoints available for %s (%s)", s.authority, target)
	what := "no endpoints"
	switch {
	case s.backend != "" && !errors.Is(err, httpproxy.ErrUnavailable):
		msg = fmt.Sprintf("mesh-proxy: no endpoints available for %s (%s): its route's backend %s has none", s.authority, target, s.backend)
	case errors.Is(err, httpproxy.ErrUnavailable):
		msg = fmt.Sprintf("mesh-proxy: %s (%s) not sent: the controller could not say whether it is meshed, and it is never sent in plain text then; retry once the controller is back", s.authority, target)
		what = "controller unavailable"
	}
	cfg.Log.Info("request failed", "direction", cfg.Direction, "target", target.String(),
		"authority", s.authority, "status", http.StatusServiceUnavailable, "err", err)
	s.x.key = metrics.RouteKey{Direction: cfg.Direction, Authority: s.authority, ClientID: s.sc.info.ClientID, Route: httpproxy.RouteRef(s.rule)}
	s.x.unreached = metrics.NoEndpoint
	s.x.ep.Addr = target
	s.countRequest()
	s.publishTap()
	s.answer(fl, http.StatusServiceUnavailable, 14, what, msg) // 14: UNAVAILABLE
}

// connectFailed answers a request that reached no application: no
// endpoint could be connected to, or their proxies refused it for want of
// theirs (503). A peer proxy's stream is refused (resend.go).
func (s *stream) connectFailed(fl *flusher, err error) {
	s.x.unreached = metrics.ConnectFailed
	if s.tellsPeer() {
		s.refuseUndelivered(fl, err)
		return
	}
	s.failed(fl, err)
}

// failed answers a request that got no usable response: 504 (gRPC:
// DEADLINE_EXCEEDED) for a timeout, 502 (UNAVAILABLE) otherwise.
func (s *stream) failed(fl *flusher, err error) {
	cfg := &s.sc.p.cfg
	code, grpcCode, what := http.StatusBadGateway, 14, "unreachable"
	var ne net.Error
	switch {
	case errors.Is(err, errNotDelivered):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		code, grpcCode, what = http.StatusGatewayTimeout, 4, "timed out"
	}
	target := s.x.ep.Addr
	cfg.Log.Info("request failed", "direction", cfg.Direction, "target", target.String(),
		"authority", s.authority, "status", code, "err", err)
	s.countRequest()
	if s.x.tapped == nil {
		s.x.ep.Addr = s.sc.info.Target
		s.publishTap()
		s.x.ep.Addr = target
	}
	s.answer(fl, code, grpcCode, what, fmt.Sprintf("mesh-proxy: target %s %s: %v", target, what, err))
}

// answer is the proxy's own response: for gRPC a trailers-only response
// with grpcCode, which a gRPC client reports as that status (gRPC over
// HTTP/2, "Responses"); otherwise code with msg as text, as http.Error
// writes it; extra fields go with either head. A request still sending
// its body is reset with NO_ERROR once answered (RFC 9113 §8.1), and its
// target's stream cancelled. Called with s.mu held.
func (s *stream) answer(fl *flusher, code, grpcCode int, what, msg string, extra ...hpack.HeaderField) {
	var fields []hpack.HeaderField
	body := ""
	if s.grpc {
		s.grpcStatus = grpcCode
		fields = []hpack.HeaderField{
			{Name: ":status", Value: "200"},
			{Name: "content-type", Value: "application/grpc"},
			{Name: "grpc-status", Value: strconv.Itoa(grpcCode)},
			{Name: "grpc-message", Value: grpcMessage(msg)},
			{Name: "mesh-proxy-error", Value: what},
		}
	} else {
		fields = []hpack.HeaderField{
			{Name: ":status", Value: strconv.Itoa(code)},
			{Name: "content-type", Value: "text/plain; charset=utf-8"},
			{Name: "x-content-type-options", Value: "nosniff"},
			{Name: "mesh-proxy-error", Value: what},
		}
		if code != http.StatusNoContent && code != http.StatusNotModified { // a fault's abort may be either
			body = msg + "\n"
			fields = append(fields, hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(body))})
		}
	}
	s.respond(fl, code, append(fields, extra...), body)
}

// respond sends the proxy's own response, its head fields with code and
// then body, and ends the request as answer says. Called with s.mu held.
func (s *stream) respond(fl *flusher, code int, fields []hpack.HeaderField, body string) {
	x := &s.x
	x.status, x.after = code, time.Since(x.start)
	s.countRequest()
	if s.uc != nil && !s.req.done {
		s.uc.writeRST(fl, s.upID, http2.ErrCodeCancel)
	}
	s.req.abandon()
	sc := s.sc
	s.resBegan = true
	sc.lock()
	sc.headersLocked(s.id, body == "", fields, nil)
	sc.unlock(fl)
	clientOpen := !s.req.end
	if body == "" {
		s.res.end = true
		s.res.finished()
	} else {
		s.res.push(fl, []byte(body), true)
	}
	if clientOpen && !s.closed {
		// The rest of the body is the client's to stop sending; the
		// response may still wait for window, so the stream stays.
		s.req.done = true
		s.closeIfDone()
	}
	if clientOpen && s.res.done {
		sc.writeRST(fl, s.id, http2.ErrCodeNo)
	}
}

// grpcMessage percent-encodes msg for the grpc-message header: bytes
// outside printable ASCII, and '%', become %XX (gRPC over HTTP/2 spec).
func grpcMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}
