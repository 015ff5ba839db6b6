// Package metrics holds the proxy's Prometheus series. Every series the proxy
// exports is declared here, so the set stays small and documented
// (docs/metrics.md lists them).
package metrics

import (
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
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
var latencyBuckets = [...]float64{
	0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
	0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10,
}

// Label names; docs/metrics.md says what each holds.
var (
	tcpLabels  = []string{"direction", "target_addr", "dst_namespace", "dst_workload", "client_id", "server_id"}
	httpLabels = []string{"direction", "authority", "target_addr", "dst_namespace", "dst_workload", "dst_service", "client_id", "server_id",
		"route_kind", "route_namespace", "route_name", "route_rule"}
)

// DefaultIdleTimeout is Config.IdleTimeout's default.
const DefaultIdleTimeout = 10 * time.Minute

// Config configures Metrics. The zero value is the default.
type Config struct {
	// IdleTimeout is how long the series of an HTTP or TCP label set may
	// go without a request or connection before they are deleted, freeing
	// their label values' places under the caps. Zero means
	// DefaultIdleTimeout. A label set that comes back starts from zero,
	// which Prometheus' rate() and increase() treat as a counter reset.
	IdleTimeout time.Duration
}

// sweepEvery is the least time between two sweeps made because a cap was
// reached; every scrape sweeps too.
const sweepEvery = time.Second

// Metrics is the proxy's registry. It is safe for concurrent use.
type Metrics struct {
	reg  *prometheus.Registry
	idle time.Duration
	// now reads the clock in unix nanoseconds; tests set it.
	now func() int64

	detections *prometheus.CounterVec
	requests   *prometheus.CounterVec
	responses  *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	tcpOpen    *prometheus.CounterVec
	tcpClose   *prometheus.CounterVec
	tcpActive  *prometheus.GaugeVec
	readBytes  *prometheus.CounterVec
	writeBytes *prometheus.CounterVec
	unreached  *prometheus.CounterVec
	retry      retryMetrics
	authz      *authzMetrics

	// mu guards the maps of routes, conns and their valueSets, detected,
	// and lastSweep. Lookups of known label sets take it for reading.
	mu        sync.RWMutex
	routes    *group[*Route]
	conns     *group[*connSet]
	detected  map[[3]string]prometheus.Counter // at most maxDetections, and overflow
	lastSweep int64
}

// New returns a registry with the default Config.
func New() *Metrics { return NewWithConfig(Config{}) }

// NewWithConfig returns a registry with every proxy series plus the
// process and Go runtime collectors (memory is part of what we promise to
// keep small).
func NewWithConfig(cfg Config) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), idle: cfg.IdleTimeout, detected: map[[3]string]prometheus.Counter{},
		now: func() int64 { return time.Now().UnixNano() }}
	if m.idle <= 0 {
		m.idle = DefaultIdleTimeout
	}
	m.detections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_protocol_detections_total",
		Help: "Connections by the protocol detected on them and why.",
	}, []string{"direction", "protocol", "reason"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_http_requests_total",
		Help: "HTTP requests received, by authority, target, destination workload and route rule.",
	}, httpLabels)
	m.responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_http_responses_total",
		Help: "HTTP responses sent, by status class and success classification (gRPC status counts).",
	}, append(slices.Clone(httpLabels), "status_class", "classification"))
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mesh_proxy_http_response_latency_seconds",
		Help:    "Time from receiving a request to receiving the response headers from the target.",
		Buckets: latencyBuckets[:],
	}, httpLabels)
	m.tcpOpen = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_tcp_open_total",
		Help: "TCP connections accepted by the proxy and forwarded.",
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
	m.unreached = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_tcp_unreached_total",
		Help: "TCP connections accepted that never reached an application (refused, target unreachable, client gone first), by reason; they have no per-target series.",
	}, []string{"direction", "reason"})
	m.reg.MustRegister(m.detections, m.requests, m.responses, m.latency,
		m.tcpOpen, m.tcpClose, m.tcpActive, m.readBytes, m.writeBytes, m.unreached,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	m.retry = newRetryMetrics(m.reg)
	m.authz = newAuthzMetrics(m.reg)
	m.newGroups()
	return m
}

// newGroups makes the HTTP and TCP label sets, their labels capped by
// value sets shared where the kinds share a label. The route labels come
// from the controller, bounded by the routes that exist, and are capped
// all the same, each on its own.
func (m *Metrics) newGroups() {
	target, ns, workload, client, server := newValueSet(), newValueSet(), newValueSet(), newValueSet(), newValueSet()
	m.routes = newGroup([]*valueSet{nil, newValueSet(), target, ns, workload, newValueSet(), client, server,
		newValueSet(), newValueSet(), newValueSet(), newValueSet()},
		m.newRoute, (*Route).remove)
	m.conns = newGroup([]*valueSet{nil, target, ns, workload, client, server},
		m.newConnSet, m.removeConn)
}

// gather sweeps idle label sets, then gathers: a scrape never shows a
// series that has expired.
func (m *Metrics) gather() ([]*dto.MetricFamily, error) {
	m.mu.Lock()
	m.sweepLocked(m.now(), true)
	m.mu.Unlock()
	return m.reg.Gather()
}

// sweepLocked deletes the label sets idle for longer than the idle
// timeout, unless force is false and the last sweep was less than
// sweepEvery ago; it reports whether it swept. Called with mu held.
func (m *Metrics) sweepLocked(now int64, force bool) bool {
	if !force && now-m.lastSweep < int64(sweepEvery) {
		return false
	}
	m.lastSweep = now
	deadline := now - int64(m.idle)
	m.routes.sweep(deadline)
	m.conns.sweep(deadline)
	return true
}

// CountTapDrops exports the events a tap hub dropped for watchers too slow
// to read them; dropped is read at every scrape.
func (m *Metrics) CountTapDrops(dropped func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "mesh_proxy_tap_dropped_events_total",
		Help: "Tap events dropped because a watcher (mesh viz tap) read too slowly.",
	}, func() float64 { return float64(dropped()) }))
}

// Handler serves the registry in the Prometheus text format, never
// compressed. A proxy's page is a few kilobytes, which the pod network
// carries in no time; gzip would cost each scrape more CPU than the page
// takes to write, and a compressor holds about 1 MB of window and hash
// tables, which promhttp pools between scrapes: on the local cluster it was
// more than half of an idle proxy's heap (docs/benchmarks.md, bench-mesh).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(prometheus.GathererFunc(m.gather), promhttp.HandlerOpts{DisableCompression: true})
}

// Registry exposes the underlying registry, for registering the proxy's
// other series. Gathering from it directly skips the sweep of idle series
// that Handler makes.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// maxDetections bounds the (direction, protocol, reason) label sets of
// the detection series. The proxy's code sets them (a couple of dozen);
// the cap is a guard against a change that would let a client choose.
const maxDetections = 32

// Detected counts one protocol detection outcome.
func (m *Metrics) Detected(dir Direction, protocol, reason string) {
	key := [3]string{string(dir), protocol, reason}
	m.mu.RLock()
	c, ok := m.detected[key]
	m.mu.RUnlock()
	if !ok {
		m.mu.Lock()
		if c, ok = m.detected[key]; !ok {
			if len(m.detected) >= maxDetections {
				key = [3]string{string(dir), other, other}
			}
			if c, ok = m.detected[key]; !ok {
				c = m.detections.WithLabelValues(key[:]...)
				m.detected[key] = c
			}
		}
		m.mu.Unlock()
	}
	c.Inc()
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
