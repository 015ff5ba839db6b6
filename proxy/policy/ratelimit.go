package policy

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// maxServers bounds the server label of the families serverCounters
// count in, as on the authorization series: later values are counted as
// "other". mesh_proxy_http_rate_limited_total, with its three scopes, has
// at most (100 + 1) × 3 series (docs/metrics.md).
const maxServers = 100

// serverCounters is a counter family whose first label is a Server, with
// at most maxServers of them, and at most one label more.
type serverCounters struct {
	vec    *prometheus.CounterVec
	labels int // 1 or 2

	mu       sync.RWMutex
	counters map[[2]string]prometheus.Counter // by label values; guarded by mu
	servers  map[string]struct{}              // at most maxServers; guarded by mu
}

// newRateLimitMetrics registers mesh_proxy_http_rate_limited_total{server,
// scope} on r: the requests a rate limit held back.
func newRateLimitMetrics(r prometheus.Registerer) (*serverCounters, error) {
	return newServerCounters(r, prometheus.CounterOpts{
		Name: "mesh_proxy_http_rate_limited_total",
		Help: "Inbound HTTP requests a Server's rate limit (HTTPLocalRateLimitPolicy) held back with 429 or RESOURCE_EXHAUSTED, by Server and the limit that held them: total, identity or override.",
	}, "server", "scope")
}

// newNoRouteMetrics registers
// mesh_proxy_inbound_http_route_not_found_total{server} on r: the requests
// no inbound route of their Server matched.
func newNoRouteMetrics(r prometheus.Registerer) (*serverCounters, error) {
	return newServerCounters(r, prometheus.CounterOpts{
		Name: "mesh_proxy_inbound_http_route_not_found_total",
		Help: "Inbound HTTP requests answered 404 (gRPC: UNIMPLEMENTED) because no inbound route (HTTPRoute or GRPCRoute attached to the port's Server) matched them, by Server.",
	}, "server")
}

// newServerCounters registers the family on r, or takes the one already
// there (two Enforcers on one registry, as in tests, count in one
// family).
func newServerCounters(r prometheus.Registerer, opts prometheus.CounterOpts, labels ...string) (*serverCounters, error) {
	vec := prometheus.NewCounterVec(opts, labels)
	if err := r.Register(vec); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("policy: metrics: %w", err)
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, fmt.Errorf("policy: metrics: %w", err)
		}
		vec = existing
	}
	return &serverCounters{vec: vec, labels: len(labels), counters: map[[2]string]prometheus.Counter{}, servers: map[string]struct{}{}}, nil
}

// counter returns the counter of server, and of the second label's value
// (ignored for a family of one label).
func (m *serverCounters) counter(server, second string) prometheus.Counter {
	key := [2]string{server, second}
	m.mu.RLock()
	c, ok := m.counters[key]
	m.mu.RUnlock()
	if ok {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, known := m.servers[server]; !known {
		if len(m.servers) >= maxServers {
			key[0] = "other"
		} else {
			m.servers[server] = struct{}{}
		}
	}
	if c, ok := m.counters[key]; ok {
		return c
	}
	c = m.vec.WithLabelValues(key[:m.labels]...)
	m.counters[key] = c
	return c
}

// logRateLimited logs a request held back by a rate limit, at most one
// line a second: under a flood they would be most of the log, and they
// do not take the place of denials, whose lines are bounded apart.
func (e *Enforcer) logRateLimited(args ...any) {
	ok, suppressed := e.rateLimitLog.allow(time.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed_before", suppressed)
	}
	e.log.Info("inbound request rate limited", args...)
}
