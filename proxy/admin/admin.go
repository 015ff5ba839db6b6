// Package admin serves the proxy's admin endpoints: Prometheus metrics and
// the readiness and liveness probes for anyone who can reach the pod, and
// the endpoints that show or change the proxy's state only from inside the
// pod.
package admin

import (
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
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
	// Policy serves /policy, the inbound policy the proxy enforces; nil
	// when it enforces none (no controller or no pod name).
	Policy http.Handler
	// Profiling serves the Go runtime's profiles under /debug/pprof/ to
	// loopback clients (net/http/pprof), for finding where a proxy's CPU
	// and memory go on a real node. Off (false) by default: a profile
	// costs the proxy CPU while it runs and shows its internals.
	Profiling bool
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
//	GET  /policy    JSON: the inbound policy in force (when the proxy
//	                enforces one)
//	POST /shutdown  graceful shutdown
//	GET  /debug/pprof/...  the runtime's profiles (net/http/pprof), with
//	                Profiling only; a CPU profile or trace lasts at most
//	                maxProfileSeconds
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
	// The policy names the pod's servers, and who may reach them: what an
	// attacker in another pod would like to read first.
	if cfg.Policy != nil {
		local.Handle("GET /policy", cfg.Policy)
	}
	local.HandleFunc("POST /shutdown", func(w http.ResponseWriter, _ *http.Request) {
		cfg.Shutdown()
		w.Write([]byte("shutting down\n"))
	})
	if cfg.Profiling {
		addProfiles(local)
	}
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

// maxProfileSeconds bounds a CPU profile or an execution trace: pprof
// refuses one that would outlast the server's writeTimeout, which net/http
// would cut off half written.
const maxProfileSeconds = int(writeTimeout/time.Second) - 5

// addProfiles serves net/http/pprof's handlers on mux. They are added one
// by one rather than by importing the package for its side effect, which
// registers them on http.DefaultServeMux, where any server of the process
// that used it would show them.
func addProfiles(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index) // and each named profile
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	for path, h := range map[string]http.HandlerFunc{
		"GET /debug/pprof/profile": pprof.Profile,
		"GET /debug/pprof/trace":   pprof.Trace,
	} {
		mux.HandleFunc(path, boundSeconds(h))
	}
}

// boundSeconds gives h a "seconds" parameter within maxProfileSeconds: a
// request without one gets the most, not pprof's default of 30.
func boundSeconds(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, err := strconv.Atoi(q.Get("seconds"))
		if err != nil || n <= 0 || n > maxProfileSeconds {
			q.Set("seconds", strconv.Itoa(maxProfileSeconds))
			r.URL.RawQuery = q.Encode()
		}
		h(w, r)
	}
}
