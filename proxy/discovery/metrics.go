package discovery

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

// Values of the "kind" label of mesh_proxy_discovery_updates_total, one per
// kind of destinationv1.Update.
const (
	kindAdd         = "add"
	kindRemove      = "remove"
	kindNoEndpoints = "no_endpoints"
)

// Values of the "result" label of mesh_proxy_discovery_route_tables_total.
const (
	tableApplied = "applied"
	tableRefused = "refused" // did not compile; the last good table stays
)

// metrics counts what the cache does with the controller. A nil *metrics
// counts nothing.
type metrics struct {
	streams    prometheus.Gauge
	updates    *prometheus.CounterVec
	reconnects prometheus.Counter
	malformeds prometheus.Counter

	routeStreams prometheus.Gauge
	routeTables  *prometheus.CounterVec
}

// newMetrics registers the cache's metrics with reg; a nil reg gives nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mesh_proxy_discovery_streams",
			Help: "Destination streams open to the controller, one per destination in use.",
		}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_proxy_discovery_updates_total",
			Help: "Endpoint updates received from the controller, by kind (add, remove, no_endpoints).",
		}, []string{"kind"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_proxy_discovery_reconnects_total",
			Help: "Destination streams opened again after one broke.",
		}),
		malformeds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_proxy_discovery_malformed_endpoints_total",
			Help: "Endpoint addresses from the controller that were skipped because they do not parse.",
		}),
		routeStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mesh_proxy_discovery_route_streams",
			Help: "Routes streams open to the controller, one per destination in use that the controller serves routes for.",
		}),
		routeTables: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_proxy_discovery_route_tables_total",
			Help: "Route tables received from the controller, by result: applied, or refused because they do not compile (the last good table stays).",
		}, []string{"result"}),
	}
	// Every kind exists from the start, so rate() sees 0 rather than no data.
	for _, k := range []string{kindAdd, kindRemove, kindNoEndpoints} {
		m.updates.WithLabelValues(k)
	}
	for _, r := range []string{tableApplied, tableRefused} {
		m.routeTables.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.streams, m.updates, m.reconnects, m.malformeds, m.routeStreams, m.routeTables} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("discovery: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) streamOpened() {
	if m != nil {
		m.streams.Inc()
	}
}

func (m *metrics) streamClosed() {
	if m != nil {
		m.streams.Dec()
	}
}

func (m *metrics) reconnect() {
	if m != nil {
		m.reconnects.Inc()
	}
}

func (m *metrics) malformed() {
	if m != nil {
		m.malformeds.Inc()
	}
}

// updated counts one applied update by its kind.
func (m *metrics) updated(u *destinationv1.Update) {
	if m == nil {
		return
	}
	switch u.GetKind().(type) {
	case *destinationv1.Update_Add:
		m.updates.WithLabelValues(kindAdd).Inc()
	case *destinationv1.Update_Remove:
		m.updates.WithLabelValues(kindRemove).Inc()
	case *destinationv1.Update_NoEndpoints:
		m.updates.WithLabelValues(kindNoEndpoints).Inc()
	}
}

func (m *metrics) routeStreamOpened() {
	if m != nil {
		m.routeStreams.Inc()
	}
}

func (m *metrics) routeStreamClosed() {
	if m != nil {
		m.routeStreams.Dec()
	}
}

// routeTable counts one table received, by result.
func (m *metrics) routeTable(result string) {
	if m != nil {
		m.routeTables.WithLabelValues(result).Inc()
	}
}
