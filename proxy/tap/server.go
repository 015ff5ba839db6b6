package tap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tapv1 "github.com/mesh-dev/mesh/api/tap/v1"
)

// ServerConfig configures a Server. Every field but Log is required.
type ServerConfig struct {
	Hub *Hub
	// SVID is the proxy's own certificate and Bundle its trust anchors;
	// both are read on every handshake, so rotation applies to the next
	// connection (identity/client.Source satisfies both).
	SVID   x509svid.Source
	Bundle x509bundle.Source
	// ClientID is the only SPIFFE ID allowed to tap: mesh-controller's.
	ClientID spiffeid.ID
	// Log receives watch starts and ends and refused clients; nil
	// discards.
	Log *slog.Logger
}

// Server is the tap gRPC service on a Hub, for the one client ClientID.
type Server struct {
	tapv1.UnimplementedTapServer
	cfg ServerConfig
	// lastRefusal is when a refused handshake was last logged (unix
	// nanoseconds), so a client retrying in a loop cannot flood the log.
	lastRefusal atomic.Int64
}

// NewServer checks cfg and returns the server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Hub == nil || cfg.SVID == nil || cfg.Bundle == nil {
		return nil, errors.New("tap: server needs a hub, an SVID source and a bundle source")
	}
	if cfg.ClientID.IsZero() {
		return nil, errors.New("tap: server needs the client ID it admits")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg}, nil
}

// TLSConfig returns the server side of the tap connection: TLS 1.3, the
// proxy's current SVID, a client certificate required, verified against
// the trust bundle and admitted only as ClientID. Anyone else fails the
// handshake.
func (s *Server) TLSConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// A resumed session would skip the certificate callbacks, and so
		// a check against the current bundle (identity/meshtls does the
		// same).
		SessionTicketsDisabled: true,
	}
	tlsconfig.HookMTLSServerConfig(cfg, s.cfg.SVID, s.cfg.Bundle, s.authorize)
	return cfg
}

// authorize is tlsconfig.AuthorizeID(ClientID), logging refusals at most
// every 10 seconds: a wrong --tap-client-id shows in the proxy's log.
func (s *Server) authorize(id spiffeid.ID, chains [][]*x509.Certificate) error {
	err := tlsconfig.AuthorizeID(s.cfg.ClientID)(id, chains)
	if err != nil {
		now, last := time.Now().UnixNano(), s.lastRefusal.Load()
		if now-last > int64(10*time.Second) && s.lastRefusal.CompareAndSwap(last, now) {
			s.cfg.Log.Warn("tap: refused a client", "client_id", id.String(), "allowed", s.cfg.ClientID.String())
		}
	}
	return err
}

// Serve serves the tap service over TLSConfig on ln until ctx ends; then
// it closes ln and ends every watch, since watches never end by
// themselves. It returns nil after a shutdown by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.TLSConfig())),
		grpc.ConnectionTimeout(10*time.Second),
		grpc.MaxConcurrentStreams(MaxWatchers),
		// Pings find a controller that vanished without closing, so its
		// watch stops costing the request path.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	tapv1.RegisterTapServer(gs, s)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("tap: serve: %w", err)
	case <-ctx.Done():
	}
	gs.Stop()
	<-errc
	return nil
}

// Watch streams the Hub's events that match req until the client goes
// away. The TLS handshake admitted only ClientID already; the check here
// holds if the service is ever registered on a server with other
// credentials.
func (s *Server) Watch(req *tapv1.WatchRequest, stream grpc.ServerStreamingServer[tapv1.Event]) error {
	ctx := stream.Context()
	client, err := s.peerID(ctx)
	if err != nil {
		return err
	}
	if rps := req.GetMaxRps(); rps > MaxRPS {
		return status.Errorf(codes.InvalidArgument, "tap: max_rps %d: at most %d", rps, MaxRPS)
	}
	w, err := s.cfg.Hub.Watch(Filter{
		Method:     req.GetMethod(),
		Authority:  req.GetAuthority(),
		PathPrefix: req.GetPathPrefix(),
		MaxRPS:     int(req.GetMaxRps()),
	})
	switch {
	case errors.Is(err, ErrBadFilter):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrTooManyWatchers):
		return status.Error(codes.ResourceExhausted, err.Error())
	case err != nil:
		return status.Error(codes.Internal, err.Error())
	}
	defer w.Close()
	log := s.cfg.Log.With("client_id", client.String(), "method", req.GetMethod(),
		"authority", req.GetAuthority(), "path_prefix", req.GetPathPrefix(), "max_rps", req.GetMaxRps())
	log.Info("tap: watch started")
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			log.Info("tap: watch ended", "dropped", w.Dropped())
			return status.FromContextError(err).Err()
		}
		if err := stream.Send(toProto(ev)); err != nil {
			log.Info("tap: watch ended", "dropped", w.Dropped(), "err", err)
			return err
		}
	}
}

// peerID returns the client's verified SPIFFE ID, or PermissionDenied
// when it is not ClientID.
func (s *Server) peerID(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, status.Error(codes.PermissionDenied, "tap: no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return spiffeid.ID{}, status.Error(codes.PermissionDenied, "tap: mutual TLS required")
	}
	if len(info.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, status.Error(codes.PermissionDenied, "tap: no client certificate")
	}
	id, err := x509svid.IDFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, status.Errorf(codes.PermissionDenied, "tap: client certificate: %v", err)
	}
	if id != s.cfg.ClientID {
		return spiffeid.ID{}, status.Errorf(codes.PermissionDenied, "tap: client %q may not tap", id)
	}
	return id, nil
}

// toProto converts an Event to its API form.
func toProto(ev *Event) *tapv1.Event {
	r := ev.Request
	out := &tapv1.Event{
		Id:          ev.ID,
		Type:        tapv1.Event_REQUEST,
		Timestamp:   timestamppb.New(ev.Time),
		Direction:   r.Direction,
		SrcAddr:     r.Src,
		DstAddr:     r.Dst,
		DstWorkload: r.DstWorkload,
		ClientId:    r.ClientID,
		ServerId:    r.ServerID,
		Method:      r.Method,
		Scheme:      r.Scheme,
		Authority:   r.Authority,
		Path:        r.Path,
		TraceId:     r.TraceID,
	}
	if resp := ev.Response; resp != nil {
		out.Type = tapv1.Event_RESPONSE
		out.HttpStatus = uint32(max(resp.Status, 0))
		if resp.GRPCStatus >= 0 {
			g := uint32(resp.GRPCStatus)
			out.GrpcStatus = &g
		}
		out.Latency = durationpb.New(resp.Latency)
		out.Success = resp.Success
	}
	return out
}
