package metrics

import "github.com/prometheus/client_golang/prometheus"

// RetryReason is the reason label of mesh_proxy_http_retries_total: why a
// request was sent again.
type RetryReason string

const (
	// NotDelivered: the request provably reached no application
	// (docs/traffic.md 3.5): no connection to its endpoint could be made,
	// the endpoint's proxy said it could not reach its application, or an
	// HTTP/2 target refused the stream unprocessed. It is sent again
	// whatever its method, outside any retry budget.
	NotDelivered RetryReason = "not_delivered"
	// RetryHTTP: its route's retry policy took the response's HTTP status
	// (retry.mesh.dev/http, docs/traffic.md 3.4).
	RetryHTTP RetryReason = "http"
	// RetryGRPC: its route's retry policy took the grpc-status of a
	// trailers-only response (retry.mesh.dev/grpc).
	RetryGRPC RetryReason = "grpc"
	// RetryTimeout: the attempt ran past its per-try timeout
	// (retry.mesh.dev/timeout, timeouts.backendRequest).
	RetryTimeout RetryReason = "timeout"
)

// retryReasons is how many RetryReason values there are.
const retryReasons = 4

// RetrySkip is the reason label of mesh_proxy_http_retry_skipped_total:
// why a response its route's retry policy would retry went to the client
// as it was.
type RetrySkip string

const (
	// SkipBudget: the backend's retry budget had no token left.
	SkipBudget RetrySkip = "budget"
	// SkipBody: the request's body was not all kept (past the policy's
	// max body, or the response came before it ended).
	SkipBody RetrySkip = "body"
	// SkipLimit: the request was retried as often as the policy allows.
	SkipLimit RetrySkip = "limit"
)

// retrySkips is how many RetrySkip values there are.
const retrySkips = 3

// FaultType is the type label of mesh_proxy_http_faults_total.
type FaultType string

const (
	// FaultAbort: a route's HTTPFault answered the request itself.
	FaultAbort FaultType = "abort"
	// FaultDelay: a route's HTTPFault held the request before sending it.
	FaultDelay FaultType = "delay"
)

// faultTypes is how many FaultType values there are.
const faultTypes = 2

// retrySeries is the most series the retry and fault families export:
// their label values are the proxy's own, so they are few and never
// expire.
const retrySeries = directions * (retryReasons + retrySkips + faultTypes)

// retryMetrics are the families of retries and faults.
type retryMetrics struct {
	retries, skipped, faults *prometheus.CounterVec
}

func newRetryMetrics(reg prometheus.Registerer) retryMetrics {
	r := retryMetrics{
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_proxy_http_retries_total",
			Help: "HTTP requests sent again, to another endpoint or on another connection, by direction and reason.",
		}, []string{"direction", "reason"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_proxy_http_retry_skipped_total",
			Help: "HTTP responses a route's retry policy would have retried that went to the client as they were, by direction and reason.",
		}, []string{"direction", "reason"}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_proxy_http_faults_total",
			Help: "HTTP requests a route's HTTPFault delayed or aborted, by direction and type.",
		}, []string{"direction", "type"}),
	}
	reg.MustRegister(r.retries, r.skipped, r.faults)
	return r
}

// Retried counts one request sent again for why.
func (m *Metrics) Retried(dir Direction, why RetryReason) {
	m.retry.retries.WithLabelValues(string(dir), string(why)).Inc()
}

// RetrySkipped counts one response a retry policy would have retried
// that went to the client, for why.
func (m *Metrics) RetrySkipped(dir Direction, why RetrySkip) {
	m.retry.skipped.WithLabelValues(string(dir), string(why)).Inc()
}

// Fault counts one request a route's HTTPFault delayed or aborted.
func (m *Metrics) Fault(dir Direction, t FaultType) {
	m.retry.faults.WithLabelValues(string(dir), string(t)).Inc()
}
