// Package httpproxy is the contract the HTTP/1 forwarder (proxy/h1) and
// the HTTP/2 forwarder (proxy/h2) share: their configuration, what they
// know of each connection handed to them, how a request's endpoint is
// picked and its outcome reported, how a request is authorized, and the
// errors that tell the proxy's answer. It forwards nothing itself; the
// proxy (proxy/side.go) hands HTTP/1 connections to h1 and HTTP/2 ones to
// h2, and both answer the same failures the same way.
package httpproxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/mesh-dev/mesh/proxy/accesslog"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/route"
	"github.com/mesh-dev/mesh/proxy/tap"
	"github.com/mesh-dev/mesh/proxy/trace"
)

// Config configures the HTTP forwarders, h1 and h2 alike; a field that
// only one of them uses says so. The zero value of every field but
// Metrics is usable and means the default written next to it.
type Config struct {
	Direction metrics.Direction
	Metrics   *metrics.Metrics // required
	Log       *slog.Logger     // nil: slog.Default()

	// ConnectTimeout bounds dialing the target; past it the client gets 504.
	// Zero means 1s, like Linkerd's default connect timeout.
	ConnectTimeout time.Duration
	// ResponseTimeout bounds the wait for the target's response headers;
	// past it the client gets 504 (gRPC: DEADLINE_EXCEEDED). Zero means no
	// limit: streams and long polls are legitimate and only the
	// application knows its deadlines.
	ResponseTimeout time.Duration
	// ReadHeaderTimeout bounds how long a client may take to send request
	// headers on HTTP/1 (slow-loris protection). Zero means 10s. HTTP/2
	// does not use it.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes client connections idle this long (HTTP/1:
	// between requests; HTTP/2: with no stream open) and connections to
	// targets left unused this long, in both protocols. Zero means 90s.
	IdleTimeout time.Duration
	// BodyIdleTimeout ends an HTTP/1 request whose connection, to the
	// client or to the target, moves no byte for this long: a stalled
	// request or response body, or a tunnel (WebSocket, CONNECT). Zero
	// means none. HTTP/2 does not use it: its streams are bounded by flow
	// control and a connection's silence by pings.
	BodyIdleTimeout time.Duration
	// MaxConnsPerHost bounds the HTTP/1 connections to one endpoint
	// address; requests past it wait for one. Zero means no limit. HTTP/2
	// does not use it.
	MaxConnsPerHost int
	// MaxHeaderBytes bounds request headers, in both protocols: past it
	// the client gets 431. HTTP/2 also announces it to clients as
	// SETTINGS_MAX_HEADER_LIST_SIZE. Zero means 64 KiB.
	MaxHeaderBytes int
	// MaxConcurrentStreams bounds concurrent HTTP/2 streams per client
	// connection; streams past it are refused (RST_STREAM REFUSED_STREAM,
	// which clients retry safely). Zero means 1000. HTTP/1 does not use it.
	MaxConcurrentStreams uint32
	// Pick chooses each request's endpoint; nil sends every request to its
	// connection's target.
	Pick Picker
	// Routes returns the route table of target's Service port (HTTPRoutes
	// and GRPCRoutes attached to it, docs/traffic.md): nil, or an empty
	// table, when it has none; then requests go to target as before. Nil
	// means no routing at all (the inbound side).
	Routes func(target netip.AddrPort) *route.Table
	// MeshTLS wraps a new connection to an endpoint with an identity in
	// mesh TLS; nil means identities are ignored (plain text).
	MeshTLS func(ctx context.Context, c net.Conn, identity string) (net.Conn, error)
	// Tap receives every request and response while someone watches
	// (mesh viz tap); nil means none is published.
	Tap *tap.Hub
	// AccessLog gets a record of every request once it is over; nil
	// (the default) logs none.
	AccessLog *accesslog.Logger
	// Tracer gives every request a span, child of the trace context it
	// came with, and passes the context on with it; nil (the default)
	// leaves trace headers as they came.
	Tracer *trace.Tracer
	// RetryBudgets are the retry budgets of the routes' backends
	// (docs/traffic.md 3.4), per client proxy: give h1 and h2 the same,
	// so that a backend's budget covers both protocols. Nil means each
	// forwarder keeps its own.
	RetryBudgets *RetryBudgets
}

// WithDefaults returns c with each zero field that has a default set to
// it. Both forwarders call it in their New.
func (c Config) WithDefaults() Config {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = time.Second
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 90 * time.Second
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = 1000
	}
	if c.RetryBudgets == nil {
		c.RetryBudgets = &RetryBudgets{}
	}
	return c
}

// ConnInfo describes a connection the proxy accepted and hands to a
// forwarder's Serve.
type ConnInfo struct {
	// Target is where the connection was going: its requests go there, or
	// to the endpoint Pick chooses for them.
	Target netip.AddrPort
	// ClientID is the SPIFFE ID the client proved over mesh TLS; "" in
	// plain text.
	ClientID string
	// Authz decides each request before it goes anywhere; nil lets every
	// request through.
	Authz Authorizer
	// TCP is the connection's TCP series, given to OpenOnReach: each
	// request reports to it whether it reached an application (its
	// response began, counted under its target) or why the proxy answered
	// it itself, so that a connection none of whose requests reached one
	// names no target. Nil counts nothing.
	TCP *metrics.Conn
}

// CountRequest counts a request of the connection under its route and
// tells the connection's TCP series whether it reached an application:
// unreached says why the proxy answered it itself, "" when it went on. A
// request that reached nothing is counted without its target.
func (c *ConnInfo) CountRequest(m *metrics.Metrics, k metrics.RouteKey, unreached metrics.UnreachedReason) *metrics.Route {
	if unreached != "" {
		k.Target = ""
	}
	route := m.Route(k)
	route.Request()
	switch {
	case c.TCP == nil:
	case unreached != "":
		c.TCP.RequestUnreached(unreached)
	default:
		c.TCP.Reached()
	}
	return route
}

// Authorizer decides the requests of one connection (the inbound
// authorization policy, proxy/policy). It is called for every request,
// possibly concurrently (HTTP/2), so it must be cheap and safe for
// concurrent use.
type Authorizer interface {
	// AuthorizeRequest returns nil to let r through, or why it may not
	// go: the client gets 403 (gRPC: PERMISSION_DENIED) saying so.
	AuthorizeRequest(r *http.Request) error
}

// OrigProtoHeader marks a request that its client sent in HTTP/1.1 and
// an older client proxy carried to this one over HTTP/2 (Linkerd does the
// same with l5d-orig-proto). The HTTP/2 forwarder sends a request so
// marked by a peer that proved its identity on to its application as
// HTTP/1.1 again, without the mark (proxy/h2/origproto.go); a mark an
// application sent itself is never passed on by either forwarder.
const OrigProtoHeader = "Mesh-Orig-Proto"
