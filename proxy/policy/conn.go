package policy

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mesh-dev/mesh/proxy/authz"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/route"
)

// A Conn is what the forwarders ask about each request.
var (
	_ httpproxy.Authorizer      = (*Conn)(nil)
	_ httpproxy.RouteAuthorizer = (*Conn)(nil)
)

// probeAuthz is the authz label of a kubelet probe let through whatever
// the policy.
const probeAuthz = "probe"

// Conn decides the connection of one client to one port, and each request
// on it. Its methods are safe for concurrent use.
type Conn struct {
	e      *Enforcer
	port   uint16
	client authz.Client
	v      atomic.Pointer[verdict] // the decision under the latest policy seen
}

// verdict is a Conn's decision under one policy.
type verdict struct {
	pol    *authz.Policy
	d      authz.Decision
	denial error             // what a denied client is told; nil when allowed
	limit  authz.ClientLimit // the rate limits of the client on the port

	once sync.Once
	http prometheus.Counter // requests decided as d; set by once

	// routes are the port's inbound routes, nil for none; perRoute the
	// decision on each of them (the route's authorizations, else d).
	routes   *authz.Routes
	perRoute []routeVerdict
}

// routeVerdict is a Conn's decision on the requests of one route.
type routeVerdict struct {
	d      authz.Decision
	denial error // nil when allowed

	once sync.Once
	http prometheus.Counter // set by once
}

// Conn returns the decider of a connection admitted under pol (Admit) to
// port, once its client is known.
func (e *Enforcer) Conn(pol *authz.Policy, port uint16, client authz.Client) *Conn {
	c := &Conn{e: e, port: port, client: client}
	c.v.Store(c.decide(pol))
	return c
}

// Protocol returns what the connection's port speaks according to the
// policy it was admitted under.
func (c *Conn) Protocol() authz.Protocol { return c.v.Load().pol.Protocol(c.port) }

// verdict returns the decision under the policy in force, deciding again
// if the controller sent a new one since the last request.
func (c *Conn) verdict() *verdict {
	v := c.v.Load()
	if pol := c.e.cur.Load(); pol != nil && pol != v.pol {
		// Concurrent requests may both decide; either result is right.
		v = c.decide(pol)
		c.v.Store(v)
	}
	return v
}

// decide decides the client under pol: on the port, and on each of its
// inbound routes, once for all the requests of the connection.
func (c *Conn) decide(pol *authz.Policy) *verdict {
	v := &verdict{pol: pol, d: pol.Authorize(c.port, c.client), limit: pol.Limiter(c.port).For(c.client.ID)}
	who := "unauthenticated clients"
	if c.client.ID != "" {
		who = c.client.ID
	}
	if !v.d.Allowed {
		v.denial = fmt.Errorf("server %q allows no traffic from %s on port %d", v.d.Server, who, c.port)
	}
	if v.routes = pol.Routes(c.port); v.routes != nil {
		v.perRoute = make([]routeVerdict, v.routes.Len())
		for i := range v.perRoute {
			rv := &v.perRoute[i]
			rv.d = v.d
			if name, ok := v.routes.Authorize(i, c.client); ok {
				// The route's own first, as Linkerd's proxy tries them.
				rv.d = authz.Decision{Allowed: true, Server: v.d.Server, Authz: name}
			}
			if !rv.d.Allowed {
				kind, name := v.routes.Route(i)
				rv.denial = fmt.Errorf("neither %s %q nor server %q allows traffic from %s on port %d", kind, name, v.d.Server, who, c.port)
			}
		}
	}
	return v
}

func decision(d authz.Decision) metrics.AuthzDecision {
	switch {
	case d.Audit:
		return metrics.Audit
	case d.Allowed:
		return metrics.Allow
	}
	return metrics.Deny
}

func (v *verdict) decision() metrics.AuthzDecision { return decision(v.d) }

// countRequest counts a request decided as v.
func (c *Conn) countRequest(v *verdict) {
	v.once.Do(func() {
		v.http = c.e.cfg.Metrics.HTTPAuthz(metrics.AuthzKey{
			Server: v.d.Server, Authz: v.d.Authz, ClientID: c.client.ID, Decision: v.decision()})
	})
	v.http.Inc()
}

// countRoute counts a request decided as rv.
func (c *Conn) countRoute(rv *routeVerdict) {
	rv.once.Do(func() {
		rv.http = c.e.cfg.Metrics.HTTPAuthz(metrics.AuthzKey{
			Server: rv.d.Server, Authz: rv.d.Authz, ClientID: c.client.ID, Decision: decision(rv.d)})
	})
	rv.http.Inc()
}

// AuthorizeTCP decides the connection as a whole, for a connection
// forwarded as TCP: false means close it before a byte reaches the
// application. It counts and logs the decision.
func (c *Conn) AuthorizeTCP() bool {
	v := c.verdict()
	c.e.cfg.Metrics.TCPAuthz(metrics.AuthzKey{
		Server: v.d.Server, Authz: v.d.Authz, ClientID: c.client.ID, Decision: v.decision()}).Inc()
	switch {
	case v.d.Audit:
		c.e.logLimited(c.e.log.Info, "inbound connection would be denied; allowed by audit", c.attrs(v)...)
	case !v.d.Allowed:
		c.e.logLimited(c.e.log.Info, "inbound connection denied", c.attrs(v)...)
	}
	return v.d.Allowed
}

// AuthorizeRequest decides one HTTP request (httpproxy.Authorizer): nil
// lets it through, an error says why not: a *httpproxy.NoInboundRoute
// when the port has inbound routes and the request matches none of them;
// a *httpproxy.RateLimited when the port's rate limit holds it back
// (after authorization let it through); any other error when
// authorization denies it. A kubelet probe of the pod passes whatever the
// decision and the routes, and is never rate limited. Every request is
// counted; denials, audits, requests no route takes and rate limited
// requests are logged.
func (c *Conn) AuthorizeRequest(r *http.Request) error {
	v := c.verdict()
	if v.routes == nil {
		return c.authorizeHTTP(v, r.Method, r.URL.Path, r.URL.RawQuery)
	}
	return c.authorizeRouted(v, r.Method, r.URL.Path, r.URL.RawQuery, requestHeaders{r})
}

// AuthorizeRoute is AuthorizeRequest for a forwarder that has no
// *http.Request but a request head it can look fields up in, as inbound
// routes may need (httpproxy.RouteAuthorizer): req.Path() is the raw
// request target, whose path a decision reads percent-decoded.
func (c *Conn) AuthorizeRoute(req route.Request) error {
	v := c.verdict()
	if v.routes == nil && v.d.Allowed && !v.d.Audit && !v.limit.Limited() {
		c.countRequest(v) // nothing of the request to read
		return nil
	}
	path, query, _ := strings.Cut(req.Path(), "?")
	if p, err := url.PathUnescape(path); err == nil {
		path = p // as the forwarders decode it for AuthorizeHTTP
	}
	if v.routes == nil {
		return c.authorizeHTTP(v, req.Method(), path, query)
	}
	return c.authorizeRouted(v, req.Method(), path, query, req)
}

// AuthorizeHTTP is AuthorizeRequest for a caller that has no
// *http.Request and passes no header fields: the method, the path
// (percent-decoded) and the raw query. On a port with inbound routes, a
// request whose route depends on a header field is refused (403), since
// which route it takes cannot be known; AuthorizeRoute has the headers.
func (c *Conn) AuthorizeHTTP(method, path, rawQuery string) error {
	v := c.verdict()
	if v.routes == nil {
		return c.authorizeHTTP(v, method, path, rawQuery)
	}
	return c.authorizeRouted(v, method, path, rawQuery, nil)
}

// authorizeHTTP decides a request on a port without inbound routes.
func (c *Conn) authorizeHTTP(v *verdict, method, path, rawQuery string) error {
	if v.d.Allowed && !v.d.Audit {
		c.countRequest(v)
		if v.limit.Limited() {
			return c.limitRequest(v, method, path, rawQuery)
		}
		return nil
	}
	if v.pol.IsProbe(c.port, method, path, rawQuery) {
		c.countProbe(v)
		return nil
	}
	c.countRequest(v)
	attrs := append(c.attrs(v), "method", method, "path", path)
	if v.d.Audit {
		c.e.logLimited(c.e.log.Info, "inbound request would be denied; allowed by audit", attrs...)
		if v.limit.Limited() {
			return c.limitRequest(v, method, path, rawQuery)
		}
		return nil
	}
	c.e.logLimited(c.e.log.Info, "inbound request denied", attrs...)
	return v.denial
}

// authorizeRouted decides a request on a port with inbound routes: the
// route it matches decides it; none, the client gets 404. headers may be
// nil (AuthorizeHTTP).
func (c *Conn) authorizeRouted(v *verdict, method, path, rawQuery string, headers authz.Headers) error {
	m := v.routes.Match(method, path, rawQuery, headers)
	if m.Found {
		rv := &v.perRoute[m.Route]
		if rv.d.Allowed && !rv.d.Audit {
			c.countRoute(rv)
			if v.limit.Limited() {
				return c.limitRequest(v, method, path, rawQuery)
			}
			return nil
		}
		if v.pol.IsProbe(c.port, method, path, rawQuery) {
			c.countProbe(v)
			return nil
		}
		c.countRoute(rv)
		kind, name := v.routes.Route(m.Route)
		attrs := append(c.attrs(v), "route_kind", kind, "route", name, "method", method, "path", path)
		if rv.d.Audit {
			c.e.logLimited(c.e.log.Info, "inbound request would be denied; allowed by audit", attrs...)
			if v.limit.Limited() {
				return c.limitRequest(v, method, path, rawQuery)
			}
			return nil
		}
		c.e.logLimited(c.e.log.Info, "inbound request denied", attrs...)
		return rv.denial
	}
	if v.pol.IsProbe(c.port, method, path, rawQuery) {
		c.countProbe(v)
		return nil
	}
	attrs := append(c.attrs(v), "method", method, "path", path, "miss", m.Miss.String())
	audit := v.pol.Audit()
	switch {
	case m.Miss == authz.NeedsHeaders:
		// Refused for want of headers: a denial by the Server, counted
		// and answered as one.
		d := metrics.Deny
		if audit {
			d = metrics.Audit
		}
		c.e.cfg.Metrics.HTTPAuthz(metrics.AuthzKey{Server: v.d.Server, ClientID: c.client.ID, Decision: d}).Inc()
		if !audit {
			c.e.logLimited(c.e.log.Info, "inbound request denied: its route depends on header fields the proxy was not given", attrs...)
			return fmt.Errorf("server %q: which route %s %s takes depends on header fields this proxy's HTTP path does not pass to the policy; refused rather than guessed", v.d.Server, method, path)
		}
		c.e.logLimited(c.e.log.Info, "inbound request would be denied, its route depending on header fields the proxy was not given; allowed by audit", attrs...)
	case audit:
		c.e.cfg.Metrics.HTTPAuthz(metrics.AuthzKey{Server: v.d.Server, ClientID: c.client.ID, Decision: metrics.Audit}).Inc()
		c.e.logLimited(c.e.log.Info, "inbound request matches no route; allowed by audit", attrs...)
	default:
		c.e.noRoute.counter(v.d.Server, "").Inc()
		c.e.logLimited(c.e.log.Info, "inbound request matches no route", attrs...)
		return &httpproxy.NoInboundRoute{Server: v.d.Server, Method: method, Path: path, Ambiguous: m.Miss == authz.AmbiguousPath}
	}
	if v.limit.Limited() {
		return c.limitRequest(v, method, path, rawQuery)
	}
	return nil
}

// countProbe counts a kubelet probe let through whatever the policy.
func (c *Conn) countProbe(v *verdict) {
	c.e.cfg.Metrics.HTTPAuthz(metrics.AuthzKey{
		Server: v.d.Server, Authz: probeAuthz, ClientID: c.client.ID, Decision: metrics.Allow}).Inc()
}

// requestHeaders are an *http.Request's header fields as routes look them
// up; "host" is the request's Host, which net/http keeps apart.
type requestHeaders struct{ r *http.Request }

func (h requestHeaders) Header(name string) (string, bool) {
	if name == "host" && h.r.Host != "" {
		return h.r.Host, true
	}
	vs := h.r.Header.Values(name)
	return strings.Join(vs, ", "), len(vs) > 0
}

// limitRequest asks the port's rate limit about a request authorization
// let through: nil admits it, a *httpproxy.RateLimited holds it back,
// counted and logged (at most one line a second, apart from the denials').
func (c *Conn) limitRequest(v *verdict, method, path, rawQuery string) error {
	if v.pol.IsProbe(c.port, method, path, rawQuery) {
		return nil // a probe failing under load would restart a busy pod
	}
	r, ok := v.limit.Admit(c.e.now())
	if ok {
		return nil
	}
	c.e.rateLimited.counter(v.d.Server, string(r.Scope)).Inc()
	c.e.logRateLimited(append(c.attrs(v), "method", method, "path", path,
		"scope", string(r.Scope), "requests_per_second", r.RequestsPerSecond, "retry_after", r.RetryAfter)...)
	return &httpproxy.RateLimited{RetryAfter: r.RetryAfter, Scope: string(r.Scope), Server: v.d.Server, RequestsPerSecond: r.RequestsPerSecond}
}

func (c *Conn) attrs(v *verdict) []any {
	return []any{"client", c.client.Addr.String(), "client_id", c.client.ID, "port", c.port,
		"server", v.d.Server, "revision", v.pol.Revision()}
}
