package metrics

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ConnKey names the TCP series of one connection.
type ConnKey struct {
	Direction Direction
	// Target is the original destination, ip:port.
	Target string
	// Dst is the workload an opaque outbound connection went to; its
	// Service is not a TCP label.
	Dst Dst
	// ClientID and ServerID are the peer's SPIFFE ID proven over mesh TLS,
	// inbound and outbound respectively; "" in plain text.
	ClientID, ServerID string
}

func (k ConnKey) labels() labelKey {
	return labelKey{string(k.Direction), k.Target, k.Dst.Namespace, k.Dst.Workload, k.ClientID, k.ServerID}
}

// connSet is the TCP series of one label set.
type connSet struct {
	activity
	open, close, read, written prometheus.Counter
	active                     prometheus.Gauge
}

func (m *Metrics) newConnSet(labels []string) *connSet {
	return &connSet{
		open:    m.tcpOpen.WithLabelValues(labels...),
		close:   m.tcpClose.WithLabelValues(labels...),
		active:  m.tcpActive.WithLabelValues(labels...),
		read:    m.readBytes.WithLabelValues(labels...),
		written: m.writeBytes.WithLabelValues(labels...),
	}
}

// removeConn deletes the TCP series of labels. Called by a sweep, with no
// connection open under them.
func (m *Metrics) removeConn(_ *connSet, labels []string) {
	for _, v := range []interface{ DeleteLabelValues(...string) bool }{
		m.tcpOpen, m.tcpClose, m.tcpActive, m.readBytes, m.writeBytes,
	} {
		v.DeleteLabelValues(labels...)
	}
}

// Conn is the per-connection view of the TCP series. A connection is
// counted open only once its labels are known (Open), which is after
// protocol detection and the mesh TLS handshake; one closed before that
// is counted open and closed with the labels it had. One that never
// reached an application is counted by Unreached instead, without a
// per-target series; so is one served as HTTP none of whose requests did
// (OpenOnReach). Its methods are safe for concurrent use: an HTTP
// connection's requests report from their own goroutines while the
// server may close it.
type Conn struct {
	m *Metrics
	// opened is set under mu once the connection is counted open; Reached
	// reads it without mu, as every request of an HTTP connection calls it.
	opened atomic.Bool

	mu     sync.Mutex // guards the fields below
	key    ConnKey
	s      *connSet
	closed bool
	// onReach: the connection is served as HTTP (OpenOnReach); unless one
	// of its requests reached an application, Close counts it unreached
	// for why.
	onReach bool
	why     UnreachedReason
}

// Conn returns the handle of a newly accepted connection to target; it
// counts nothing until Open, Unreached or Close.
func (m *Metrics) Conn(dir Direction, target string) *Conn {
	return &Conn{m: m, key: ConnKey{Direction: dir, Target: target}}
}

// Open counts the connection open under k (its direction and target are
// kept). Only the first call counts, and none after Unreached or Close.
func (c *Conn) Open(k ConnKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open(k)
}

// open is Open with mu held.
func (c *Conn) open(k ConnKey) {
	if c.opened.Load() || c.closed {
		return
	}
	k.Direction, k.Target, k.Dst.Service = c.key.Direction, c.key.Target, ""
	c.key = k
	c.s = c.m.conns.get(c.m, k.labels(), c.m.now(), true)
	c.s.open.Inc()
	c.s.active.Inc()
	c.opened.Store(true)
}

// OpenOnReach is Open for a connection served as HTTP, whose requests each
// go where they can: the connection is counted open under k only once one
// of them reaches an application (Reached). If none has by Close, Close
// counts it by Unreached instead, for the reason of its last request the
// proxy answered itself (RequestUnreached), or NoRequest when the proxy
// answered none; so an HTTP port sweep adds no series naming its targets,
// as an opaque one adds none (docs/metrics.md).
func (c *Conn) OpenOnReach(k ConnKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.opened.Load() || c.closed {
		return
	}
	k.Direction, k.Target, k.Dst.Service = c.key.Direction, c.key.Target, ""
	c.key, c.onReach, c.why = k, true, NoRequest
}

// Reached says that a request of a connection given to OpenOnReach reached
// an application: the first call counts the connection open, later ones
// and those after Close count nothing.
func (c *Conn) Reached() {
	if c.opened.Load() {
		return // the common case: every request calls it
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open(c.key)
}

// RequestUnreached says that a request of a connection given to
// OpenOnReach went nowhere, for why: Close counts the connection
// unreached for the last such reason if no request reached an
// application.
func (c *Conn) RequestUnreached(why UnreachedReason) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.why = why
}

// UnreachedReason is the reason label of mesh_proxy_tcp_unreached_total.
type UnreachedReason string

// Why a connection never reached an application.
const (
	// NoPolicy: the inbound policy was not there in time, or the proxy
	// was shutting down.
	NoPolicy UnreachedReason = "no-policy"
	// PolicyDenied: the inbound policy refused the client.
	PolicyDenied UnreachedReason = "denied"
	// MeshTLSFailed: the client's mesh TLS handshake failed.
	MeshTLSFailed UnreachedReason = "mesh-tls"
	// NoEndpoint: the mesh had no endpoint for the target.
	NoEndpoint UnreachedReason = "no-endpoint"
	// ConnectFailed: dialing the target failed or timed out, or so did
	// the mesh TLS handshake with its proxy.
	ConnectFailed UnreachedReason = "connect"
	// NoRequest: an HTTP connection closed before the proxy answered any
	// of its requests (none came whole, or the client left first).
	NoRequest UnreachedReason = "no-request"
	// RouteAnswered: a route answered the request itself (a redirect, a
	// rule whose backends could not be resolved, or no rule matching).
	RouteAnswered UnreachedReason = "route"
)

// unreachedReasons is how many UnreachedReason values there are.
const unreachedReasons = 7

// Unreached counts a connection that never reached an application, by
// reason only: a port sweep or a dead target adds no series. It is
// instead of Open; a later Open or Close counts nothing.
func (c *Conn) Unreached(why UnreachedReason) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unreached(why)
}

// unreached is Unreached with mu held.
func (c *Conn) unreached(why UnreachedReason) {
	if c.opened.Load() || c.closed {
		return
	}
	c.closed = true
	c.m.unreached.WithLabelValues(string(c.key.Direction), string(why)).Inc()
}

// Close counts the connection's end and the bytes it moved to and from the
// client, under the series it was counted open in. Only the first call
// counts. A connection given to OpenOnReach none of whose requests reached
// an application is counted unreached instead, its bytes in no series.
func (c *Conn) Close(read, written int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if c.onReach && !c.opened.Load() {
		c.unreached(c.why)
		return
	}
	c.open(c.key)
	c.closed = true
	c.s.close.Inc()
	c.s.active.Dec()
	c.s.read.Add(float64(read))
	c.s.written.Add(float64(written))
	c.s.lastUsed.Store(c.m.now())
	c.s.busy.Add(-1)
}

// RouteKey names the HTTP series of one kind of request.
type RouteKey struct {
	Direction Direction
	// Authority is the request's Host; client-controlled.
	Authority string
	// Target is the original destination, ip:port; empty for a request
	// the proxy answered itself because it reached no application (no
	// endpoint, connecting failed), which names no target, as
	// Conn.Unreached does not for TCP.
	Target string
	// Dst is the workload the request was balanced to, outbound.
	Dst Dst
	// ClientID and ServerID are the peer's SPIFFE ID proven over mesh TLS,
	// inbound and outbound respectively; "" in plain text.
	ClientID, ServerID string
	// Route is the route rule the request matched, outbound; zero when it
	// matched none.
	Route RouteRef
}

// RouteRef names the route rule a request matched (docs/traffic.md 3.9):
// the route_* labels. Its values come from the controller's route table,
// so they are bounded by the routes that exist; the HTTP paths copy them
// from the compiled rule, whose strings they share, so a key costs no
// allocation.
type RouteRef struct {
	// Kind is "HTTPRoute" or "GRPCRoute"; "Service" for the rule of a
	// Service's own retry and timeout policy (route.Table.Default), whose
	// Namespace and Name are the Service's; "" for no route.
	Kind      string
	Namespace string
	Name      string
	// Rule is the rule's name (spec.rules[].name, else its index, "3");
	// "" for a Service's own rule.
	Rule string
}

// Route holds the HTTP series of one label set, shared by every request
// counted under it. Get it from Metrics.Route for each request (a map
// lookup): one kept across an idle timeout counts into series that were
// deleted. Each Request must be followed by one Response: a label set with
// requests in flight does not expire.
type Route struct {
	activity
	m        *Metrics
	labels   []string
	requests prometheus.Counter
	latency  prometheus.Observer
	// mu serializes creating responses' counters with the sweep that
	// deletes them; it guards expired.
	mu        sync.Mutex
	expired   bool
	responses [len(statusClasses)][2]atomic.Pointer[counter]
}

// counter boxes a Counter for an atomic.Pointer.
type counter struct{ prometheus.Counter }

// statusClasses are the status_class values, by code/100 (0 for codes
// out of range).
var statusClasses = [...]string{"unknown", "1xx", "2xx", "3xx", "4xx", "5xx"}

// classifications are the classification values, by failure (0, 1).
var classifications = [2]string{"success", "failure"}

// maxAuthority bounds the authority label: it comes from the client.
const maxAuthority = 253 + len(":65535") // the longest DNS name, and a port

// Route returns the HTTP series for requests with this key. The authority
// is client-controlled: an absolute-form request target is not validated
// like a Host header, and Prometheus panics on a label that is not UTF-8,
// so it is made valid and bounded in length; every label but direction is
// bounded in number (docs/metrics.md).
func (m *Metrics) Route(k RouteKey) *Route {
	raw := labelKey{string(k.Direction), authority(k.Authority), k.Target,
		k.Dst.Namespace, k.Dst.Workload, k.Dst.Service, k.ClientID, k.ServerID,
		k.Route.Kind, k.Route.Namespace, k.Route.Name, k.Route.Rule}
	return m.routes.get(m, raw, m.now(), false)
}

func (m *Metrics) newRoute(labels []string) *Route {
	return &Route{
		m:        m,
		labels:   labels,
		requests: m.requests.WithLabelValues(labels...),
		latency:  m.latency.WithLabelValues(labels...),
	}
}

// authority returns the label value of a request's authority.
func authority(a string) string {
	a = strings.ToValidUTF8(a, "\uFFFD")
	if len(a) > maxAuthority {
		a = strings.ToValidUTF8(a[:maxAuthority], "")
	}
	return a
}

// Request counts one request received.
func (r *Route) Request() {
	r.busy.Add(1)
	r.requests.Inc()
}

// Response counts a response with HTTP status code and whether the exchange
// succeeded (false for 5xx, a non-zero grpc-status or a broken stream), and
// records the time to its headers.
func (r *Route) Response(code int, success bool, took time.Duration) {
	class, failed := 0, 0
	if code >= 100 && code <= 599 {
		class = code / 100
	}
	if !success {
		failed = 1
	}
	c := r.responses[class][failed].Load()
	if c == nil {
		c = r.response(class, failed)
	}
	c.Inc()
	r.latency.Observe(took.Seconds())
	r.lastUsed.Store(r.m.now())
	r.busy.Add(-1)
}

// response creates the counter of one status class and classification.
func (r *Route) response(class, failed int) *counter {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.responses[class][failed].Load(); c != nil {
		return c
	}
	if r.expired {
		// Swept while the request was on its way from Route to Request
		// (it stalled for longer than the idle timeout): a counter the
		// vector does not hold, rather than a series nothing would expire.
		return &counter{prometheus.NewCounter(prometheus.CounterOpts{Name: "expired"})}
	}
	labels := append(append(make([]string, 0, len(r.labels)+2), r.labels...), statusClasses[class], classifications[failed])
	c := &counter{r.m.responses.WithLabelValues(labels...)}
	r.responses[class][failed].Store(c)
	return c
}

// remove deletes the route's series. Called by a sweep, with no request
// counted in flight.
func (r *Route) remove(labels []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expired = true
	r.m.requests.DeleteLabelValues(labels...)
	r.m.latency.DeleteLabelValues(labels...)
	for class := range r.responses {
		for failed := range r.responses[class] {
			if r.responses[class][failed].Load() != nil {
				r.m.responses.DeleteLabelValues(append(slices.Clone(labels), statusClasses[class], classifications[failed])...)
			}
		}
	}
}
