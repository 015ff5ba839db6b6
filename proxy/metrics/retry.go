package metrics

import "github.com/prometheus/client_golang/prometheus"

// RetryReason is the reason label of mesh_proxy_http_retries_total: why a
// request was sent again.
type RetryReason string

// NotDelivered: the request provably reached no application
// (docs/traffic.md 3.5): no connection to its endpoint could be made, the
// endpoint's proxy said it could not reach its application, or an HTTP/2
// target refused the stream unprocessed. It is sent again whatever its
// method, outside any retry budget.
const NotDelivered RetryReason = "not_delivered"

// retryReasons is how many RetryReason values there are.
const retryReasons = 1

func newRetries(reg prometheus.Registerer) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_http_retries_total",
		Help: "HTTP requests sent again, to another endpoint or on another connection, by direction and reason.",
	}, []string{"direction", "reason"})
	reg.MustRegister(v)
	return v
}

// Retried counts one request sent again for why. Its label values are the
// proxy's own, so its series are few and never expire.
func (m *Metrics) Retried(dir Direction, why RetryReason) {
	m.retries.WithLabelValues(string(dir), string(why)).Inc()
}
