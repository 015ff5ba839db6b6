// Package metrics holds the proxy's Prometheus series. Every series the proxy
// exports is declared here, so the set stays small and documented
// (docs/metrics.md lists them).
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Direction says which listener a connection arrived on.
type Direction string

// The two directions of a sidecar: traffic to the pod and traffic from it.
const (
	Inbound  Direction = "inbound"
	Outbound Direction = "outbound"
)

// latencyBuckets are few on purpose: every bucket is a series per target, and
// the viz aggregator interpolates percentiles well enough from these.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10}

// Metrics is the proxy's registry. It is safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	detections *prometheus.CounterVec
	requests   *prometheus.CounterVec
	responses  *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	tcpOpen    *prometheus.CounterVec
	tcpClose   *prometheus.CounterVec
	tcpActive  *prometheus.GaugeVec
	readBytes  *prometheus.CounterVec
	writeBytes *prometheus.CounterVec
}

// New returns a registry with every proxy series plus the process and Go
// runtime collectors (memory is part of what we promise to keep small).
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	target := []string{"direction", "target_addr"}
	// client_id and server_id are the SPIFFE IDs proven over mesh TLS:
	// the client's on inbound requests, the server's on outbound ones;
	// empty in plain text. Their values are bounded by the cluster's
	// ServiceAccounts.
	route := []string{"direction", "authority", "target_addr", "client_id", "server_id"}
	m.detections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_protocol_detections_total",
		Help: "Connections by the protocol detected on them and why.",
	}, []string{"direction", "protocol", "reason"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_http_requests_total",
		Help: "HTTP requests received, by authority and target address.",
	}, route)
	m.responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_http_responses_total",
		Help: "HTTP responses sent, by status class and success classification (gRPC status counts).",
	}, append(route, "status_class", "classification"))
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mesh_proxy_http_response_latency_seconds",
		Help:    "Time from receiving a request to receiving the response headers from the target.",
		Buckets: latencyBuckets,
	}, target)
	m.tcpOpen = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_tcp_open_total",
		Help: "TCP connections accepted by the proxy.",
	}, target)
	m.tcpClose = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_tcp_close_total",
		Help: "TCP connections closed by the proxy.",
	}, target)
	m.tcpActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mesh_proxy_tcp_open_connections",
		Help: "TCP connections currently open.",
	}, []string{"direction"})
	m.readBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_tcp_read_bytes_total",
		Help: "Bytes read from clients on closed and opaque connections.",
	}, target)
	m.writeBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_tcp_write_bytes_total",
		Help: "Bytes written to clients on closed and opaque connections.",
	}, target)
	m.reg.MustRegister(m.detections, m.requests, m.responses, m.latency,
		m.tcpOpen, m.tcpClose, m.tcpActive, m.readBytes, m.writeBytes,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry exposes the underlying registry, for tests and for gathering.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Detected counts one protocol detection outcome.
func (m *Metrics) Detected(dir Direction, protocol, reason string) {
	m.detections.WithLabelValues(string(dir), protocol, reason).Inc()
}

// Conn is the per-connection view of the TCP series.
type Conn struct {
	m         *Metrics
	dir       Direction
	target    string
	closeOnce bool
}

// OpenConn counts a newly accepted connection to target and returns the
// handle that counts its close. Called from the connection's goroutine.
func (m *Metrics) OpenConn(dir Direction, target string) *Conn {
	m.tcpOpen.WithLabelValues(string(dir), target).Inc()
	m.tcpActive.WithLabelValues(string(dir)).Inc()
	return &Conn{m: m, dir: dir, target: target}
}

// Close counts the connection's end and the bytes it moved to and from the
// client. Only the first call counts; it is not safe for concurrent use.
func (c *Conn) Close(read, written int64) {
	if c.closeOnce {
		return
	}
	c.closeOnce = true
	c.m.tcpClose.WithLabelValues(string(c.dir), c.target).Inc()
	c.m.tcpActive.WithLabelValues(string(c.dir)).Dec()
	c.m.readBytes.WithLabelValues(string(c.dir), c.target).Add(float64(read))
	c.m.writeBytes.WithLabelValues(string(c.dir), c.target).Add(float64(written))
}

// RouteKey names the HTTP series of one kind of request.
type RouteKey struct {
	Direction Direction
	// Authority is the request's Host; client-controlled.
	Authority string
	// Target is the original destination, ip:port.
	Target string
	// ClientID and ServerID are the peer's SPIFFE ID proven over mesh TLS,
	// inbound and outbound respectively; "" in plain text.
	ClientID, ServerID string
}

// Route holds the HTTP series of one RouteKey.
type Route struct {
	m        *Metrics
	labels   [5]string
	requests prometheus.Counter
	latency  prometheus.Observer
}

// maxAuthority bounds the authority label: it comes from the client.
const maxAuthority = 253 + len(":65535") // the longest DNS name, and a port

// Route returns the HTTP series for requests with this authority to target.
// The authority is client-controlled: an absolute-form request target is
// not validated like a Host header, and Prometheus panics on a label that
// is not UTF-8, so it is made valid and bounded here.
func (m *Metrics) Route(k RouteKey) *Route {
	authority := strings.ToValidUTF8(k.Authority, "\uFFFD")
	if len(authority) > maxAuthority {
		authority = strings.ToValidUTF8(authority[:maxAuthority], "")
	}
	labels := [5]string{string(k.Direction), authority, k.Target, k.ClientID, k.ServerID}
	return &Route{
		m:        m,
		labels:   labels,
		requests: m.requests.WithLabelValues(labels[:]...),
		latency:  m.latency.WithLabelValues(string(k.Direction), k.Target),
	}
}

// Request counts one request received.
func (r *Route) Request() { r.requests.Inc() }

// Response counts a response with HTTP status code and whether the exchange
// succeeded (false for 5xx, a non-zero grpc-status or a broken stream), and
// records the time to its headers.
func (r *Route) Response(code int, success bool, took time.Duration) {
	class := "success"
	if !success {
		class = "failure"
	}
	r.m.responses.WithLabelValues(append(r.labels[:], statusClass(code), class)...).Inc()
	r.latency.Observe(took.Seconds())
}

func statusClass(code int) string {
	if code < 100 || code > 599 {
		return "unknown"
	}
	return strconv.Itoa(code/100) + "xx"
}
