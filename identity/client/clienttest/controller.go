// Package clienttest holds test doubles for the proxy's identity packages:
// Controller, an in-process stand-in for mesh-controller's identity
// service, and Source, an SVID and trust-bundle source a test sets by hand.
package clienttest

import (
	"context"
	"crypto/x509"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/identity/ca"
)

// ControllerConfig configures a Controller.
type ControllerConfig struct {
	// Issuer signs the leaves; required (identitytest.CA.NewIssuer makes
	// one). Its bundle is the initial trust bundle.
	Issuer *ca.Issuer
	// Lifetime of the leaves from the moment of signing; 0 means
	// ca.DefaultLifetime.
	Lifetime time.Duration
	// Now is the controller's clock; nil means time.Now.
	Now func() time.Time
}

// Controller is a stand-in for mesh-controller's identity service, serving
// api/identity/v1 on 127.0.0.1 for the proxy's tests. It checks CSRs with
// the production ca.ParseCSR and signs with the production ca.Issuer, but
// accepts any non-empty token: TokenReview and the rest of the real
// Certify path are covered by mesh-controller's own tests. Every setter
// is safe to call while clients are connected.
type Controller struct {
	identityv1.UnimplementedIdentityServer

	addr     string
	srv      *grpc.Server
	lifetime time.Duration
	now      func() time.Time

	mu       sync.Mutex // guards the fields below
	issuer   *ca.Issuer
	roots    []*x509.Certificate
	failure  error
	tamper   func(*ca.CSR, *identityv1.CertifyResponse)
	requests []*identityv1.CertifyRequest
	watchers map[chan struct{}]struct{}
	broken   chan struct{} // closed by BreakWatches, then replaced
}

// StartController serves a Controller on 127.0.0.1:0 until the test ends.
func StartController(tb testing.TB, cfg ControllerConfig) *Controller {
	tb.Helper()
	if cfg.Issuer == nil {
		tb.Fatal("clienttest: ControllerConfig.Issuer is required")
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = ca.DefaultLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("clienttest: listen: %v", err)
	}
	c := &Controller{
		addr:     lis.Addr().String(),
		srv:      grpc.NewServer(),
		lifetime: cfg.Lifetime,
		now:      cfg.Now,
		issuer:   cfg.Issuer,
		roots:    cfg.Issuer.Bundle().X509Authorities(),
		watchers: make(map[chan struct{}]struct{}),
		broken:   make(chan struct{}),
	}
	identityv1.RegisterIdentityServer(c.srv, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.srv.Serve(lis)
	}()
	tb.Cleanup(func() {
		c.srv.Stop()
		<-done
	})
	return c
}

// Addr returns the host:port the controller listens on.
func (c *Controller) Addr() string { return c.addr }

// Dial returns a client connection to the controller, closed when the test
// ends.
func (c *Controller) Dial(tb testing.TB) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient("passthrough:///"+c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("clienttest: dial controller: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// Stop makes the controller unreachable: it closes the listener and every
// connection, as a crashed controller would.
func (c *Controller) Stop() { c.srv.Stop() }

// SetFailure makes Certify answer err (a gRPC status error) until it is
// set to nil.
func (c *Controller) SetFailure(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failure = err
}

// SetTamper has fn change every Certify answer after signing, to test how
// clients treat a misbehaving controller; nil stops it.
func (c *Controller) SetTamper(fn func(req *ca.CSR, resp *identityv1.CertifyResponse)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tamper = fn
}

// SetIssuer signs the next leaves with iss; the trust bundle stays until
// SetBundle changes it.
func (c *Controller) SetIssuer(iss *ca.Issuer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.issuer = iss
}

// SetBundle makes roots the trust bundle and sends it on every open
// WatchTrustBundle stream.
func (c *Controller) SetBundle(roots ...*x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.roots = slices.Clone(roots)
	for w := range c.watchers {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// BreakWatches ends every open WatchTrustBundle stream with UNAVAILABLE,
// as a controller restart would; new streams work as before.
func (c *Controller) BreakWatches() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.broken)
	c.broken = make(chan struct{})
}

// Watches returns how many WatchTrustBundle streams are open.
func (c *Controller) Watches() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.watchers)
}

// Requests returns the Certify requests received so far, in order.
func (c *Controller) Requests() []*identityv1.CertifyRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.requests)
}

// Certify implements identityv1.IdentityServer.
func (c *Controller) Certify(_ context.Context, req *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
	c.mu.Lock()
	c.requests = append(c.requests, proto.CloneOf(req))
	failure, iss, tamper, bundle := c.failure, c.issuer, c.tamper, c.trustBundleLocked()
	c.mu.Unlock()
	if failure != nil {
		return nil, failure
	}
	if len(req.GetToken()) == 0 {
		return nil, status.Error(codes.Unauthenticated, "no token")
	}
	csr, err := ca.ParseCSR(req.GetCertificateSigningRequest())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if csr.ID.String() != req.GetIdentity() {
		return nil, status.Errorf(codes.InvalidArgument, "CSR asks for %q, request for %q", csr.ID, req.GetIdentity())
	}
	leaf, err := iss.Sign(csr.PublicKey, csr.ID, c.now(), c.lifetime)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	resp := &identityv1.CertifyResponse{
		LeafCertificate: leaf.Certificate.Raw,
		ValidUntil:      timestamppb.New(leaf.Certificate.NotAfter),
		TrustBundle:     bundle,
	}
	for _, ic := range leaf.Intermediates {
		resp.IntermediateCertificates = append(resp.IntermediateCertificates, ic.Raw)
	}
	if tamper != nil {
		tamper(csr, resp)
	}
	return resp, nil
}

// WatchTrustBundle implements identityv1.IdentityServer: the current
// bundle at once, then after every SetBundle.
func (c *Controller) WatchTrustBundle(_ *identityv1.WatchTrustBundleRequest, stream identityv1.Identity_WatchTrustBundleServer) error {
	wake := make(chan struct{}, 1)
	c.mu.Lock()
	c.watchers[wake] = struct{}{}
	broken := c.broken
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.watchers, wake)
		c.mu.Unlock()
	}()
	for {
		c.mu.Lock()
		b := c.trustBundleLocked()
		c.mu.Unlock()
		if err := stream.Send(b); err != nil {
			return err
		}
		select {
		case <-wake:
		case <-broken:
			return status.Error(codes.Unavailable, "clienttest: stream broken on purpose")
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (c *Controller) trustBundleLocked() *identityv1.TrustBundle {
	b := &identityv1.TrustBundle{TrustDomain: c.issuer.TrustDomain().Name()}
	for _, r := range c.roots {
		b.X509Authorities = append(b.X509Authorities, r.Raw)
	}
	return b
}
