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

// The caps of the authorization series. Their label values come from the
// controller (Servers, authorizations) and from the cluster's identities,
// so they are bounded by the cluster; the caps bound them per proxy all
// the same, as a guard against a policy or a cluster larger than a
// sidecar should count. These series do not expire: callers keep their
// counters for as long as a connection's decision holds.
const (
	// maxAuthzValues bounds the distinct values of each of server, authz
	// and client_id; later ones are counted as "other".
	maxAuthzValues = 100
	// maxAuthzSets bounds the label sets of each of the two families;
	// later ones are counted under ("other", "other", "other", decision).
	maxAuthzSets = 250
	// authzDecisions is how many AuthzDecision values there are.
	authzDecisions = 3
)

var authzLabels = []string{"server", "authz", "client_id", "decision"}

// authzMetrics are the inbound policy's series.
type authzMetrics struct {
	http, tcp *authzFamily

	// mu guards the maps below and the families'.
	mu                         sync.RWMutex
	servers, authzs, clientIDs map[string]struct{} // each at most maxAuthzValues
}

// authzFamily is one counter vector and its label sets.
type authzFamily struct {
	vec  *prometheus.CounterVec
	sets map[[4]string]prometheus.Counter // at most maxAuthzSets, and overflow
}

func newAuthzMetrics(reg prometheus.Registerer) *authzMetrics {
	a := &authzMetrics{
		http: &authzFamily{vec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_proxy_inbound_http_authz_total",
			Help: "Inbound HTTP requests decided by the authorization policy, by Server, allowing authorization, client identity and decision.",
		}, authzLabels)},
		tcp: &authzFamily{vec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_proxy_inbound_tcp_authz_total",
			Help: "Inbound connections decided by the authorization policy as a whole (forwarded as TCP, or refused for want of a policy), by Server, allowing authorization, client identity and decision.",
		}, authzLabels)},
		servers:   map[string]struct{}{},
		authzs:    map[string]struct{}{},
		clientIDs: map[string]struct{}{},
	}
	a.http.sets = map[[4]string]prometheus.Counter{}
	a.tcp.sets = map[[4]string]prometheus.Counter{}
	reg.MustRegister(a.http.vec, a.tcp.vec)
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
	return m.authz.counter(m.authz.http, k)
}

// TCPAuthz returns the counter of connections decided as k.
func (m *Metrics) TCPAuthz(k AuthzKey) prometheus.Counter {
	return m.authz.counter(m.authz.tcp, k)
}

// counter returns f's counter of k, its labels capped.
func (a *authzMetrics) counter(f *authzFamily, k AuthzKey) prometheus.Counter {
	raw := [4]string{k.Server, k.Authz, k.ClientID, string(k.Decision)}
	a.mu.RLock()
	c, ok := f.sets[raw]
	a.mu.RUnlock()
	if ok {
		return c
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	key := [4]string{capValue(a.servers, k.Server), capValue(a.authzs, k.Authz), capValue(a.clientIDs, k.ClientID), string(k.Decision)}
	if c, ok := f.sets[key]; ok {
		return c
	}
	if len(f.sets) >= maxAuthzSets {
		key = [4]string{other, other, other, string(k.Decision)}
		if c, ok := f.sets[key]; ok {
			return c
		}
	}
	c = f.vec.WithLabelValues(key[:]...)
	f.sets[key] = c
	return c
}

// capValue returns the label value of v among values, adding it if there
// is room: "other" past maxAuthzValues. The empty value is not counted.
// Called with authzMetrics.mu held.
func capValue(values map[string]struct{}, v string) string {
	if v == "" {
		return v
	}
	if _, ok := values[v]; ok {
		return v
	}
	if len(values) >= maxAuthzValues {
		return other
	}
	values[v] = struct{}{}
	return v
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
