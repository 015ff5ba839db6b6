// Package certify is the identity service of mesh-controller: the gRPC
// Identity API (api/identity/v1) that signs a proxy's X509-SVID once the
// Kubernetes API server has vouched for the pod's ServiceAccount token, and
// that streams the trust bundle as it changes.
//
// A request is checked from the cheapest test to the dearest, so garbage
// never costs a TokenReview: the client address's request rate, the
// identity's form and trust domain, the token's presence, the CSR
// (ca.ParseCSR) and that it asks for the identity, whether the API server
// refused the same token lately, a free review slot, then the TokenReview
// and that the token's ServiceAccount is the identity's. Nothing is signed
// unless all pass.
//
// The limits keep a flood of junk-token requests from starving other
// pods of certificates (issue 12): a per-address rate far above what
// renewals need, cached denials, a bound on TokenReviews in flight (the
// controller gives them a Kubernetes client with a QPS of their own), and
// bounds on trust-bundle streams in all and per address.
package certify

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/identity/ca"
	"github.com/mesh-dev/mesh/identity/meshtls"
	"github.com/mesh-dev/mesh/internal/names"
)

// DefaultAudience is the audience of the projected ServiceAccount token a
// proxy presents; a token for any other audience (the API server's
// included) is refused.
const DefaultAudience = names.IdentityTokenAudience

// DefaultReviewTimeout bounds one TokenReview, so a slow API server
// answers the proxy with UNAVAILABLE, which it retries, instead of
// holding its request open.
const DefaultReviewTimeout = 10 * time.Second

// Default limits. A proxy asks for a certificate at start and then once
// per 70 % of its lifetime (about every 17 h for a 24 h leaf), retrying
// failures with backoff, so a client rate of 5/s with a burst of 10 never
// limits it, while a pod sending 200/s gets 5 reviews a second at most.
const (
	DefaultClientRate          = 5
	DefaultClientBurst         = 10
	DefaultMaxClients          = 16384
	DefaultDenialTTL           = time.Minute
	DefaultMaxDenials          = 16384
	DefaultMaxReviews          = 32
	DefaultReviewWait          = time.Second
	DefaultMaxBundleWatches    = 10000
	DefaultMaxWatchesPerClient = 4
)

// Config configures a Server. IssuerDir and Reviewer are required.
type Config struct {
	// IssuerDir holds the mesh-identity-issuer Secret's files (ca.CertFile,
	// ca.KeyFile, ca.AnchorsFile), reloaded when they change.
	IssuerDir string
	// TrustDomain of the identities issued; the zero value means
	// cluster.local.
	TrustDomain spiffeid.TrustDomain
	// Audience a token must be for; "" means DefaultAudience.
	Audience string
	// LeafLifetime is how long a certificate is valid; 0 means
	// ca.DefaultLifetime. Leaves never outlive the issuer.
	LeafLifetime time.Duration
	// PollInterval is how often the issuer files are checked; 0 means
	// ca.DefaultPollInterval.
	PollInterval time.Duration
	// ReviewTimeout bounds one TokenReview; 0 means DefaultReviewTimeout.
	ReviewTimeout time.Duration
	// Reviewer authenticates tokens; KubeTokenReviewer in the controller.
	Reviewer TokenReviewer

	// ClientRate is how many Certify requests per second one client IP
	// address may make, after a burst of ClientBurst; past it requests are
	// refused with RESOURCE_EXHAUSTED. 0 means DefaultClientRate and
	// DefaultClientBurst.
	ClientRate  float64
	ClientBurst int
	// MaxClients bounds the addresses whose rate is tracked, least
	// recently seen forgotten first; 0 means DefaultMaxClients.
	MaxClients int
	// DenialTTL is how long a token the API server refused is refused
	// again without a TokenReview; 0 means DefaultDenialTTL. MaxDenials
	// bounds how many are remembered (by hash); 0 means DefaultMaxDenials.
	DenialTTL  time.Duration
	MaxDenials int
	// MaxReviews bounds the TokenReviews in flight; a request waits up to
	// ReviewWait for one to end, then is refused with RESOURCE_EXHAUSTED.
	// 0 means DefaultMaxReviews and DefaultReviewWait.
	MaxReviews int
	ReviewWait time.Duration
	// MaxBundleWatches bounds the WatchTrustBundle streams open at once
	// (each proxy holds one), MaxWatchesPerClient those from one IP
	// address; 0 means DefaultMaxBundleWatches and
	// DefaultMaxWatchesPerClient.
	MaxBundleWatches    int
	MaxWatchesPerClient int

	// Clock tells the time; nil means time.Now.
	Clock func() time.Time
	// Log receives one line per certificate issued or refused and the
	// issuer's reloads; nil discards them. Tokens are never logged.
	Log *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Server implements the Identity gRPC service. Its methods are safe for
// concurrent use.
type Server struct {
	identityv1.UnimplementedIdentityServer

	ca            *ca.CA
	reviewer      TokenReviewer
	audience      string
	reviewTimeout time.Duration
	log           *slog.Logger
	metrics       *metrics
	now           func() time.Time

	clients    *clientLimiter
	denials    *denials
	denialTTL  time.Duration
	reviews    slots
	reviewWait time.Duration
	watches    *streamLimiter

	stopOnce sync.Once
	stopping chan struct{} // closed when Run returns: streams end
}

// New loads the issuer and returns a Server ready to Register. It fails
// when the configuration or the issuer files are unusable.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Reviewer == nil:
		return nil, errors.New("certify: no token reviewer configured")
	case cfg.LeafLifetime != 0 && cfg.LeafLifetime < time.Minute:
		return nil, fmt.Errorf("certify: leaf lifetime %s is shorter than a minute", cfg.LeafLifetime)
	case cfg.ClientRate < 0 || cfg.ClientBurst < 0 || cfg.MaxClients < 0 || cfg.DenialTTL < 0 || cfg.MaxDenials < 0 ||
		cfg.MaxReviews < 0 || cfg.ReviewWait < 0 || cfg.MaxBundleWatches < 0 || cfg.MaxWatchesPerClient < 0:
		return nil, errors.New("certify: limits must not be negative")
	}
	cfg = withDefaultLimits(cfg)
	if cfg.Audience == "" {
		cfg.Audience = DefaultAudience
	}
	if cfg.ReviewTimeout <= 0 {
		cfg.ReviewTimeout = DefaultReviewTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	authority, err := ca.New(ca.Config{
		Dir:          cfg.IssuerDir,
		TrustDomain:  cfg.TrustDomain,
		Lifetime:     cfg.LeafLifetime,
		PollInterval: cfg.PollInterval,
		Clock:        cfg.Clock,
		Log:          cfg.Log,
		Registerer:   cfg.Registerer,
	})
	if err != nil {
		return nil, fmt.Errorf("certify: %w", err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("certify: %w", err)
	}
	return &Server{
		ca:            authority,
		reviewer:      cfg.Reviewer,
		audience:      cfg.Audience,
		reviewTimeout: cfg.ReviewTimeout,
		log:           cfg.Log,
		metrics:       m,
		now:           cfg.Clock,
		clients:       newClientLimiter(cfg.ClientRate, cfg.ClientBurst, cfg.MaxClients),
		denials:       newDenials(cfg.DenialTTL, cfg.MaxDenials),
		denialTTL:     cfg.DenialTTL,
		reviews:       make(slots, cfg.MaxReviews),
		reviewWait:    cfg.ReviewWait,
		watches:       newStreamLimiter(cfg.MaxBundleWatches, cfg.MaxWatchesPerClient),
		stopping:      make(chan struct{}),
	}, nil
}

// withDefaultLimits fills in the limits cfg leaves at zero.
func withDefaultLimits(cfg Config) Config {
	if cfg.ClientRate == 0 {
		cfg.ClientRate = DefaultClientRate
	}
	if cfg.ClientBurst == 0 {
		cfg.ClientBurst = DefaultClientBurst
	}
	if cfg.MaxClients == 0 {
		cfg.MaxClients = DefaultMaxClients
	}
	if cfg.DenialTTL == 0 {
		cfg.DenialTTL = DefaultDenialTTL
	}
	if cfg.MaxDenials == 0 {
		cfg.MaxDenials = DefaultMaxDenials
	}
	if cfg.MaxReviews == 0 {
		cfg.MaxReviews = DefaultMaxReviews
	}
	if cfg.ReviewWait == 0 {
		cfg.ReviewWait = DefaultReviewWait
	}
	if cfg.MaxBundleWatches == 0 {
		cfg.MaxBundleWatches = DefaultMaxBundleWatches
	}
	if cfg.MaxWatchesPerClient == 0 {
		cfg.MaxWatchesPerClient = DefaultMaxWatchesPerClient
	}
	return cfg
}

// Register adds the Identity service to r, a *grpc.Server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	identityv1.RegisterIdentityServer(r, s)
}

// Run follows the issuer files until ctx is done, then ends every
// WatchTrustBundle stream so that a graceful stop of the gRPC server does
// not wait for them, and returns nil. Call it once.
func (s *Server) Run(ctx context.Context) error {
	defer s.stopOnce.Do(func() { close(s.stopping) })
	return s.ca.Run(ctx)
}

// Reload reads the issuer files at once instead of at the next poll, for a
// SIGHUP handler or a test; see ca.CA.Reload.
func (s *Server) Reload() error {
	return s.ca.Reload()
}

// TLSConfig returns the TLS configuration for the gRPC listener serving
// this service: it presents an SVID for id (the controller's own
// ServiceAccount identity) signed by the current issuer and renewed as it
// ages, so proxies can check the server with the trust bundle before they
// send a token. Use it with credentials.NewTLS.
func (s *Server) TLSConfig(id spiffeid.ID) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: s.ca.ServingCertificate(id)}
}

// ClientTLS returns a function making the TLS configuration of a
// connection from the controller, as self, to a proxy's server that must
// prove the identity server (the proxies' tap servers): the controller
// presents an SVID for self signed by the current issuer and renewed as
// it ages, like TLSConfig's, and accepts the server only if its
// certificate chains to the current trust anchors and carries exactly
// server. Both are read on every handshake, so a rotated issuer or anchor
// applies to the next connection. Every config the function makes shares
// one key, made on first use. Use them with credentials.NewTLS.
func (s *Server) ClientTLS(self spiffeid.ID) func(server spiffeid.ID) *tls.Config {
	svid := &servingSVID{id: self, get: s.ca.ServingCertificate(self)}
	anchors := anchorSource{s.ca}
	return func(server spiffeid.ID) *tls.Config {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13}
		tlsconfig.HookMTLSClientConfig(cfg, svid, anchors, tlsconfig.AuthorizeID(server))
		return cfg
	}
}

// MTLSServerConfig returns the TLS configuration of a listener that
// serves the mesh's workloads rather than strangers (the proxies'
// destination and inbound policy API): it presents an SVID for self, as
// TLSConfig does, and requires a client certificate that chains to the
// current trust anchors and names an ID of the trust domain, so a caller
// without one, or with one of another CA, is refused at the handshake.
// CallerOf then tells a method who called. Anchors are read on every
// handshake; session tickets are off because a resumed session skips the
// check and would admit a client whose anchor has left the bundle. Use it
// with credentials.NewTLS.
func (s *Server) MTLSServerConfig(self spiffeid.ID) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		GetCertificate:         s.ca.ServingCertificate(self),
		ClientAuth:             tls.RequireAnyClientCert,
		VerifyPeerCertificate:  tlsconfig.VerifyPeerCertificate(anchorSource{s.ca}, tlsconfig.AuthorizeMemberOf(s.ca.TrustDomain())),
		SessionTicketsDisabled: true,
	}
}

// Errors of CallerOf, for errors.Is.
var (
	// ErrNoCaller: the connection carried no verified client certificate
	// (it is not TLS, or not a listener of MTLSServerConfig's).
	ErrNoCaller = errors.New("certify: the caller proved no identity over mesh TLS")
	// ErrNotWorkload: the caller's ID is not a workload's,
	// spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>.
	ErrNotWorkload = errors.New("certify: the caller's SPIFFE ID names no ServiceAccount")
)

// Caller is a workload that proved its SPIFFE ID over mesh TLS, and the
// namespace and ServiceAccount the ID names.
type Caller struct {
	ID                        spiffeid.ID
	Namespace, ServiceAccount string
}

// CallerOf returns the caller of a gRPC method served over a listener
// configured with MTLSServerConfig, from the method's context: the
// handshake verified its certificate, so its ID is proven. It fails with
// ErrNoCaller on any other connection, and with ErrNotWorkload when the ID
// is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>.
func CallerOf(ctx context.Context) (Caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Caller{}, ErrNoCaller
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return Caller{}, ErrNoCaller
	}
	id, err := meshtls.PeerID(info.State)
	if err != nil {
		return Caller{}, fmt.Errorf("%w: %v", ErrNoCaller, err)
	}
	seg := strings.Split(id.Path(), "/") // "", "ns", ns, "sa", sa
	if len(seg) != 5 || seg[1] != "ns" || seg[3] != "sa" {
		return Caller{}, fmt.Errorf("%w: %q", ErrNotWorkload, id)
	}
	return Caller{ID: id, Namespace: seg[2], ServiceAccount: seg[4]}, nil
}

// servingSVID is an x509svid.Source of the controller's own certificate.
type servingSVID struct {
	id  spiffeid.ID
	get func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

func (s *servingSVID) GetX509SVID() (*x509svid.SVID, error) {
	cert, err := s.get(nil)
	if err != nil {
		return nil, err
	}
	key, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("certify: serving key is not a crypto.Signer")
	}
	chain := []*x509.Certificate{cert.Leaf}
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certify: serving chain: %w", err)
		}
		chain = append(chain, c)
	}
	return &x509svid.SVID{ID: s.id, Certificates: chain, PrivateKey: key}, nil
}

// anchorSource is an x509bundle.Source of the current trust anchors.
type anchorSource struct{ ca *ca.CA }

func (a anchorSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	iss, _ := a.ca.Issuer()
	if iss == nil {
		return nil, errors.New("certify: no issuer loaded")
	}
	return iss.Bundle().GetX509BundleForTrustDomain(td)
}

// TrustDomain returns the trust domain the server issues identities in.
func (s *Server) TrustDomain() spiffeid.TrustDomain {
	return s.ca.TrustDomain()
}
