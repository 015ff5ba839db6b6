// Package admin serves the proxy's admin endpoints: Prometheus metrics,
// readiness and liveness probes, and a loopback-only shutdown trigger.
package admin

import (
	"net"
	"net/http"
	"net/netip"
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
}

// Handler returns the admin mux:
//
//	GET  /metrics   Prometheus text format
//	GET  /ready     200 "ready" once the proxy serves traffic, else 503
//	                "not ready: <why>"
//	GET  /live      200 "live" while the process runs
//	GET  /destinations  JSON: the endpoints of each destination and their
//	                balancing state (with a controller only)
//	GET  /identity  JSON: the proxy's SPIFFE ID and certificate (with an
//	                identity service only)
//	POST /shutdown  graceful shutdown; only from loopback, since any pod on
//	                the network can reach the admin port
func Handler(cfg Config) http.Handler {
	mux := http.NewServeMux()
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
	if cfg.Destinations != nil {
		mux.Handle("GET /destinations", cfg.Destinations)
	}
	if cfg.Identity != nil {
		mux.Handle("GET /identity", cfg.Identity)
	}
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, r *http.Request) {
		if !fromLoopback(r) {
			http.Error(w, "shutdown is only allowed from loopback", http.StatusForbidden)
			return
		}
		cfg.Shutdown()
		w.Write([]byte("shutting down\n"))
	})
	return mux
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Unmap().IsLoopback()
}
