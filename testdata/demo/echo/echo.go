// Package echo is the plainest backend of the demo, for the tests of the
// mesh's load balancing: it answers every request, whatever the method and
// path, with 200 and a body naming who answered,
//
//	echo from echo-5d8c7b9f4-x2x7q
//
// over HTTP/1.1 and HTTP/2 cleartext with prior knowledge (h2c) on the same
// port. It reads a request's body to its end before it answers, as an
// application that parses its input does, so an upload is delivered whole
// before any answer, a failure included. A request failed by the fault gets
// the fault's Status (--fail-status) and "injected fault from NAME". The
// fault is read from a switch on every request, so the admin server's PUT
// /fault can change it while it runs.
//
// With ExitOnTerm (--exit-on-term) it stops at once when its context ends
// (SIGTERM): no drain, the listener and every connection closed, requests
// in flight cut, as an application that exits on SIGTERM does. The mesh's
// tests of scaling down under load use it: such a pod's proxy may still get
// requests after its application is gone.
package echo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/mesh-dev/mesh/testdata/demo/fault"
	"github.com/mesh-dev/mesh/testdata/demo/graceful"
)

// Config configures the echo server.
type Config struct {
	// Addr is where the echo command listens; ":8080" in the pod.
	Addr string
	// Name is who answers, in every body: the pod's name in the cluster.
	// "" means the hostname.
	Name string
	// Fault fails requests with its Status and delays answers.
	Fault fault.Fault
	// FaultSwitch, if not nil, holds the fault in force, read on every
	// request so the admin server's PUT /fault can change it while Serve
	// runs; nil means Fault, fixed.
	FaultSwitch *fault.Switch
	// ShutdownGrace bounds how long requests in flight may take once
	// Serve's context ends; zero means graceful.DefaultGrace.
	ShutdownGrace time.Duration
	// ExitOnTerm stops Serve at once when its context ends: no grace,
	// every connection closed, requests in flight cut. False drains
	// gracefully within ShutdownGrace.
	ExitOnTerm bool
	// Logger receives request logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration of an echo pod.
func DefaultConfig() Config {
	return Config{Addr: ":8080", Fault: fault.Fault{FailStatus: http.StatusInternalServerError},
		ShutdownGrace: graceful.DefaultGrace}
}

// AddFlags binds c's fields to flags, with c's values as defaults. Name
// has no flag: the command sets it from the environment.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "address of the echo listener (HTTP/1.1 and h2c with prior knowledge)")
	c.Fault.AddFlags(fs)
	fs.IntVar(&c.Fault.FailStatus, "fail-status", c.Fault.FailStatus, "HTTP status (400-599) of a request failed by --fail-rate")
	fs.BoolVar(&c.ExitOnTerm, "exit-on-term", c.ExitOnTerm, "on SIGTERM stop at once, cutting requests in flight, instead of draining within --shutdown-grace")
}

// Serve answers every request on ln, HTTP/1.1 or h2c, until ctx ends, then
// shuts down gracefully. It closes ln.
func Serve(ctx context.Context, ln net.Listener, cfg Config) error {
	h := &handler{name: cfg.Name, log: cfg.Logger, faults: cfg.FaultSwitch}
	if h.name == "" {
		host, err := os.Hostname()
		if err != nil {
			ln.Close()
			return fmt.Errorf("echo: name: %w", err)
		}
		h.name = host
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.faults == nil {
		h.faults = fault.NewSwitch(cfg.Fault)
	}
	srv := &http.Server{
		Handler:           h,
		Protocols:         new(http.Protocols),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
	// Both on one port: net/http tells an h2c connection by its preface.
	// There is no h2c upgrade from HTTP/1.1, only prior knowledge.
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	if cfg.ExitOnTerm {
		return serveUntilTerm(ctx, ln, srv)
	}
	return graceful.ServeHTTP(ctx, ln, srv, cfg.ShutdownGrace)
}

// serveUntilTerm serves srv on ln until ctx ends, then closes it at once:
// the listener and every connection, idle or not. It returns nil after
// that close, or the error that made srv stop on its own. It closes ln.
func serveUntilTerm(ctx context.Context, ln net.Listener, srv *http.Server) error {
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.Serve(ln)
	srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve %s: %w", ln.Addr(), err)
}

// handler answers every request; safe for concurrent use.
type handler struct {
	name   string
	log    *slog.Logger
	faults *fault.Switch
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.log.Debug("request received", "method", r.Method, "path", r.URL.Path, "proto", r.Proto)
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		// A broken body (bad chunking, cut short); if the client is gone
		// this answer goes nowhere, which is fine.
		http.Error(w, "echo: read the request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	f := h.faults.Load()
	fail, err := f.Apply(r.Context())
	if err != nil {
		return // the client is gone
	}
	if fail {
		h.log.Info("request failed by fault injection", "path", r.URL.Path, "status", f.Status())
		http.Error(w, "injected fault from "+h.name, f.Status())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "echo from %s\n", h.name)
}
