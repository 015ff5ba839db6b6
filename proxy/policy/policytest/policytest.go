// Package policytest is a real InboundPolicy gRPC server whose answers a
// test sets: a stand-in for mesh-controller's policy service, whose own
// tests cover how policies are computed from Kubernetes objects.
package policytest

import (
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
)

// Server streams the policy last Set to every Watch, and each new one as
// it is set. Before the first Set a Watch stays open without a message,
// as the controller's does for a pod it does not know yet.
type Server struct {
	inboundv1.UnimplementedInboundPolicyServer

	mu      sync.Mutex
	cur     *inboundv1.PodPolicy      // guarded by mu
	version int                       // guarded by mu; counts Set calls
	changed chan struct{}             // guarded by mu; closed and replaced by Set
	watches []*inboundv1.WatchRequest // guarded by mu
	open    int                       // guarded by mu: streams in progress
}

// New returns a server with no policy; Register it on a gRPC server, or
// use Start.
func New() *Server { return &Server{changed: make(chan struct{})} }

// Register adds s to srv, beside other services (the destination fake).
func (s *Server) Register(srv grpc.ServiceRegistrar) { inboundv1.RegisterInboundPolicyServer(srv, s) }

// Start serves a new Server alone on loopback until the test ends, and
// returns it with its address and the gRPC server (Stop it to play a
// controller that went away).
func Start(tb testing.TB) (*Server, string, *grpc.Server) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := New()
	srv := grpc.NewServer()
	s.Register(srv)
	go srv.Serve(ln)
	tb.Cleanup(srv.Stop)
	return s, ln.Addr().String(), srv
}

// Set makes p the policy every stream sends next (a copy: the caller may
// change p afterwards).
func (s *Server) Set(p *inboundv1.PodPolicy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = proto.Clone(p).(*inboundv1.PodPolicy)
	s.version++
	close(s.changed)
	s.changed = make(chan struct{})
}

// Forget drops the policy: streams keep what they were sent, new ones get
// nothing until the next Set. A benchmark calls it once the proxy holds
// a large policy, so that the process holds what a real proxy holds.
func (s *Server) Forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = nil
}

// Watches returns the requests received so far.
func (s *Server) Watches() []*inboundv1.WatchRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*inboundv1.WatchRequest(nil), s.watches...)
}

// Open returns how many streams are in progress.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// Watch implements inboundv1.InboundPolicyServer.
func (s *Server) Watch(req *inboundv1.WatchRequest, stream grpc.ServerStreamingServer[inboundv1.PodPolicy]) error {
	s.mu.Lock()
	s.watches = append(s.watches, req)
	s.open++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.open--
		s.mu.Unlock()
	}()
	sent := 0 // the version sent; a stream holds no policy of its own
	for {
		s.mu.Lock()
		cur, version, changed := s.cur, s.version, s.changed
		s.mu.Unlock()
		if cur != nil && version != sent {
			if err := stream.Send(cur); err != nil {
				return err
			}
			sent = version
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}
