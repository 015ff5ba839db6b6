// Package admin serves the proxy's admin endpoints: Prometheus metrics and
// the readiness and liveness probes for anyone who can reach the pod, and
// the endpoints that show or change the proxy's state only from inside the
// pod.
package admin

import (
	"net"
	"net/http"
	"net/netip"
	"time"
)

// Config says what the admin endpoints report and do.
type Config struct {
	// Metrics serves /metrics.
	Metrics http.Handler
	// Ready returns nil when the proxy should receive traffic (/ready), or
	// why it should not, which /ready's 503 says.
	Ready func() error
	// Shutdown starts a graceful shutdown of the proxy (POST /shutdown).
	// It must not block.
	Shutdown func()
	// Destinations serves /destinations, the endpoints the proxy balances
	// over; nil when it runs without a controller.
	Destinations http.Handler
	// Identity serves /identity, the proxy's certificate; nil without one.
	Identity http.Handler
	// IdleTimeout closes a keep-alive connection that has waited this long
	// for its next request (NewServer). Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// The limits of NewServer's server. The admin port is reachable by every
// pod of the cluster, so a client that sends slowly, never reads, or keeps
// connections open without using them must not hold the proxy's memory;
// kubelet's probes and scrapers need only a few seconds.
const (
	// DefaultIdleTimeout leaves a scraper's keep-alive connection open
	// across a usual 10-15 s scrape interval, and not much longer.
	DefaultIdleTimeout = 30 * time.Second
	// readHeaderTimeout bounds a request head (slow-loris).
	readHeaderTimeout = 5 * time.Second
	// readTimeout bounds a whole request: none of ours has a body.
	readTimeout = 10 * time.Second
	// writeTimeout bounds the answer: /metrics of a proxy at its series
	// bound is a few MB, which a live scraper reads in well under this.
	writeTimeout = 30 * time.Second
	// maxHeaderBytes is ample for probes and scrapers (net/http allows
	// 4 KiB beyond it); the default of 1 MiB per connection is not.
	maxHeaderBytes = 8 << 10
)

// NewServer returns the admin server: Handler(cfg) with timeouts and
// limits on every connection. Serve it on the admin listener.
func NewServer(cfg Config) *http.Server {
	idle := cfg.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	return &http.Server{
		Handler:           Handler(cfg),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idle,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// Handler returns the admin mux. To any client:
//
//	GET  /metrics   Prometheus text format
//	GET  /ready     200 "ready" once the proxy serves traffic, else 503
//	                "not ready: <why>"
//	GET  /live      200 "live" while the process runs
//
// Only on a connection to a loopback address, which comes from inside the
// pod (its containers, or `kubectl port-forward`, which dials the pod's
// loopback):
//
//	GET  /destinations  JSON: the endpoints of each destination and their
//	                balancing state (with a controller only)
//	GET  /identity  JSON: the proxy's SPIFFE ID and certificate (with an
//	                identity service only)
//	POST /shutdown  graceful shutdown
//
// Any other client gets 404 for those, as for a path that does not exist:
// the admin port listens on every address, so that kubelet reaches the
// probes, and every pod of the cluster can reach it too.
func Handler(cfg Config) http.Handler {
	public, local := http.NewServeMux(), http.NewServeMux()
	for _, mux := range []*http.ServeMux{public, local} {
		mux.Handle("GET /metrics", cfg.Metrics)
		mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
			if err := cfg.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte("ready\n"))
		})
		mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte("live\n"))
		})
	}
	if cfg.Destinations != nil {
		local.Handle("GET /destinations", cfg.Destinations)
	}
	if cfg.Identity != nil {
		local.Handle("GET /identity", cfg.Identity)
	}
	local.HandleFunc("POST /shutdown", func(w http.ResponseWriter, _ *http.Request) {
		cfg.Shutdown()
		w.Write([]byte("shutting down\n"))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrivedOnLoopback(r) {
			local.ServeHTTP(w, r)
			return
		}
		public.ServeHTTP(w, r)
	})
}

// arrivedOnLoopback reports whether r came on a connection to a loopback
// address. The kernel delivers packets for 127.0.0.0/8 and ::1 only inside
// the network namespace that sent them, so such a connection comes from
// the pod itself: its containers, or kubelet's port-forward, which enters
// the pod's namespace to dial. A request without a local address (not
// from a server) counts as from the network.
func arrivedOnLoopback(r *http.Request) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	tcp, ok := local.(*net.TCPAddr)
	if !ok {
		return false
	}
	addr, ok := netip.AddrFromSlice(tcp.IP)
	return ok && addr.Unmap().IsLoopback()
}
