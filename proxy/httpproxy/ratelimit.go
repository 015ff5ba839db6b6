package httpproxy

import (
	"fmt"
	"strconv"
	"time"
)

// RateLimited is the error an Authorizer returns for a request that its
// client may send but that a local rate limit holds back (an
// HTTPLocalRateLimitPolicy, proxy/authz): the forwarders answer it with
// 429 Too Many Requests and Retry-After (gRPC: RESOURCE_EXHAUSTED), where
// any other error of an Authorizer is a 403. Test for it with errors.As.
type RateLimited struct {
	// RetryAfter is how long until the limit admits a request of the
	// client again; Retry-After rounds it up to whole seconds.
	RetryAfter time.Duration
	// Scope names the limit that held the request back: "total",
	// "identity" or "override".
	Scope string
	// Server is the Server whose limit it is, and RequestsPerSecond the
	// limit, for the message the client gets.
	Server            string
	RequestsPerSecond uint32
}

// Error says which limit the request exceeded, for the body of the 429
// and the grpc-message.
func (e *RateLimited) Error() string {
	var per string
	switch e.Scope {
	case "total":
		per = " in total"
	case "identity":
		per = " per client identity"
	case "override":
		per = " to this client"
	}
	requests := "requests"
	if e.RequestsPerSecond == 1 {
		requests = "request"
	}
	return fmt.Sprintf("server %q allows %d %s per second%s; retry after %ss", e.Server, e.RequestsPerSecond, requests, per, e.RetryAfterHeader())
}

// RetryAfterHeader is the value of the Retry-After header (RFC 9110
// 10.2.3): RetryAfter in whole seconds, rounded up, and at least 1 so
// that a client honouring it never retries at once.
func (e *RateLimited) RetryAfterHeader() string {
	s := (e.RetryAfter + time.Second - 1) / time.Second
	return strconv.FormatInt(max(int64(s), 1), 10)
}
