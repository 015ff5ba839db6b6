// Package catalog is the demo's product catalog, a gRPC service (the
// mesh.demo.catalog.v1.Catalog of api/demo/catalog/v1) served over h2c.
// Every answer, an error included, carries the response header
// x-served-by (ServedByKey) naming the pod that answered, so the mesh's
// tests of gRPC routing can tell which backend a call reached.
package catalog

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	catalogv1 "github.com/mesh-dev/mesh/api/demo/catalog/v1"
	"github.com/mesh-dev/mesh/testdata/demo/fault"
)

// Config configures the catalog server.
type Config struct {
	// Addr is where Run listens; ":9090" in the pod.
	Addr string
	// Name is who answers, in every answer's x-served-by header: the
	// pod's name in the cluster. "" means the hostname.
	Name string
	// Fault fails RPCs with UNAVAILABLE and delays answers.
	Fault fault.Fault
	// FaultSwitch, if not nil, holds the fault in force, read on every
	// request so the admin server's PUT /fault can change it while Serve
	// runs; nil means Fault, fixed.
	FaultSwitch *fault.Switch
	// ShutdownGrace bounds how long RPCs in flight may take once Serve's
	// context ends; zero means ten seconds.
	ShutdownGrace time.Duration
	// Logger receives request logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration of the catalog pod.
func DefaultConfig() Config {
	return Config{Addr: ":9090", ShutdownGrace: 10 * time.Second}
}

// AddFlags binds c's fields to flags, with c's values as defaults.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "address of the catalog gRPC listener (h2c)")
	c.Fault.AddFlags(fs)
}

// ServedByKey is the response header (gRPC metadata) of every answer that
// names the server that gave it: Config.Name.
const ServedByKey = "x-served-by"

// Products is what the shop sells, ordered by id.
var Products = []*catalogv1.Product{
	{Id: "coffee", Name: "Coffee beans", Description: "1 kg, medium roast", PriceCents: 1899},
	{Id: "kettle", Name: "Kettle", Description: "Gooseneck, 1 l", PriceCents: 4500},
	{Id: "mug", Name: "Mug", Description: "Stoneware, 350 ml", PriceCents: 1250},
	{Id: "sidecar", Name: "Sidecar", Description: "For the motorbike, not the pod", PriceCents: 129900},
}

// Serve answers Catalog RPCs on ln until ctx ends, then stops gracefully
// within ShutdownGrace. It closes ln.
func Serve(ctx context.Context, ln net.Listener, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	faults := cfg.FaultSwitch
	if faults == nil {
		faults = fault.NewSwitch(cfg.Fault)
	}
	name := cfg.Name
	if name == "" {
		host, err := os.Hostname()
		if err != nil {
			ln.Close()
			return fmt.Errorf("catalog: name: %w", err)
		}
		name = host
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(servedBy(name)))
	catalogv1.RegisterCatalogServer(srv, &server{faults: faults, log: log})

	stopped := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(stopped)
		grace := cfg.ShutdownGrace
		if grace <= 0 {
			grace = 10 * time.Second
		}
		t := time.AfterFunc(grace, srv.Stop) // GracefulStop returns once Stop closes everything
		defer t.Stop()
		srv.GracefulStop()
	})
	err := srv.Serve(ln)
	if !stop() {
		// ctx ended and GracefulStop made Serve return: wait for the drain.
		<-stopped
		return nil
	}
	srv.Stop()
	return fmt.Errorf("catalog: %w", err)
}

// servedBy sets the ServedByKey header of every unary call to name before
// the handler runs, so that the answer carries it whatever the handler
// returns: grpc-go sends header metadata set this way with a message, or
// in its own HEADERS frame before an error's trailers. Catalog has only
// unary methods.
func servedBy(name string) grpc.UnaryServerInterceptor {
	md := metadata.Pairs(ServedByKey, name)
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := grpc.SetHeader(ctx, md); err != nil {
			return nil, status.Errorf(codes.Internal, "set %s: %v", ServedByKey, err)
		}
		return handler(ctx, req)
	}
}

// server implements catalogv1.CatalogServer; safe for concurrent use.
type server struct {
	catalogv1.UnimplementedCatalogServer
	faults *fault.Switch
	log    *slog.Logger
}

func (s *server) ListProducts(ctx context.Context, _ *catalogv1.ListProductsRequest) (*catalogv1.ListProductsResponse, error) {
	if err := s.inject(ctx, "ListProducts"); err != nil {
		return nil, err
	}
	resp := &catalogv1.ListProductsResponse{}
	for _, p := range Products {
		resp.Products = append(resp.Products, proto.CloneOf(p))
	}
	return resp, nil
}

func (s *server) GetProduct(ctx context.Context, req *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	if err := s.inject(ctx, "GetProduct"); err != nil {
		return nil, err
	}
	i, ok := slices.BinarySearchFunc(Products, req.GetId(), func(p *catalogv1.Product, id string) int {
		return strings.Compare(p.GetId(), id)
	})
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no product %q", req.GetId())
	}
	return &catalogv1.GetProductResponse{Product: proto.CloneOf(Products[i])}, nil
}

// inject applies the fault knobs, returning the gRPC error to answer with.
func (s *server) inject(ctx context.Context, method string) error {
	s.log.Debug("RPC received", "method", method)
	fail, err := s.faults.Load().Apply(ctx)
	if err != nil {
		return status.FromContextError(err).Err()
	}
	if fail {
		s.log.Info("RPC failed by fault injection", "method", method)
		return status.Error(codes.Unavailable, "injected fault")
	}
	return nil
}
