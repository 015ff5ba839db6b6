package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mesh-dev/mesh/proxy/admin"
	"github.com/mesh-dev/mesh/proxy/detect"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/origdst"
)

// Proxy is a running sidecar. Build it with New, then call Serve.
type Proxy struct {
	cfg      Config
	log      *slog.Logger
	metrics  *metrics.Metrics
	sides    []*side
	admin    *http.Server
	adminLn  net.Listener
	ready    atomic.Bool
	shutdown chan struct{} // closed by /shutdown
	once     sync.Once
}

// New binds the proxy's listeners, so that once it returns, connections
// queue in the kernel even before Serve runs; bind errors surface here.
func New(cfg Config, log *slog.Logger) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, log: log, metrics: metrics.New(), shutdown: make(chan struct{})}
	var lc net.ListenConfig
	listen := func(what, addr string) (net.Listener, error) {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s listener: %w", what, err)
		}
		return ln, nil
	}
	var err error
	if p.adminLn, err = listen("admin", cfg.AdminAddr); err != nil {
		return nil, err
	}
	opaque := detect.NewOpaqueCache(4096, 10*time.Minute)
	for _, d := range []struct {
		dir  metrics.Direction
		addr string
	}{{metrics.Inbound, cfg.InboundAddr}, {metrics.Outbound, cfg.OutboundAddr}} {
		var ln net.Listener
		var err error
		if d.dir == metrics.Outbound {
			ln, err = listenOutbound(&lc, d.addr, log)
			if err != nil {
				err = fmt.Errorf("outbound listener: %w", err)
			}
		} else {
			ln, err = listen(string(d.dir), d.addr)
		}
		if err != nil {
			p.closeListeners()
			return nil, err
		}
		p.sides = append(p.sides, newSide(sideConfig{
			dir: d.dir, ln: ln, cfg: &p.cfg, metrics: p.metrics, opaque: opaque,
			log: log.With("direction", string(d.dir)), lookup: origdst.Lookup,
		}))
	}
	p.admin = &http.Server{
		Handler: admin.Handler(admin.Config{
			Metrics:  p.metrics.Handler(),
			Ready:    p.ready.Load,
			Shutdown: func() { p.once.Do(func() { close(p.shutdown) }) },
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	return p, nil
}

// Addrs returns the bound inbound, outbound and admin addresses (useful
// when the config asked for port 0).
func (p *Proxy) Addrs() (inbound, outbound, admin net.Addr) {
	return p.sides[0].ln.Addr(), p.sides[1].ln.Addr(), p.adminLn.Addr()
}

// Serve runs the proxy until ctx is cancelled or /shutdown is called, then
// drains: it stops accepting, lets in-flight requests and connections
// finish within ShutdownGrace, and closes what is left.
func (p *Proxy) Serve(ctx context.Context) error {
	errc := make(chan error, len(p.sides)+1)
	go func() { errc <- serveAdmin(p.admin, p.adminLn) }()
	for _, s := range p.sides {
		go func() { errc <- s.serve() }()
	}
	p.ready.Store(true)
	in, out, adm := p.Addrs()
	p.log.Info("proxy ready", "inbound", in.String(), "outbound", out.String(), "admin", adm.String())

	var err error
	select {
	case <-ctx.Done():
		p.log.Info("shutting down: signal received", "grace", p.cfg.ShutdownGrace)
	case <-p.shutdown:
		p.log.Info("shutting down: /shutdown requested", "grace", p.cfg.ShutdownGrace)
	case err = <-errc:
		p.log.Error("listener failed; shutting down", "err", err)
	}
	p.ready.Store(false)
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ShutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range p.sides {
		wg.Go(func() { s.drain(drainCtx) })
	}
	wg.Wait()
	if drainCtx.Err() != nil {
		p.log.Warn("shutdown grace period ended; closed remaining connections")
	}
	// The admin server goes last so probes and scrapes see the drain.
	p.admin.Close()
	return err
}

func serveAdmin(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin server: %w", err)
	}
	return nil
}

func (p *Proxy) closeListeners() {
	p.adminLn.Close()
	for _, s := range p.sides {
		s.ln.Close()
	}
}

// Run is the whole life of mesh-proxy: build, serve, drain.
func Run(ctx context.Context, cfg Config) error {
	log := NewLogger(cfg)
	p, err := New(cfg, log)
	if err != nil {
		return err
	}
	return p.Serve(ctx)
}

// NewLogger returns the structured logger the config asks for, on stderr.
func NewLogger(cfg Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}
