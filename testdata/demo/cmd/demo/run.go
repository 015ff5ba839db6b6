package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/mesh-dev/mesh/internal/version"
	"github.com/mesh-dev/mesh/testdata/demo/admin"
)

// runComponent listens on the component's address and the admin address,
// then serves both until ctx ends.
func runComponent(ctx context.Context, o *options, c component) error {
	var ln, adminLn net.Listener
	var err error
	if c.addr != "" {
		if ln, err = net.Listen("tcp", c.addr); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	if o.AdminAddr != "" {
		if adminLn, err = net.Listen("tcp", o.AdminAddr); err != nil {
			if ln != nil {
				ln.Close()
			}
			return fmt.Errorf("%s: admin: %w", c.name, err)
		}
	}
	return serveComponent(ctx, o, c, ln, adminLn)
}

// serveComponent runs c on ln and its admin server (probes and c.faults'
// /fault) on adminLn, if not nil. /ready says 200 from the start, since
// the listener is bound and the backends are dialed lazily, and 503 from
// the moment ctx ends, so Kubernetes stops sending traffic while c drains;
// the probes stay up until c is done.
func serveComponent(ctx context.Context, o *options, c component, ln, adminLn net.Listener) error {
	log := o.logger(c.name)
	var ready atomic.Bool
	ready.Store(true)
	stopReady := context.AfterFunc(ctx, func() { ready.Store(false) })
	defer stopReady()

	adminErr := make(chan error, 1)
	adminCtx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAdmin()
	if adminLn != nil {
		go func() { adminErr <- admin.Serve(adminCtx, adminLn, ready.Load, c.faults) }()
	} else {
		adminErr <- nil
	}
	attrs := []any{"version", version.Version}
	if ln != nil {
		attrs = append(attrs, "addr", ln.Addr().String())
	}
	if adminLn != nil {
		attrs = append(attrs, "admin", adminLn.Addr().String())
	}
	log.Info("starting", attrs...)

	err := c.serve(ctx, ln)
	stopAdmin()
	err = errors.Join(err, <-adminErr)
	if err != nil {
		log.Error("stopped", "err", err)
		return err
	}
	log.Info("stopped")
	return nil
}
