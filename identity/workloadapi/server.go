// Package workloadapi serves the SPIFFE Workload API
// (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Workload_API.md)
// on a Unix socket inside the pod, so an application that speaks SPIFFE
// itself (go-spiffe, java-spiffe, Envoy SDS through spiffe-helper...) gets
// an X509-SVID of the pod's identity and the trust bundle, kept fresh.
// The Source it serves must hold a key of the application's own, never the
// proxy's: every process that can open the socket receives the private key.
//
// The pod is the unit of identity: every process that can open the socket
// is the pod's ServiceAccount, so there is no per-process attestation. The
// injector shares the socket's directory with the application containers
// and points SPIFFE_ENDPOINT_SOCKET at it.
//
// Served: FetchX509SVID and FetchX509Bundles. Out of scope: JWT-SVIDs
// (FetchJWTSVID, FetchJWTBundles, ValidateJWTSVID) and WIT-SVIDs, which
// mesh-controller does not issue; gRPC answers them UNIMPLEMENTED, which
// go-spiffe and SPIRE clients take to mean the server lacks the feature.
package workloadapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mesh-dev/mesh/internal/names"
)

const (
	// EndpointSocketEnv is the variable that tells SPIFFE libraries where
	// the Workload API is; its value is Addr(path).
	EndpointSocketEnv = "SPIFFE_ENDPOINT_SOCKET"
	// DefaultSocketPath is where the proxy serves the Workload API, in a
	// directory the injector shares with the application's containers.
	DefaultSocketPath = names.SPIFFESocketDir + "/" + names.SPIFFESocketFile
	// securityHeader must be "true" on every call (SPIFFE Workload
	// Endpoint spec), so that a request relayed by an SSRF-prone service,
	// which would not add it, is refused.
	securityHeader = "workload.spiffe.io"
)

// Addr returns the SPIFFE_ENDPOINT_SOCKET value for a socket path.
func Addr(path string) string { return "unix://" + path }

// Source is the identity the server hands out: in the proxy, a
// client.Source of its own key pair, distinct from the proxy's.
type Source interface {
	// Current returns the SVID and bundle held now (nil before the first
	// of each) and a channel closed when either is next replaced.
	Current() (*x509svid.SVID, *x509bundle.Bundle, <-chan struct{})
}

// Config configures Run.
type Config struct {
	// SocketPath is the Unix socket to serve on; "" means
	// DefaultSocketPath.
	SocketPath string
	// Source provides the SVID and bundle; required.
	Source Source
	// Log receives serving errors; nil discards them.
	Log *slog.Logger
}

// Run serves the Workload API on cfg.SocketPath until ctx is done, then
// removes the socket. It returns nil after a shutdown by ctx.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Source == nil {
		return errors.New("workloadapi: no source")
	}
	if cfg.SocketPath == "" {
		cfg.SocketPath = DefaultSocketPath
	}
	lis, err := Listen(cfg.SocketPath)
	if err != nil {
		return err
	}
	return NewServer(cfg.Source, cfg.Log).Serve(ctx, lis)
}

// Listen creates the Unix socket at path, replacing a socket left by a
// previous proxy in the same pod (a container restart keeps the emptyDir),
// and opens it to every user: the application runs under its own UID, and
// the directory's mount is what confines the socket to the pod. A
// non-socket file at path is an error, never removed.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("workloadapi: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("workloadapi: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("workloadapi: remove stale socket: %w", err)
		}
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("workloadapi: %w", err)
	}
	// The umask applied at creation; set the mode explicitly.
	if err := os.Chmod(path, 0o777); err != nil {
		lis.Close()
		return nil, fmt.Errorf("workloadapi: %w", err)
	}
	return lis, nil
}

// Server is the Workload API over a Source.
type Server struct {
	svc service
}

// NewServer returns a Server handing out src; a nil log discards errors.
func NewServer(src Source, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{svc: service{src: src, log: log}}
}

// Serve serves the Workload API on lis until ctx is done; then it closes
// lis and ends every stream, since Workload API streams never end by
// themselves. It returns nil after a shutdown by ctx.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	gs := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := checkHeader(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := checkHeader(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	workload.RegisterSpiffeWorkloadAPIServer(gs, &s.svc)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("workloadapi: serve: %w", err)
	case <-ctx.Done():
	}
	gs.Stop()
	<-errc
	return nil
}

// checkHeader refuses a call without the security header with
// INVALID_ARGUMENT, as the Workload Endpoint spec asks.
func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(securityHeader); len(v) != 1 || v[0] != "true" {
		return status.Errorf(codes.InvalidArgument, "security header %q is missing", securityHeader)
	}
	return nil
}

// service implements the Workload API methods; it is unexported so the
// UNIMPLEMENTED JWT methods it embeds are not part of Server's API.
type service struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	src Source
	log *slog.Logger
}

// FetchX509SVID sends the SVID with its bundle as soon as there is one,
// and again after every rotation or bundle change, until the client
// leaves.
func (s *service) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	for {
		svid, bundle, changed := s.src.Current()
		if svid != nil && bundle != nil {
			resp, err := x509SVIDResponse(svid, bundle)
			if err != nil {
				s.log.Error("workload API: cannot encode the SVID", "err", err)
				return status.Error(codes.Internal, err.Error())
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// FetchX509Bundles sends the trust bundle as soon as there is one, and
// again whenever it changes (not on certificate rotations, which leave it
// as it was), until the client leaves.
func (s *service) FetchX509Bundles(_ *workload.X509BundlesRequest, stream workload.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	var sent *x509bundle.Bundle
	for {
		_, bundle, changed := s.src.Current()
		if bundle != nil && (sent == nil || !sent.Equal(bundle)) {
			resp := &workload.X509BundlesResponse{
				Bundles: map[string][]byte{bundle.TrustDomain().Name(): concatDER(bundle)},
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
			sent = bundle
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// x509SVIDResponse encodes svid as the Workload API sends it: the chain as
// concatenated DER, leaf first, the key as PKCS #8 DER, and the bundle of
// its trust domain as concatenated DER.
func x509SVIDResponse(svid *x509svid.SVID, bundle *x509bundle.Bundle) (*workload.X509SVIDResponse, error) {
	chain, key, err := svid.MarshalRaw()
	if err != nil {
		return nil, err
	}
	return &workload.X509SVIDResponse{
		Svids: []*workload.X509SVID{{
			SpiffeId:    svid.ID.String(),
			X509Svid:    chain,
			X509SvidKey: key,
			Bundle:      concatDER(bundle),
		}},
	}, nil
}

// concatDER returns the bundle's authorities as concatenated DER.
func concatDER(b *x509bundle.Bundle) []byte {
	var out []byte
	for _, c := range b.X509Authorities() {
		out = append(out, c.Raw...)
	}
	return out
}
