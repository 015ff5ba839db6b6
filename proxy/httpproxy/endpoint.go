package httpproxy

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/route"
)

// Endpoint is where one request goes, and where its outcome is reported.
type Endpoint struct {
	Addr netip.AddrPort
	// Identity is the SPIFFE ID the endpoint's proxy must prove over mesh
	// TLS; empty means plain text (the endpoint is not meshed).
	Identity string
	// Dst describes the endpoint's workload for the metrics.
	Dst metrics.Dst
	// Report, when set, is called once the response has ended (or failed)
	// with the time to its headers and the failure, nil on success, so the
	// balancer that chose Addr can learn from it.
	Report func(rtt time.Duration, err error)
}

// Picker chooses the endpoint of one request whose connection was going to
// target: one of target's own endpoints when backend is "", else one of
// backend's, the authority of the backendRef a route sent the request to
// (route.Backend.Authority). It returns ErrNoEndpoints for a destination
// the mesh knows but that has nothing to send to, ErrUnavailable when it
// cannot tell whether the mesh knows it; any other error forwards to
// target as is (for a backend: ErrNoEndpoints, as the backend is the
// mesh's by definition).
type Picker func(ctx context.Context, target netip.AddrPort, backend string) (Endpoint, error)

// ErrNoEndpoints makes the proxy answer 503: the destination exists, and
// none of its endpoints is ready.
var ErrNoEndpoints = errors.New("no endpoints available")

// ErrUnavailable makes the proxy answer 503 without sending anything: the
// controller could not say whether the destination is meshed, and sending
// it plain text could drop the mesh TLS its server requires.
var ErrUnavailable = errors.New("destination unknown: the controller is unavailable")

// ErrServerError is what a request reports to its balancer when the
// endpoint answered 5xx (or the proxy did for it: unreachable, timed out).
var ErrServerError = errors.New("server error")

// ConnectError is a failure to connect to a target: the dial, or the mesh
// TLS handshake with the target's proxy. The request that needed the
// connection never reached an application, so it may go to another
// endpoint. It says what it wraps, and does not hide a timeout from
// errors.As.
type ConnectError struct{ Err error }

func (e *ConnectError) Error() string { return e.Err.Error() }
func (e *ConnectError) Unwrap() error { return e.Err }

// Is makes a connect failure eject its endpoint from the balancer at once.
func (e *ConnectError) Is(target error) bool { return target == balance.ErrUnreachable }

// RouteRef is the route_* labels of the requests a rule took
// (docs/metrics.md); zero for none. It shares the compiled rule's strings,
// so building a key allocates nothing.
func RouteRef(r *route.Rule) metrics.RouteRef {
	if r == nil {
		return metrics.RouteRef{}
	}
	return metrics.RouteRef{Kind: r.Route.Kind, Namespace: r.Route.Namespace, Name: r.Route.Name, Rule: r.Name}
}
