package certify

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/mesh-dev/mesh/identity/ca"
)

// Reasons a Certify request is refused: the values of the "reason" label of
// mesh_identity_certificate_requests_denied_total. The set is fixed, so the
// label stays bounded whatever callers send.
const (
	ReasonBadIdentity       = "bad_identity"         // identity is not spiffe://<td>/ns/<ns>/sa/<sa>
	ReasonForeignDomain     = "foreign_trust_domain" // identity is in another trust domain
	ReasonBadCSR            = "bad_csr"              // malformed, badly signed, wrong key or wrong names
	ReasonUnauthenticated   = "unauthenticated"      // no token, or the API server refused it
	ReasonWrongIdentity     = "wrong_identity"       // the token is another ServiceAccount's, or no ServiceAccount's
	ReasonReviewUnavailable = "review_unavailable"   // the TokenReview could not be made
	ReasonIssuerUnavailable = "issuer_unavailable"   // the issuer cannot sign now (expired)
	ReasonInternal          = "internal"             // a bug: signing failed otherwise
	ReasonRateLimited       = "rate_limited"         // the client address is over its rate
	ReasonCachedDenial      = "cached_denial"        // the API server refused the same token lately
	ReasonBusy              = "busy"                 // every review slot stayed taken (also: too many streams)
	ReasonClientLimit       = "client_limit"         // too many streams from the client address (streams only)
)

var reasons = []string{
	ReasonBadIdentity, ReasonForeignDomain, ReasonBadCSR, ReasonUnauthenticated,
	ReasonWrongIdentity, ReasonReviewUnavailable, ReasonIssuerUnavailable, ReasonInternal,
	ReasonRateLimited, ReasonCachedDenial, ReasonBusy,
}

// watchReasons are the values of the "reason" label of
// mesh_identity_trust_bundle_watches_refused_total.
var watchReasons = []string{ReasonBusy, ReasonClientLimit}

// classify maps an error of certify to the gRPC code the proto documents
// and to a reason. It is the one place errors meet gRPC codes.
func classify(err error) (codes.Code, string) {
	switch {
	case errors.Is(err, errBadIdentity):
		return codes.InvalidArgument, ReasonBadIdentity
	case errors.Is(err, errForeignDomain):
		return codes.InvalidArgument, ReasonForeignDomain
	case errors.Is(err, ca.ErrMalformedCSR), errors.Is(err, ca.ErrCSRSignature),
		errors.Is(err, ca.ErrCSRKey), errors.Is(err, ca.ErrCSRSAN), errors.Is(err, errCSRMismatch):
		return codes.InvalidArgument, ReasonBadCSR
	case errors.Is(err, errRateLimited):
		return codes.ResourceExhausted, ReasonRateLimited
	case errors.Is(err, errBusy):
		return codes.ResourceExhausted, ReasonBusy
	case errors.Is(err, errCachedDenial):
		return codes.Unauthenticated, ReasonCachedDenial
	case errors.Is(err, errNoToken), errors.Is(err, ErrUnauthenticated):
		return codes.Unauthenticated, ReasonUnauthenticated
	case errors.Is(err, errNotServiceAccount), errors.Is(err, errWrongIdentity):
		return codes.PermissionDenied, ReasonWrongIdentity
	case errors.Is(err, errReview):
		return codes.Unavailable, ReasonReviewUnavailable
	case errors.Is(err, ca.ErrIssuerExpired):
		return codes.Unavailable, ReasonIssuerUnavailable
	}
	return codes.Internal, ReasonInternal
}

// metrics counts what Certify and WatchTrustBundle do. A nil *metrics
// counts nothing.
type metrics struct {
	issued   prometheus.Counter
	denied   *prometheus.CounterVec
	watchers prometheus.Gauge
	refused  *prometheus.CounterVec
}

// newMetrics registers the service's metrics with reg; a nil reg gives nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_identity_certificates_issued_total",
			Help: "Workload certificates signed.",
		}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_identity_certificate_requests_denied_total",
			Help: "Certify requests answered without a certificate, by reason (" + fmt.Sprint(reasons) + ").",
		}, []string{"reason"}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mesh_identity_trust_bundle_watchers",
			Help: "WatchTrustBundle streams open now.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_identity_trust_bundle_watches_refused_total",
			Help: "WatchTrustBundle streams refused by the stream limits, by reason (" + fmt.Sprint(watchReasons) + ").",
		}, []string{"reason"}),
	}
	// Every reason exists from the start, so a rate() alert sees 0
	// rather than no data.
	for _, r := range reasons {
		m.denied.WithLabelValues(r)
	}
	for _, r := range watchReasons {
		m.refused.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.issued, m.denied, m.watchers, m.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) issue() {
	if m != nil {
		m.issued.Inc()
	}
}

func (m *metrics) deny(reason string) {
	if m != nil {
		m.denied.WithLabelValues(reason).Inc()
	}
}

func (m *metrics) watch(delta float64) {
	if m != nil {
		m.watchers.Add(delta)
	}
}

func (m *metrics) refuseWatch(reason string) {
	if m != nil {
		m.refused.WithLabelValues(reason).Inc()
	}
}
