package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// AuthzDecision is the decision label of the authorization series.
type AuthzDecision string

// The decisions of the inbound authorization policy.
const (
	// Allow: an authorization (or a probe exemption) let the client in.
	Allow AuthzDecision = "allow"
	// Deny: nothing did; the request got 403 or PERMISSION_DENIED, the
	// connection was closed.
	Deny AuthzDecision = "deny"
	// Audit: nothing did, but the policy audits, so it went through.
	Audit AuthzDecision = "audit"
)

// maxClientIDs bounds the distinct values of client_id on the
// authorization series: each proven identity of the cluster could
// otherwise add a set of series for the life of the process.
const maxClientIDs = 100

// otherClientID is the client_id label of identities past maxClientIDs.
const otherClientID = "other"

var authzLabels = []string{"server", "authz", "client_id", "decision"}

// authzMetrics are the inbound policy's series.
type authzMetrics struct {
	http *prometheus.CounterVec
	tcp  *prometheus.CounterVec

	mu        sync.RWMutex
	clientIDs map[string]struct{} // guarded by mu; at most maxClientIDs
}

func newAuthzMetrics(reg prometheus.Registerer) *authzMetrics {
	a := &authzMetrics{
		http: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_proxy_inbound_http_authz_total",
			Help: "Inbound HTTP requests decided by the authorization policy, by Server, allowing authorization, client identity and decision.",
		}, authzLabels),
		tcp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_proxy_inbound_tcp_authz_total",
			Help: "Inbound connections decided by the authorization policy as a whole (forwarded as TCP, or refused for want of a policy), by Server, allowing authorization, client identity and decision.",
		}, authzLabels),
		clientIDs: map[string]struct{}{},
	}
	reg.MustRegister(a.http, a.tcp)
	return a
}

// AuthzKey names the series of one kind of authorization decision.
type AuthzKey struct {
	// Server is the Server's name, or "default:<policy>".
	Server string
	// Authz is the allowing authorization's name, "probe" for a kubelet
	// probe let through, "" when none allowed.
	Authz string
	// ClientID is the client's SPIFFE ID proven over mesh TLS, "" in
	// plain text. The proxy keeps at most 100 distinct values; later ones
	// are counted as "other".
	ClientID string
	Decision AuthzDecision
}

// HTTPAuthz returns the counter of requests decided as k. Callers keep it
// for as long as k holds (a connection's decision), so that counting a
// request is one atomic add.
func (m *Metrics) HTTPAuthz(k AuthzKey) prometheus.Counter {
	return m.authz.http.WithLabelValues(m.authz.labels(k)...)
}

// TCPAuthz returns the counter of connections decided as k.
func (m *Metrics) TCPAuthz(k AuthzKey) prometheus.Counter {
	return m.authz.tcp.WithLabelValues(m.authz.labels(k)...)
}

func (a *authzMetrics) labels(k AuthzKey) []string {
	return []string{k.Server, k.Authz, a.clientID(k.ClientID), string(k.Decision)}
}

// clientID returns the label value of a client identity.
func (a *authzMetrics) clientID(id string) string {
	if id == "" {
		return ""
	}
	a.mu.RLock()
	_, known := a.clientIDs[id]
	a.mu.RUnlock()
	if known {
		return id
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.clientIDs[id]; ok {
		return id
	}
	if len(a.clientIDs) >= maxClientIDs {
		return otherClientID
	}
	a.clientIDs[id] = struct{}{}
	return id
}

// PolicyStatus exports the state of the inbound policy watch: whether the
// proxy holds a policy, and how many it received.
type PolicyStatus struct {
	ready   prometheus.Gauge
	updates prometheus.Counter
}

// InboundPolicy registers the policy watch's series and returns their
// handle. Call it once, when the proxy watches a policy: a proxy without
// one (no pod name or no controller) exports neither series.
func (m *Metrics) InboundPolicy() *PolicyStatus {
	s := &PolicyStatus{
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mesh_proxy_inbound_policy_ready",
			Help: "1 once the proxy holds an inbound policy from the controller, 0 while it waits for the first.",
		}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mesh_proxy_inbound_policy_updates_total",
			Help: "Inbound policies received from the controller (each replaces the one before).",
		}),
	}
	m.reg.MustRegister(s.ready, s.updates)
	return s
}

// Updated counts a policy received; the proxy holds one from now on.
func (s *PolicyStatus) Updated() {
	s.updates.Inc()
	s.ready.Set(1)
}
