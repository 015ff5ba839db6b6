// Package metrics holds the proxy's Prometheus series. Every series the proxy
// exports is declared here, so the set stays small and documented
// (docs/metrics.md lists them).
package metrics

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// latencyBuckets are few on purpose: every bucket is a series per route.
// They are dense from 10 to 50 ms, where services mostly answer and a
// percentile interpolated inside one bucket stays within 12.5 % of the
// truth, and coarse beyond (docs/metrics.md).
var latencyBuckets = []float64{
	0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
	0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10,
}

// maxAuthorities bounds the distinct values of the authority label: it is
// the client's to choose, and each value is a set of series kept for the
// life of the process.
const maxAuthorities = 100

// otherAuthority is the authority label of requests past maxAuthorities.
const otherAuthority = "other"

// Label names; docs/metrics.md says what each holds.
var (
	tcpLabels  = []string{"direction", "target_addr", "dst_namespace", "dst_workload", "client_id", "server_id"}
	httpLabels = []string{"direction", "authority", "target_addr", "dst_namespace", "dst_workload", "dst_service", "client_id", "server_id"}
)

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
	authz      *authzMetrics

	mu          sync.RWMutex
	authorities map[string]struct{} // guarded by mu; at most maxAuthorities
}

// New returns a registry with every proxy series plus the process and Go
// runtime collectors (memory is part of what we promise to keep small).
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), authorities: map[string]struct{}{}}
	m.detections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_protocol_detections_total",
		Help: "Connections by the protocol detected on them and why.",
	}, []string{"direction", "protocol", "reason"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_http_requests_total",
		Help: "HTTP requests received, by authority, target and destination workload.",
	}, httpLabels)
	m.responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_http_responses_total",
		Help: "HTTP responses sent, by status class and success classification (gRPC status counts).",
	}, append(slices.Clone(httpLabels), "status_class", "classification"))
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mesh_proxy_http_response_latency_seconds",
		Help:    "Time from receiving a request to receiving the response headers from the target.",
		Buckets: latencyBuckets,
	}, httpLabels)
	m.tcpOpen = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_tcp_open_total",
		Help: "TCP connections accepted by the proxy.",
	}, tcpLabels)
	m.tcpClose = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_tcp_close_total",
		Help: "TCP connections closed by the proxy.",
	}, tcpLabels)
	m.tcpActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mesh_proxy_tcp_open_connections",
		Help: "TCP connections currently open.",
	}, tcpLabels)
	m.readBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_tcp_read_bytes_total",
		Help: "Bytes read from clients, counted when their connection closes.",
	}, tcpLabels)
	m.writeBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_tcp_write_bytes_total",
		Help: "Bytes written to clients, counted when their connection closes.",
	}, tcpLabels)
	m.reg.MustRegister(m.detections, m.requests, m.responses, m.latency,
		m.tcpOpen, m.tcpClose, m.tcpActive, m.readBytes, m.writeBytes,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	m.authz = newAuthzMetrics(m.reg)
	return m
}

// CountTapDrops exports the events a tap hub dropped for watchers too slow
// to read them; dropped is read at every scrape.
func (m *Metrics) CountTapDrops(dropped func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "mesh_proxy_tap_dropped_events_total",
		Help: "Tap events dropped because a watcher (mesh viz tap) read too slowly.",
	}, func() float64 { return float64(dropped()) }))
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

// Dst is what the destination service says of the workload behind an
// outbound endpoint; zero inbound and for destinations the mesh does not
// know.
type Dst struct {
	Namespace string
	// Workload is kind/name of the pod's owner: "deployment/web".
	Workload string
	Service  string
}

// ConnKey names the TCP series of one connection.
type ConnKey struct {
	Direction Direction
	// Target is the original destination, ip:port.
	Target string
	// Dst is the workload an opaque outbound connection went to.
	Dst Dst
	// ClientID and ServerID are the peer's SPIFFE ID proven over mesh TLS,
	// inbound and outbound respectively; "" in plain text.
	ClientID, ServerID string
}

func (k ConnKey) labels() []string {
	return []string{string(k.Direction), k.Target, k.Dst.Namespace, k.Dst.Workload, k.ClientID, k.ServerID}
}

// Conn is the per-connection view of the TCP series. A connection is
// counted open only once its labels are known (Open), which is after
// protocol detection and the mesh TLS handshake; one closed before that
// is counted open and closed with the labels it had. Open and Close may be
// called from different goroutines, but not concurrently.
type Conn struct {
	m      *Metrics
	key    ConnKey
	opened bool
	closed bool
}

// Conn returns the handle of a newly accepted connection to target; it
// counts nothing until Open or Close.
func (m *Metrics) Conn(dir Direction, target string) *Conn {
	return &Conn{m: m, key: ConnKey{Direction: dir, Target: target}}
}

// Open counts the connection open under k (its direction and target are
// kept). Only the first call counts.
func (c *Conn) Open(k ConnKey) {
	if c.opened {
		return
	}
	k.Direction, k.Target = c.key.Direction, c.key.Target
	c.key, c.opened = k, true
	labels := k.labels()
	c.m.tcpOpen.WithLabelValues(labels...).Inc()
	c.m.tcpActive.WithLabelValues(labels...).Inc()
}

// Close counts the connection's end and the bytes it moved to and from the
// client. Only the first call counts.
func (c *Conn) Close(read, written int64) {
	if c.closed {
		return
	}
	c.Open(c.key)
	c.closed = true
	labels := c.key.labels()
	c.m.tcpClose.WithLabelValues(labels...).Inc()
	c.m.tcpActive.WithLabelValues(labels...).Dec()
	c.m.readBytes.WithLabelValues(labels...).Add(float64(read))
	c.m.writeBytes.WithLabelValues(labels...).Add(float64(written))
}

// RouteKey names the HTTP series of one kind of request.
type RouteKey struct {
	Direction Direction
	// Authority is the request's Host; client-controlled.
	Authority string
	// Target is the original destination, ip:port.
	Target string
	// Dst is the workload the request was balanced to, outbound.
	Dst Dst
	// ClientID and ServerID are the peer's SPIFFE ID proven over mesh TLS,
	// inbound and outbound respectively; "" in plain text.
	ClientID, ServerID string
}

// Route holds the HTTP series of one RouteKey.
type Route struct {
	m        *Metrics
	labels   []string
	requests prometheus.Counter
	latency  prometheus.Observer
}

// maxAuthority bounds the authority label: it comes from the client.
const maxAuthority = 253 + len(":65535") // the longest DNS name, and a port

// Route returns the HTTP series for requests with this authority to target.
// The authority is client-controlled: an absolute-form request target is
// not validated like a Host header, and Prometheus panics on a label that
// is not UTF-8, so it is made valid and bounded in length and in number.
func (m *Metrics) Route(k RouteKey) *Route {
	labels := []string{string(k.Direction), m.authority(k.Authority), k.Target,
		k.Dst.Namespace, k.Dst.Workload, k.Dst.Service, k.ClientID, k.ServerID}
	return &Route{
		m:        m,
		labels:   labels,
		requests: m.requests.WithLabelValues(labels...),
		latency:  m.latency.WithLabelValues(labels...),
	}
}

// authority returns the label value of a request's authority.
func (m *Metrics) authority(a string) string {
	a = strings.ToValidUTF8(a, "\uFFFD")
	if len(a) > maxAuthority {
		a = strings.ToValidUTF8(a[:maxAuthority], "")
	}
	m.mu.RLock()
	_, known := m.authorities[a]
	m.mu.RUnlock()
	if known {
		return a
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.authorities[a]; ok {
		return a
	}
	if len(m.authorities) >= maxAuthorities {
		return otherAuthority
	}
	m.authorities[a] = struct{}{}
	return a
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
	r.m.responses.WithLabelValues(append(slices.Clone(r.labels), statusClass(code), class)...).Inc()
	r.latency.Observe(took.Seconds())
}

func statusClass(code int) string {
	if code < 100 || code > 599 {
		return "unknown"
	}
	return strconv.Itoa(code/100) + "xx"
}
