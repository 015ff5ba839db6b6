package names

// The traffic policy annotations of DESIGN.md ("Policy and traffic"),
// read by the controller on Services, HTTPRoutes and GRPCRoutes
// (docs/traffic.md 2.3, 3.3-3.6): the most specific object wins, field by
// field, a route over its parent Service. The controller parses them and
// sends the proxies what they mean; `mesh check` and the docs name them.
const (
	// RetryPrefix, TimeoutPrefix and BalancerPrefix start every
	// annotation of their kind: a name under them that is none of the
	// ones below is a mistake the controller reports, not ignores.
	RetryPrefix    = "retry.mesh.dev/"
	TimeoutPrefix  = "timeout.mesh.dev/"
	BalancerPrefix = "balancer.mesh.dev/"

	// AnnotationRetryHTTP lists the HTTP statuses a request is retried
	// on: "5xx", "gateway-error" (502, 503, 504), codes and ranges
	// ("503,504", "500-504").
	AnnotationRetryHTTP = RetryPrefix + "http"
	// AnnotationRetryGRPC lists the gRPC status codes a request is
	// retried on, by name: "unavailable,cancelled".
	AnnotationRetryGRPC = RetryPrefix + "grpc"
	// AnnotationRetryLimit is how many retries may follow the first
	// attempt (default 1).
	AnnotationRetryLimit = RetryPrefix + "limit"
	// AnnotationRetryTimeout bounds each attempt ("500ms").
	AnnotationRetryTimeout = RetryPrefix + "timeout"

	// AnnotationTimeoutRequest bounds a request from its arrival to the
	// end of its response, retries included.
	AnnotationTimeoutRequest = TimeoutPrefix + "request"
	// AnnotationTimeoutResponse bounds the wait for the response head
	// from the end of the request body.
	AnnotationTimeoutResponse = TimeoutPrefix + "response"
	// AnnotationTimeoutIdle ends an exchange that moved no byte either
	// way for that long.
	AnnotationTimeoutIdle = TimeoutPrefix + "idle"

	// AnnotationFailureAccrual, on a Service only, is
	// FailureAccrualConsecutive (the balancer ejects an endpoint after
	// AnnotationMaxFailures failures in a row; the default) or
	// FailureAccrualDisabled (it never ejects one for failing).
	AnnotationFailureAccrual = BalancerPrefix + "failure-accrual"
	// AnnotationMaxFailures is how many consecutive failures eject an
	// endpoint; AnnotationMinBackoff and AnnotationMaxBackoff how long
	// its first ejection lasts and what doubling it stops at.
	AnnotationMaxFailures = BalancerPrefix + "max-failures"
	AnnotationMinBackoff  = BalancerPrefix + "min-backoff"
	AnnotationMaxBackoff  = BalancerPrefix + "max-backoff"

	FailureAccrualConsecutive = "consecutive"
	FailureAccrualDisabled    = "disabled"
)
