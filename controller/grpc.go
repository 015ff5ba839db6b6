package controller

import (
	"context"
	"fmt"
	"net"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/mesh-dev/mesh/controller/destination"
	"github.com/mesh-dev/mesh/controller/policy"
	"github.com/mesh-dev/mesh/identity/certify"
)

// serveIdentity serves the identity service over TLS with the
// controller's own SVID until ctx ends.
func serveIdentity(ctx context.Context, cfg Config, ids *certify.Server) error {
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ids.TLSConfig(controllerID(cfg, ids)))))
	ids.Register(srv)
	// ids.Run ends the trust-bundle streams when ctx ends, so GracefulStop
	// returns.
	return serve(ctx, cfg, "identity", cfg.IdentityAddr, srv)
}

// serveGRPC serves the proxies' API, destination and inbound policy, once
// the destination caches are filled, until ctx ends: over mesh TLS on
// GRPCAddr, where the controller presents its own SVID and a client must
// present a certificate of the trust domain (plain-text and
// unauthenticated clients are refused at the handshake, and a proxy
// learns only what its own identity may), and in plain text on the
// loopback GRPCLocalAddr, unless it is empty, for `mesh authz` through a
// port-forward. The policy service answers UNAVAILABLE until its own
// caches are filled (pol.Run), so that destination does not wait on the
// policy CRDs.
func serveGRPC(ctx context.Context, cfg Config, ids *certify.Server, dst *destination.Server, pol *policy.Server) error {
	if err := dst.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // shut down before the caches filled
		}
		return err
	}
	mesh := newGRPCServer(grpc.Creds(credentials.NewTLS(ids.MTLSServerConfig(controllerID(cfg, ids)))))
	dst.Register(mesh)
	pol.Register(mesh)
	if cfg.GRPCLocalAddr == "" {
		return serve(ctx, cfg, "grpc", cfg.GRPCAddr, mesh)
	}
	local := newGRPCServer()
	dst.RegisterLocal(local)
	pol.RegisterLocal(local)
	// Either failing stops both.
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve(ctx, cfg, "grpc", cfg.GRPCAddr, mesh) })
	g.Go(func() error { return serve(ctx, cfg, "grpc-local", cfg.GRPCLocalAddr, local) })
	return g.Wait()
}

// newGRPCServer returns a server of the proxies' API with opts. Every
// proxy holds a connection open for good: grpc-go's default 32 KiB read
// and write buffers per connection would be most of the controller's
// memory at a thousand proxies, for streams that carry a few small
// updates. Writes share one pool instead (grpc-go's default since
// SharedWriteBuffer was deprecated). Start and pol.Run end every open
// stream when their ctx ends, so GracefulStop returns.
func newGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append([]grpc.ServerOption{grpc.ReadBufferSize(4 << 10), grpc.WriteBufferSize(4 << 10)}, opts...)...)
}

// serve runs srv on addr until ctx ends, then stops it gracefully: its
// services must end their streams when ctx does.
func serve(ctx context.Context, cfg Config, component, addr string, srv *grpc.Server) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("controller: %s listener: %w", component, err)
	}
	cfg.listening(component, ln.Addr())
	stop := context.AfterFunc(ctx, srv.GracefulStop)
	defer stop()
	if err := srv.Serve(ln); err != nil {
		return fmt.Errorf("controller: %s server: %w", component, err)
	}
	return nil
}
