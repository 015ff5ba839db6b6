// Package injector is the proxy-injector: a mutating admission webhook that
// adds the mesh sidecar to pods as they are created, with the rules of
// install/inject. It answers admission.k8s.io/v1 AdmissionReviews over TLS
// at any path (the manifests use /inject), reads namespaces only from an
// informer cache, and never blocks a pod: bad annotations become warnings
// and events, and its own failures admit the pod unchanged.
package injector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/events"

	"github.com/mesh-dev/mesh/install/inject"
	"github.com/mesh-dev/mesh/internal/httpserver"
	"github.com/mesh-dev/mesh/internal/keypair"
)

// Path is where the manifests register the webhook; every path is served.
const Path = "/inject"

// Config is what the webhook needs. Namespaces and Inject are required; the
// zero value of every other field means what its comment says.
type Config struct {
	// Addr to listen on; "" means ":8443".
	Addr string
	// TLSDir holds tls.crt and tls.key (a kubernetes.io/tls Secret
	// mounted as a directory); they are read again when they change.
	TLSDir string
	// Inject is what every injected pod gets.
	Inject inject.Config
	// Namespaces is a synced cache of the cluster's namespaces.
	Namespaces corelisters.NamespaceLister
	// Events records Warning events about bad annotations; nil records none.
	Events events.EventRecorder
	// Metrics counts admissions; nil counts nothing.
	Metrics *Metrics
	// Log; nil discards.
	Log *slog.Logger
	// Ready is called once with the listening address, when requests are
	// accepted; nil is fine.
	Ready func(net.Addr)
	// ShutdownGrace bounds how long in-flight requests may take after ctx
	// is done; 0 means 10s.
	ShutdownGrace time.Duration
	// IdleTimeout closes a keep-alive connection that has waited this long
	// for its next review; 0 means 2m: longer than the API server's client
	// keeps an idle connection (90s, net/http's default), so that the API
	// server closes first and never sends a review on a connection the
	// webhook is closing.
	IdleTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = ":8443"
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 2 * time.Minute
	}
	return c
}

// Handler returns the webhook's http.Handler, for tests and for serving
// it some other way than Run.
func Handler(cfg Config) http.Handler {
	cfg = cfg.withDefaults()
	return &handler{
		inject:     cfg.Inject,
		namespaces: cfg.Namespaces,
		events:     cfg.Events,
		metrics:    cfg.Metrics,
		log:        cfg.Log,
	}
}

// Run serves the webhook over TLS until ctx is done, then stops accepting
// and lets in-flight requests finish (up to ShutdownGrace). It returns nil
// after a shutdown by ctx; an error if it cannot start (no certificate, the
// address taken) or serving fails.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if cfg.Namespaces == nil {
		return errors.New("injector: no namespace lister")
	}
	if err := cfg.Inject.Validate(); err != nil {
		return fmt.Errorf("injector: %w", err)
	}
	keys := keypair.New(cfg.TLSDir, "webhook certificate", cfg.Log)
	// Fail at start, not at the first handshake, when the Secret is missing.
	if _, err := keys.GetCertificate(nil); err != nil {
		return fmt.Errorf("injector: %w", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("injector: %w", err)
	}
	srv := &http.Server{
		Handler: Handler(cfg),
		TLSConfig: &tls.Config{
			GetCertificate: keys.GetCertificate,
			MinVersion:     tls.VersionTLS12,
		},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn),
	}
	cfg.Log.Info("proxy injector listening", "addr", ln.Addr().String(), "tls_dir", cfg.TLSDir)
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}
	if err := httpserver.Run(ctx, srv, func() error { return srv.ServeTLS(ln, "", "") }, cfg.ShutdownGrace); err != nil {
		return fmt.Errorf("injector: %w", err)
	}
	return nil
}
