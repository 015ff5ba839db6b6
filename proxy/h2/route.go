package h2

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/route"
)

// Routing (docs/traffic.md 3): an outbound request whose target's Service
// has HTTPRoutes or GRPCRoutes is matched once, as it is dispatched, before
// its first pick. The rule it matched sets its timeouts and retry policy
// (retry.go), draws its fault, then answers it, or edits its head and
// chooses the backend whose endpoints it goes to; the connect-failure
// attempts, GOAWAY resends and retries that follow keep both. The rule's
// response header filter edits the response head as it goes to the
// client.

// applyRoute matches the request against t, a table with rules, and does
// what the rule says: it reports whether the request goes on now, with its
// head edited and s.rule and s.backend set. When it does not, the request
// was answered, or a fault's delay holds it and sends it on when it is
// over. Called with s.mu held, before the request is sent anywhere.
func (s *stream) applyRoute(fl *flusher, t *route.Table) bool {
	m, ok := t.Match(routeRequest{s}, s.grpc)
	if !ok {
		s.routeAnswer(fl, http.StatusNotFound, "no route",
			fmt.Sprintf("mesh-proxy: no route of %s matches %s %s", s.authority, s.method, s.path))
		return false
	}
	r := m.Rule
	s.rule = r // its labels go on every answer from here on
	if t := s.sc.p.cfg.TimeoutsOf(r); t != (httpproxy.Timeouts{}) || r.Retry != nil || r.Fault != nil {
		l := s.limits()
		l.timeouts = t
		if t.Request > 0 {
			l.deadline = s.x.start.Add(t.Request) // through a fault's delay too
			s.armTimer()
		}
	}
	if r.Fail != nil {
		s.routeAnswer(fl, r.Fail.Status, "route failed", "mesh-proxy: "+r.Fail.Message)
		return false
	}
	if r.Fault != nil {
		delay, abort, status := r.Fault.Draw()
		if delay > 0 {
			cfg := &s.sc.p.cfg
			cfg.Metrics.Fault(cfg.Direction, metrics.FaultDelay)
			s.lim.held = time.AfterFunc(delay, func() { s.afterDelay(m, abort, status) })
			return false
		}
		if abort {
			s.abort(fl, r, status)
			return false
		}
	}
	return s.applyRule(fl, m)
}

// afterDelay sends on a request a fault's delay held, or answers it with
// the fault's abort, unless it was answered (timed out) or reset
// meanwhile.
func (s *stream) afterDelay(m route.Match, abort bool, status int) {
	var fl flusher
	defer fl.flushAll()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.resBegan {
		return
	}
	switch {
	case abort:
		s.abort(&fl, m.Rule, status)
	case s.applyRule(&fl, m):
		s.send(&fl)
	}
}

// abort answers a request with its fault's status, counted. Called with
// s.mu held.
func (s *stream) abort(fl *flusher, r *route.Rule, status int) {
	cfg := &s.sc.p.cfg
	cfg.Metrics.Fault(cfg.Direction, metrics.FaultAbort)
	s.routeAnswer(fl, status, "fault",
		fmt.Sprintf("mesh-proxy: aborted by a fault of route %s/%s rule %s", r.Route.Namespace, r.Route.Name, r.Name))
}

// applyRule does what the rule m matched says of the request once its
// fault let it go: answers it (a redirect, no backend), or edits its head,
// chooses its backend and readies its retries; it reports whether the
// request goes on. Called with s.mu held.
func (s *stream) applyRule(fl *flusher, m route.Match) bool {
	r := m.Rule
	if r.Redirect != nil {
		s.routeLocal()
		s.respond(fl, r.Redirect.StatusCode, []hpack.HeaderField{
			{Name: ":status", Value: strconv.Itoa(r.Redirect.StatusCode)},
			{Name: "location", Value: r.Redirect.Location("http", s.authority, s.path, m.Prefix)},
			{Name: "content-length", Value: "0"},
		}, "")
		return false
	}
	// s.fields is the stream's own copy of the reader's fields.
	e := fieldEditor{fields: s.fields, owned: true}
	if r.RequestHeaders != nil {
		r.RequestHeaders.Apply(&e)
	}
	if r.Rewrite != nil {
		host, path := r.Rewrite.Apply(s.authority, s.path, m.Prefix)
		if host != s.authority {
			e.setPseudo(":authority", host)
			if e.index("host") >= 0 {
				e.Set("host", host)
			}
		}
		if path != s.path {
			e.setPseudo(":path", path)
		}
	}
	b, ok := r.PickBackend()
	if !ok {
		s.routeAnswer(fl, http.StatusInternalServerError, "no backend",
			fmt.Sprintf("mesh-proxy: route %s/%s rule %s has no backend", r.Route.Namespace, r.Route.Name, r.Name))
		return false
	}
	if b.Fail != nil {
		s.routeAnswer(fl, b.Fail.Status, "route failed", "mesh-proxy: "+b.Fail.Message)
		return false
	}
	if b.RequestHeaders != nil {
		b.RequestHeaders.Apply(&e)
	}
	s.fields = e.fields
	s.rule, s.backend = r, b.Authority
	if r.Retry != nil {
		budget := b.Authority
		if budget == "" {
			budget = s.sc.target() // a Service's own policy: its endpoints are the target's
		}
		s.lim.retry = s.sc.p.cfg.RetryBudgets.Start(r.Retry, budget)
	}
	return true
}

// routeLocal readies the request for an answer of its route: counted and
// tapped like the proxy's other answers, as one that reached nothing.
func (s *stream) routeLocal() {
	x := &s.x
	x.key = metrics.RouteKey{Direction: s.sc.p.cfg.Direction, Authority: s.authority, ClientID: s.sc.info.ClientID, Route: httpproxy.RouteRef(s.rule)}
	x.unreached = metrics.RouteAnswered
	x.ep.Addr = s.sc.info.Target
	s.countRequest()
	s.publishTap()
}

// routeAnswer answers the request with code and msg as its route says; a
// gRPC request gets the status gRPC clients read from code.
func (s *stream) routeAnswer(fl *flusher, code int, what, msg string) {
	cfg := &s.sc.p.cfg
	log := cfg.Log.Debug // a request for a path the routes do not serve is the client's
	if code >= 500 {
		log = cfg.Log.Info // a rule the controller could not resolve is the mesh's
	}
	log("request answered by its route", "direction", cfg.Direction, "target", s.sc.target(),
		"authority", s.authority, "status", code, "msg", msg)
	s.routeLocal()
	s.answer(fl, code, grpcCodeOf(code), what, msg)
}

// grpcCodeOf is the gRPC status a client reads from an HTTP status that
// came without one ("HTTP to gRPC Status Code Mapping" in the gRPC
// repository's doc/http-grpc-status-mapping.md).
func grpcCodeOf(code int) int {
	switch code {
	case http.StatusBadRequest:
		return 13 // INTERNAL
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusNotFound:
		return 12 // UNIMPLEMENTED
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// routeRequest is the stream's request as a route table matches it.
type routeRequest struct{ s *stream }

func (r routeRequest) Method() string { return r.s.method }
func (r routeRequest) Path() string   { return r.s.path }

// Header returns the request's field name, repeated fields joined. The
// Host an HTTP/1 request would carry is :authority in HTTP/2, so "host"
// gives that when the request has no host field, as it should not (RFC
// 9113 §8.3.1): a route matches the same on both protocols.
func (r routeRequest) Header(name string) (string, bool) {
	var v string
	found := false
	for _, f := range r.s.fields {
		if f.Name != name || f.IsPseudo() {
			continue
		}
		if found {
			v += ", " + f.Value
		} else {
			v, found = f.Value, true
		}
	}
	if !found && name == "host" && r.s.authority != "" {
		return r.s.authority, true
	}
	return v, found
}

// fieldEditor is a route.HeaderEditor over a header list: a request's,
// which the stream owns, or a response head's, which is its reader's until
// the first edit copies it. Field names in HTTP/2 are lower case, as the
// editor's are. Pseudo-header fields are the forwarder's: Set, Add and Del
// leave them alone.
type fieldEditor struct {
	fields []hpack.HeaderField
	owned  bool // fields may be changed in place
}

func (e *fieldEditor) own() {
	if !e.owned {
		e.fields = append(make([]hpack.HeaderField, 0, len(e.fields)+4), e.fields...)
		e.owned = true
	}
}

func (e *fieldEditor) index(name string) int {
	for i, f := range e.fields {
		if f.Name == name {
			return i
		}
	}
	return -1
}

// Set replaces every field name with one, where the first was.
func (e *fieldEditor) Set(name, value string) {
	if isPseudo(name) {
		return
	}
	e.own()
	i := e.index(name)
	if i < 0 {
		e.fields = append(e.fields, hpack.HeaderField{Name: name, Value: value})
		return
	}
	e.fields[i] = hpack.HeaderField{Name: name, Value: value}
	rest := slices.DeleteFunc(e.fields[i+1:], func(f hpack.HeaderField) bool { return f.Name == name })
	e.fields = e.fields[:i+1+len(rest)]
}

// Add appends a field.
func (e *fieldEditor) Add(name, value string) {
	if isPseudo(name) {
		return
	}
	e.own()
	e.fields = append(e.fields, hpack.HeaderField{Name: name, Value: value})
}

// Del removes every field name.
func (e *fieldEditor) Del(name string) {
	if isPseudo(name) || e.index(name) < 0 {
		return
	}
	e.own()
	e.fields = slices.DeleteFunc(e.fields, func(f hpack.HeaderField) bool { return f.Name == name })
}

// setPseudo sets the pseudo-header field name, adding it after the others
// when the list has none (they come first, RFC 9113 §8.3).
func (e *fieldEditor) setPseudo(name, value string) {
	e.own()
	if i := e.index(name); i >= 0 {
		e.fields[i].Value = value
		return
	}
	n := 0
	for n < len(e.fields) && e.fields[n].IsPseudo() {
		n++
	}
	e.fields = slices.Insert(e.fields, n, hpack.HeaderField{Name: name, Value: value})
}

func isPseudo(name string) bool { return len(name) > 0 && name[0] == ':' }
