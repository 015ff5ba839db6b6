package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/mesh-dev/mesh/proxy/metrics"
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
// target. It returns ErrNoEndpoints for a destination the mesh knows but
// that has nothing to send to, ErrUnavailable when it cannot tell whether
// the mesh knows it; any other error forwards to target as is.
type Picker func(ctx context.Context, target netip.AddrPort) (Endpoint, error)

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

type endpointKey struct{}

// endpointFrom returns the address a request was routed to, or its
// connection's target when it was not balanced.
func endpointFrom(ctx context.Context) netip.AddrPort {
	if ep, ok := ctx.Value(endpointKey{}).(Endpoint); ok {
		return ep.Addr
	}
	t, _ := targetFrom(ctx)
	return t
}

// dstFrom returns the workload of the request's endpoint, zero when the
// request was not balanced.
func dstFrom(ctx context.Context) metrics.Dst {
	ep, _ := ctx.Value(endpointKey{}).(Endpoint)
	return ep.Dst
}

// identityFrom returns the identity the request's endpoint must prove.
// The transports dial with the context of the request that needed the
// connection, so the dialer finds it there.
func identityFrom(ctx context.Context) string {
	ep, _ := ctx.Value(endpointKey{}).(Endpoint)
	return ep.Identity
}

// pick routes r: the returned request carries the chosen endpoint, also
// returned, whose Report (nil when the request is not balanced) must then
// be called once.
func (p *Proxy) pick(r *http.Request, target netip.AddrPort) (*http.Request, Endpoint, error) {
	if p.cfg.Pick == nil {
		return r, Endpoint{}, nil
	}
	ep, err := p.cfg.Pick(r.Context(), target)
	if errors.Is(err, ErrNoEndpoints) || errors.Is(err, ErrUnavailable) {
		return r, Endpoint{}, err
	}
	if err != nil {
		return r, Endpoint{}, nil
	}
	// An endpoint at the very address the client dialled (a pod of a
	// headless Service, a StatefulSet peer) is routed like any other: it
	// carries the identity its mesh TLS must prove, and its pick must be
	// reported or the balancer counts it pending for ever.
	return r.WithContext(context.WithValue(r.Context(), endpointKey{}, ep)), ep, nil
}

// outcome classifies a finished request for the balancer: a client that
// left says nothing about the endpoint; a 5xx is the endpoint's failure.
// A gRPC error status is the application's answer, not a sick endpoint.
func outcome(r *http.Request, rec *recorder) error {
	if err := r.Context().Err(); err != nil {
		return err
	}
	if rec.code() >= 500 {
		return fmt.Errorf("%w: %d", ErrServerError, rec.code())
	}
	return nil
}

// writeNoEndpoints answers 503 (gRPC: UNAVAILABLE) for a destination with
// no endpoint to send to, or one the controller could not answer for
// (err says which).
func (p *Proxy) writeNoEndpoints(w http.ResponseWriter, r *http.Request, target netip.AddrPort, err error) {
	msg := fmt.Sprintf("mesh-proxy: no endpoints available for %s (%s)", r.Host, target)
	header := "no endpoints"
	if errors.Is(err, ErrUnavailable) {
		msg = fmt.Sprintf("mesh-proxy: %s (%s) not sent: the controller could not say whether it is meshed, and it is never sent in plain text then; retry once the controller is back", r.Host, target)
		header = "controller unavailable"
	}
	p.cfg.Log.Info("request failed", "direction", p.cfg.Direction, "target", target.String(),
		"authority", r.Host, "status", http.StatusServiceUnavailable, "err", err)
	w.Header().Set("Mesh-Proxy-Error", header)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "14") // UNAVAILABLE
		w.Header().Set("Grpc-Message", msg)
		w.WriteHeader(http.StatusOK)
		return
	}
	http.Error(w, msg, http.StatusServiceUnavailable)
}
