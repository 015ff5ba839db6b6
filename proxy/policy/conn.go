package policy

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mesh-dev/mesh/proxy/authz"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
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

func (c *Conn) decide(pol *authz.Policy) *verdict {
	v := &verdict{pol: pol, d: pol.Authorize(c.port, c.client), limit: pol.Limiter(c.port).For(c.client.ID)}
	if !v.d.Allowed {
		who := "unauthenticated clients"
		if c.client.ID != "" {
			who = c.client.ID
		}
		v.denial = fmt.Errorf("server %q allows no traffic from %s on port %d", v.d.Server, who, c.port)
	}
	return v
}

func (v *verdict) decision() metrics.AuthzDecision {
	switch {
	case v.d.Audit:
		return metrics.Audit
	case v.d.Allowed:
		return metrics.Allow
	}
	return metrics.Deny
}

// countRequest counts a request decided as v.
func (c *Conn) countRequest(v *verdict) {
	v.once.Do(func() {
		v.http = c.e.cfg.Metrics.HTTPAuthz(metrics.AuthzKey{
			Server: v.d.Server, Authz: v.d.Authz, ClientID: c.client.ID, Decision: v.decision()})
	})
	v.http.Inc()
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
// lets it through, an error says why not: a *httpproxy.RateLimited when
// the port's rate limit holds it back (after authorization let it
// through), any other error when authorization denies it. A kubelet probe
// of the pod passes whatever the decision and is never rate limited.
// Every request is counted; denials, audits and rate limited requests are
// logged.
func (c *Conn) AuthorizeRequest(r *http.Request) error {
	return c.AuthorizeHTTP(r.Method, r.URL.Path, r.URL.RawQuery)
}

// AuthorizeHTTP is AuthorizeRequest for a caller that has no
// *http.Request, the HTTP/1 forwarder (proxy/h1): the method, the path
// and the raw query are all a decision reads.
func (c *Conn) AuthorizeHTTP(method, path, rawQuery string) error {
	v := c.verdict()
	if v.d.Allowed && !v.d.Audit {
		c.countRequest(v)
		if v.limit.Limited() {
			return c.limitRequest(v, method, path, rawQuery)
		}
		return nil
	}
	if v.pol.IsProbe(c.port, method, path, rawQuery) {
		c.e.cfg.Metrics.HTTPAuthz(metrics.AuthzKey{
			Server: v.d.Server, Authz: probeAuthz, ClientID: c.client.ID, Decision: metrics.Allow}).Inc()
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
	c.e.rateLimited.counter(v.d.Server, r.Scope).Inc()
	c.e.logRateLimited(append(c.attrs(v), "method", method, "path", path,
		"scope", string(r.Scope), "requests_per_second", r.RequestsPerSecond, "retry_after", r.RetryAfter)...)
	return &httpproxy.RateLimited{RetryAfter: r.RetryAfter, Scope: string(r.Scope), Server: v.d.Server, RequestsPerSecond: r.RequestsPerSecond}
}

func (c *Conn) attrs(v *verdict) []any {
	return []any{"client", c.client.Addr.String(), "client_id", c.client.ID, "port", c.port,
		"server", v.d.Server, "revision", v.pol.Revision()}
}
