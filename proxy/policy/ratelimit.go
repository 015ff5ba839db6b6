package policy

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mesh-dev/mesh/proxy/authz"
)

// maxRateLimitServers bounds the server label of
// mesh_proxy_http_rate_limited_total, as on the authorization series:
// later values are counted as "other". With its three scopes the family
// has at most (100 + 1) × 3 series (docs/metrics.md).
const maxRateLimitServers = 100

// rateLimitMetrics counts the requests a rate limit held back.
type rateLimitMetrics struct {
	vec *prometheus.CounterVec

	mu       sync.RWMutex
	counters map[[2]string]prometheus.Counter // by server and scope; guarded by mu
	servers  map[string]struct{}              // at most maxRateLimitServers; guarded by mu
}

// newRateLimitMetrics registers mesh_proxy_http_rate_limited_total on r,
// or takes the one already there (two Enforcers on one registry, as in
// tests, count in one family).
func newRateLimitMetrics(r prometheus.Registerer) (*rateLimitMetrics, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_http_rate_limited_total",
		Help: "Inbound HTTP requests a Server's rate limit (HTTPLocalRateLimitPolicy) held back with 429 or RESOURCE_EXHAUSTED, by Server and the limit that held them: total, identity or override.",
	}, []string{"server", "scope"})
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
	return &rateLimitMetrics{vec: vec, counters: map[[2]string]prometheus.Counter{}, servers: map[string]struct{}{}}, nil
}

// counter returns the counter of requests of server that scope held back.
func (m *rateLimitMetrics) counter(server string, scope authz.Scope) prometheus.Counter {
	key := [2]string{server, string(scope)}
	m.mu.RLock()
	c, ok := m.counters[key]
	m.mu.RUnlock()
	if ok {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, known := m.servers[server]; !known {
		if len(m.servers) >= maxRateLimitServers {
			key[0] = "other"
		} else {
			m.servers[server] = struct{}{}
		}
	}
	if c, ok := m.counters[key]; ok {
		return c
	}
	c = m.vec.WithLabelValues(key[:]...)
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
