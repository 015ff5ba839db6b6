package h1

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/route"
)

// routed is what a route decided for one request (docs/traffic.md 3.1):
// the backend its endpoints come from, and the rule, for its response
// filter. The zero value is no route.
type routed struct {
	rule    *route.Rule
	backend string // the backend's authority; "" for the target's own endpoints
}

// route matches the request against its target's route table and does
// what the rule says: its timeouts and retry policy become the request's,
// its fault is drawn, and its request filters edit the head. It returns
// false when it answered the request itself (no rule matched, a redirect,
// a rule that fails or has no backend, a fault's abort, a client that
// left during a fault's delay), with whether the connection may go on in
// keep.
func (cc *clientConn) route(x *exchange) (ok, keep bool) {
	routes := cc.p.cfg.Routes
	if routes == nil {
		return true, false
	}
	t := routes(cc.info.Target)
	if t.Empty() || cc.req.connect {
		return true, false
	}
	r := &cc.req
	m, matched := t.Match(headRequest{r}, false)
	if !matched {
		return false, cc.routeAnswer(x, http.StatusNotFound, "no route",
			fmt.Sprintf("mesh-proxy: no route of %s matches %s %s", cc.authority(), methodString(r.get(r.method)), r.path))
	}
	rule := m.Rule
	x.routed.rule = rule // its labels go on every answer from here on
	x.timeouts = cc.p.cfg.TimeoutsOf(rule)
	if x.timeouts.Request > 0 {
		x.deadline = x.start.Add(x.timeouts.Request)
	}
	if rule.Fail != nil {
		return false, cc.routeAnswer(x, rule.Fail.Status, "route failed", "mesh-proxy: "+rule.Fail.Message)
	}
	if rule.Fault != nil {
		if ok, keep := cc.fault(x, rule); !ok {
			return false, keep
		}
	}
	if rule.Redirect != nil {
		loc := rule.Redirect.Location("http", string(r.host), headRequest{r}.Path(), m.Prefix)
		return false, cc.redirect(x, rule.Redirect.StatusCode, loc)
	}
	if rule.RequestHeaders != nil {
		rule.RequestHeaders.Apply(reqEditor(r))
	}
	if rule.Rewrite != nil {
		host, path := rule.Rewrite.Apply(string(r.host), headRequest{r}.Path(), m.Prefix)
		r.rewrite(host, path)
	}
	b, ok := rule.PickBackend()
	if !ok {
		return false, cc.routeAnswer(x, http.StatusInternalServerError, "no backend",
			fmt.Sprintf("mesh-proxy: route %s/%s rule %s has no backend", rule.Route.Namespace, rule.Route.Name, rule.Name))
	}
	if b.Fail != nil {
		return false, cc.routeAnswer(x, b.Fail.Status, "route failed", "mesh-proxy: "+b.Fail.Message)
	}
	if b.RequestHeaders != nil {
		b.RequestHeaders.Apply(reqEditor(r))
	}
	x.routed = routed{rule: rule, backend: b.Authority}
	if rule.Retry != nil {
		budget := b.Authority
		if budget == "" {
			budget = cc.target() // a Service's own policy: its endpoints are the target's
		}
		x.retry = cc.p.cfg.RetryBudgets.Start(rule.Retry, budget)
	}
	return true, false
}

// fault applies the rule's HTTPFault (docs/traffic.md 3.7): the request
// waits out its delay, unless its client leaves or its deadline comes
// first, then is answered with its abort's status. It returns false when
// the request was answered (or its client left), with whether the
// connection may go on.
func (cc *clientConn) fault(x *exchange, rule *route.Rule) (ok, keep bool) {
	delay, abort, status := rule.Fault.Draw()
	cfg := &cc.p.cfg
	if delay > 0 {
		cfg.Metrics.Fault(cfg.Direction, metrics.FaultDelay)
		wait, expires := delay, false
		if !x.deadline.IsZero() {
			if rest := time.Until(x.deadline); rest <= wait {
				wait, expires = rest, true
			}
		}
		if !cc.hold(wait) {
			return false, cc.clientLeft(x)
		}
		if expires {
			x.key = cc.localKey(x)
			x.unreached = metrics.RouteAnswered
			x.ep.Addr = cc.info.Target
			return false, x.answerFailure(x.timeoutError())
		}
	}
	if abort {
		cfg.Metrics.Fault(cfg.Direction, metrics.FaultAbort)
		return false, cc.routeAnswer(x, status, "fault",
			fmt.Sprintf("mesh-proxy: aborted by a fault of route %s/%s rule %s", rule.Route.Namespace, rule.Route.Name, rule.Name))
	}
	return true, false
}

// hold waits d before the request goes on, and reports false if its
// client closed the connection meanwhile. The connection is watched by a
// read into its buffer (what comes is kept for the exchange to read),
// which a deadline in the past ends once the wait is over.
func (cc *clientConn) hold(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	left, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			n := cc.br.Buffered()
			if n >= cc.br.Size() {
				return // full: nothing more to learn until the exchange reads
			}
			if _, err := cc.br.Peek(n + 1); err != nil {
				if !isTimeout(err) {
					close(left) // closed or reset
				}
				return
			}
		}
	}()
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-left:
	}
	t.Stop()
	cc.c.SetReadDeadline(aLongTimeAgo)
	<-done
	cc.c.SetReadDeadline(time.Time{})
	cc.tc.readSet = time.Time{}
	select {
	case <-left:
		return false
	default:
		return true
	}
}

// clientLeft records a request whose client closed its connection before
// the request went anywhere: counted as the 502 of a request whose client
// went away, as h2 counts a stream reset before its response. The
// connection is over.
func (cc *clientConn) clientLeft(x *exchange) bool {
	x.key = cc.localKey(x)
	x.unreached = metrics.RouteAnswered
	x.status, x.after, x.failed = http.StatusBadGateway, time.Since(x.start), true
	x.ep.Addr = cc.info.Target
	x.countRequest()
	x.publishTap()
	x.done(false)
	return false
}

// minTimeout is the smallest of the non-zero durations; zero if none.
func minTimeout(ds ...time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		if d > 0 && (m == 0 || d < m) {
			m = d
		}
	}
	return m
}

// localKey is the series of a request the proxy answers itself before it
// goes anywhere, under the rule it matched, if any.
func (cc *clientConn) localKey(x *exchange) metrics.RouteKey {
	return metrics.RouteKey{Direction: cc.p.cfg.Direction, Authority: cc.authority(), Target: cc.target(),
		ClientID: cc.info.ClientID, Route: httpproxy.RouteRef(x.routed.rule)}
}

// routeAnswer is a route's own answer to the request, counted as one that
// reached no application.
func (cc *clientConn) routeAnswer(x *exchange, code int, what, msg string) bool {
	x.key = cc.localKey(x)
	x.unreached = metrics.RouteAnswered
	return x.answer(local{code: code, what: what, msg: msg})
}

// redirect answers a RequestRedirect rule: its status, Location, no body.
func (cc *clientConn) redirect(x *exchange, code int, location string) bool {
	x.key = cc.localKey(x)
	x.unreached = metrics.RouteAnswered
	x.status, x.after = code, time.Since(x.start)
	x.countRequest()
	x.ep.Addr = cc.info.Target
	x.publishTap()
	r := &cc.req
	closing := r.body != noBody || !r.keepAlive || cc.p.shuttingDown() // an unread body cannot stay on the wire
	w := cc.bw
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(code))
	w.WriteString(" ")
	w.WriteString(http.StatusText(code))
	w.WriteString("\r\nLocation: ")
	w.WriteString(location)
	w.WriteString("\r\nContent-Length: 0")
	if closing {
		w.WriteString("\r\nConnection: close")
	}
	w.WriteString("\r\n\r\n")
	x.done(true)
	return cc.bw.Flush() == nil && !closing
}

// headRequest is a request head as route.Request.
type headRequest struct{ r *request }

func (q headRequest) Method() string { return methodString(q.r.get(q.r.method)) }

func (q headRequest) Path() string {
	if len(q.r.query) == 0 && !bytes.HasSuffix(q.r.get(q.r.target), []byte("?")) {
		return string(q.r.path)
	}
	return string(q.r.path) + "?" + string(q.r.query)
}

// Header joins repeated fields with ", ". A field that is not repeated,
// as nearly all are, costs the one string of its value.
func (q headRequest) Header(name string) (string, bool) {
	h := &q.r.head
	var first []byte
	var joined []byte // nil until a second field of name
	found := false
	for i := range h.fields {
		f := &h.fields[i]
		if f.drop || !h.is(f, name) {
			continue
		}
		switch v := h.get(f.value); {
		case !found:
			first, found = v, true
		case joined == nil:
			joined = append(append(append(make([]byte, 0, len(first)+2+len(v)), first...), ", "...), v...)
		default:
			joined = append(append(joined, ", "...), v...)
		}
	}
	if joined != nil {
		return string(joined), true
	}
	return string(first), found
}

// fieldEditor edits a head's fields for route filters: removed fields
// are marked not forwarded, new ones appended to the head's buffer (spans
// are offsets, so appending keeps the others valid). req is set for a
// request head, whose Host it keeps up to date.
type fieldEditor struct {
	h   *head
	req *request
}

func reqEditor(r *request) fieldEditor { return fieldEditor{h: &r.head, req: r} }

func (e fieldEditor) Del(name string) { e.h.dropFields(name) }

func (e fieldEditor) Set(name, value string) {
	e.Del(name)
	e.Add(name, value)
}

func (e fieldEditor) Add(name, value string) {
	if !validField(name, value) {
		return // never a field that would break the head (the controller refuses them too)
	}
	h := e.h
	off := len(h.buf)
	h.buf = append(h.buf, name...)
	h.buf = append(h.buf, ": "...)
	h.buf = append(h.buf, value...)
	f, err := parseField(h.buf, span{off, len(h.buf)})
	if err != nil {
		h.buf = h.buf[:off]
		return
	}
	h.fields = append(h.fields, f)
	if e.req != nil && name == "host" {
		e.req.host = h.get(f.value)
	}
}

// validField reports whether name and value make a header field line
// that reads back as exactly that field.
func validField(name, value string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return false
		}
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// rewrite applies a URLRewrite: host replaces the Host field, path (with
// its query) the request target, in origin form.
func (r *request) rewrite(host, path string) {
	if host != string(r.host) && validField("host", host) {
		reqEditor(r).Set("host", host)
	}
	if path == (headRequest{r}).Path() || path == "" || path[0] != '/' {
		return
	}
	for i := 0; i < len(path); i++ {
		if c := path[i]; c <= ' ' || c == 0x7f {
			return
		}
	}
	// A new start line at the end of the buffer: method SP path SP version.
	old := r.get(r.start)
	method := r.get(r.method)
	version := old[r.target.end-r.start.off+1:]
	off := len(r.buf)
	r.buf = append(r.buf, method...)
	r.buf = append(r.buf, ' ')
	r.buf = append(r.buf, path...)
	r.buf = append(r.buf, ' ')
	r.buf = append(r.buf, version...)
	r.start = span{off, len(r.buf)}
	r.method = span{off, off + len(method)}
	r.target = span{off + len(method) + 1, off + len(method) + 1 + len(path)}
	r.parseTarget()
}
