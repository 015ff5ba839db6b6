package ca

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics counts issuer loads. A nil *metrics counts nothing.
type metrics struct {
	reloads *prometheus.CounterVec
}

// newMetrics registers the CA's metrics with reg; a nil reg gives nil.
func newMetrics(reg prometheus.Registerer, c *CA) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_identity_issuer_reloads_total",
			Help: "Issuer loads from the mounted Secret, by result (success, error); a content that fails is counted once.",
		}, []string{"result"}),
	}
	// Both series exist from the start, so an alert on errors sees 0
	// rather than no data.
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("error")
	expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mesh_identity_issuer_expiry_timestamp_seconds",
		Help: "When the current issuer chain expires, in seconds since the epoch; leaves are cut short as it nears.",
	}, func() float64 {
		g := c.current.Load()
		if g == nil {
			return 0
		}
		return float64(g.issuer.NotAfter().Unix())
	})
	for _, col := range []prometheus.Collector{m.reloads, expiry} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) reload(ok bool) {
	if m == nil {
		return
	}
	result := "error"
	if ok {
		result = "success"
	}
	m.reloads.WithLabelValues(result).Inc()
}
