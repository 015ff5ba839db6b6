// Package admin serves the controller's admin endpoints: Prometheus
// metrics, and the readiness and liveness probes of its pod.
package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mesh-dev/mesh/internal/httpserver"
)

// Config is what the admin server serves. Gatherer and Ready are
// required; the zero value of every other field means what its comment says.
type Config struct {
	// Addr to listen on; "" means ":9990".
	Addr string
	// Gatherer is served at /metrics.
	Gatherer prometheus.Gatherer
	// Ready returns nil when the controller should get traffic, else what
	// it waits for; /ready shows it. It is called on every probe and must
	// not block.
	Ready func() error
	// Log; nil discards.
	Log *slog.Logger
	// OnListen is called once with the listening address; nil is fine.
	OnListen func(net.Addr)
	// ShutdownGrace bounds how long in-flight requests may take after ctx
	// is done; 0 means 5s.
	ShutdownGrace time.Duration
	// IdleTimeout closes a keep-alive connection that has waited this long
	// for its next request; 0 means 30s, which keeps a scraper's
	// connection across its interval and frees the ones nobody uses.
	IdleTimeout time.Duration
}

// Handler returns the admin mux:
//
//	GET /metrics  Prometheus text format
//	GET /ready    200 "ready", or 503 with what the controller waits for
//	GET /live     200 "live" while the process serves
func Handler(cfg Config) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := cfg.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "live\n")
	})
	return mux
}

// Run serves the admin endpoints until ctx is done, then shuts down
// gracefully. It returns nil after a shutdown by ctx.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Gatherer == nil || cfg.Ready == nil {
		return errors.New("admin: Gatherer and Ready are required")
	}
	if cfg.Addr == "" {
		cfg.Addr = ":9990"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 5 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	// Any pod can reach the port: slow, silent or idle clients are cut off
	// rather than left holding connections and buffers.
	srv := &http.Server{
		Handler:           Handler(cfg),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn),
	}
	cfg.Log.Info("admin server listening", "addr", ln.Addr().String())
	if cfg.OnListen != nil {
		cfg.OnListen(ln.Addr())
	}
	if err := httpserver.Run(ctx, srv, func() error { return srv.Serve(ln) }, cfg.ShutdownGrace); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}
