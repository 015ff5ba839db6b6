package certify

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/identity/ca"
)

// Errors of certify, mapped to gRPC codes by classify.
var (
	errBadIdentity   = errors.New("malformed identity")
	errForeignDomain = errors.New("identity is in another trust domain")
	errNoToken       = errors.New("no token")
	errCSRMismatch   = errors.New("certificate signing request asks for another identity")
	errWrongIdentity = errors.New("token does not grant the identity")
	errReview        = errors.New("token review failed")
)

// Bounds on untrusted input, checked before any work is done. A SPIFFE ID
// is at most 2048 bytes (SPIFFE-ID 2.3); a projected token is 1-2 KiB.
const (
	maxIdentitySize = 2048
	maxTokenSize    = 64 << 10
)

// Certify signs the request's CSR when its token belongs to the
// ServiceAccount its identity names. Errors are gRPC status errors with the
// codes the proto documents; nothing is issued on any of them.
func (s *Server) Certify(ctx context.Context, req *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
	if ok, first := s.clients.allow(clientAddr(ctx), s.now()); !ok {
		return nil, s.refuse(ctx, req, first)
	}
	leaf, info, err := s.certify(ctx, req)
	if err != nil {
		return nil, s.deny(ctx, req, err)
	}
	s.metrics.issue()
	cert := leaf.Certificate
	s.log.Info("certificate issued", "identity", leaf.ID.String(), "pod", info.Pod, "peer", peerAddr(ctx),
		"serial", cert.SerialNumber.Text(16), "not_after", cert.NotAfter.UTC())
	return &identityv1.CertifyResponse{
		LeafCertificate:          cert.Raw,
		IntermediateCertificates: raw(leaf.Intermediates),
		ValidUntil:               timestamppb.New(cert.NotAfter),
		TrustBundle:              bundleProto(leaf.Bundle),
	}, nil
}

// certify does the checks of the package comment, in that order, and signs.
func (s *Server) certify(ctx context.Context, req *identityv1.CertifyRequest) (*ca.Leaf, TokenInfo, error) {
	id, err := s.parseIdentity(req.GetIdentity())
	if err != nil {
		return nil, TokenInfo{}, err
	}
	token := req.GetToken()
	switch {
	case len(token) == 0:
		return nil, TokenInfo{}, fmt.Errorf("%w: send the pod's projected ServiceAccount token for audience %q", errNoToken, s.audience)
	case len(token) > maxTokenSize:
		return nil, TokenInfo{}, fmt.Errorf("%w: token of %d bytes, at most %d allowed", ErrUnauthenticated, len(token), maxTokenSize)
	}
	csr, err := ca.ParseCSR(req.GetCertificateSigningRequest())
	if err != nil {
		return nil, TokenInfo{}, err
	}
	if csr.ID != id {
		return nil, TokenInfo{}, fmt.Errorf("%w: it names %q, the request %q", errCSRMismatch, csr.ID, id)
	}
	info, err := s.review(ctx, token)
	if err != nil {
		return nil, TokenInfo{}, err
	}
	ns, sa, err := serviceAccount(info.Username)
	if err != nil {
		return nil, info, err
	}
	granted, err := spiffeid.FromSegments(id.TrustDomain(), "ns", ns, "sa", sa)
	if err != nil || granted != id {
		return nil, info, fmt.Errorf("%w: the token is ServiceAccount %s/%s's, the request asks for %q", errWrongIdentity, ns, sa, id)
	}
	leaf, err := s.ca.Sign(csr)
	if err != nil {
		return nil, info, err
	}
	return leaf, info, nil
}

// parseIdentity checks that raw is spiffe://<our td>/ns/<ns>/sa/<sa>.
func (s *Server) parseIdentity(raw string) (spiffeid.ID, error) {
	if len(raw) > maxIdentitySize {
		return spiffeid.ID{}, fmt.Errorf("%w: %d bytes, at most %d allowed", errBadIdentity, len(raw), maxIdentitySize)
	}
	id, err := spiffeid.FromString(raw)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w %q: %v", errBadIdentity, raw, err)
	}
	if td := s.ca.TrustDomain(); !id.MemberOf(td) {
		return spiffeid.ID{}, fmt.Errorf("%w: %q is not in %q", errForeignDomain, id, td.Name())
	}
	seg := strings.Split(id.Path(), "/") // "", "ns", ns, "sa", sa
	if len(seg) != 5 || seg[1] != "ns" || seg[3] != "sa" {
		return spiffeid.ID{}, fmt.Errorf("%w %q: want spiffe://%s/ns/<namespace>/sa/<serviceaccount>", errBadIdentity, id, id.TrustDomain().Name())
	}
	return id, nil
}

// review asks the reviewer about token, within the review timeout, unless
// the API server refused the same token lately (errCachedDenial) or every
// review slot stays taken for the review wait (errBusy). A refused token
// is remembered. Errors other than a refused token become errReview: the
// proxy should retry.
func (s *Server) review(ctx context.Context, token []byte) (TokenInfo, error) {
	key := hashToken(token)
	if s.denials.denied(key, s.now()) {
		return TokenInfo{}, fmt.Errorf("%w: the API server refused this token less than %s ago; send a new one", errCachedDenial, s.denialTTL)
	}
	switch err := s.reviews.acquire(ctx, s.reviewWait); {
	case errors.Is(err, errBusy):
		return TokenInfo{}, fmt.Errorf("%w: all %d token review slots stayed taken for %s; retry", err, cap(s.reviews), s.reviewWait)
	case err != nil:
		return TokenInfo{}, fmt.Errorf("%w: %w", errReview, err)
	}
	defer s.reviews.release()
	ctx, cancel := context.WithTimeout(ctx, s.reviewTimeout)
	defer cancel()
	info, err := s.reviewer.Review(ctx, string(token), s.audience)
	switch {
	case errors.Is(err, ErrUnauthenticated):
		s.denials.add(key, s.now())
		return TokenInfo{}, err
	case err != nil:
		return TokenInfo{}, fmt.Errorf("%w: %w", errReview, err)
	}
	return info, nil
}

// deny counts and logs a refusal and returns its gRPC status. Callers'
// mistakes are explained in full; failures on this side are logged in
// full but told in short, so API server details stay here.
func (s *Server) deny(ctx context.Context, req *identityv1.CertifyRequest, err error) error {
	code, reason := classify(err)
	s.metrics.deny(reason)
	level, msg := slog.LevelWarn, err.Error()
	switch reason {
	case ReasonReviewUnavailable:
		level, msg = slog.LevelError, "identity service could not review the token with the Kubernetes API server; retry"
	case ReasonIssuerUnavailable:
		level, msg = slog.LevelError, "identity service's issuer certificate is not valid now; retry after it is rotated"
	case ReasonInternal:
		level, msg = slog.LevelError, "identity service failed to sign; see the controller's log"
	case ReasonCachedDenial, ReasonBusy:
		// The refusals of a flood: the metric counts them, and a line
		// each would let the flood fill the log.
		level = slog.LevelDebug
	}
	s.log.Log(ctx, level, "certificate request denied", "reason", reason, "code", code.String(),
		"identity", printable(req.GetIdentity()), "peer", peerAddr(ctx), "err", err)
	return status.Error(code, msg)
}

// refuse counts and returns the refusal of a client over its rate. Only
// the first refusal of a flood is logged at warning level: a log line per
// request would let the flood fill the log.
func (s *Server) refuse(ctx context.Context, req *identityv1.CertifyRequest, first bool) error {
	s.metrics.deny(ReasonRateLimited)
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	s.log.Log(ctx, level, "certificate request denied", "reason", ReasonRateLimited, "code", codes.ResourceExhausted.String(),
		"identity", printable(req.GetIdentity()), "peer", peerAddr(ctx))
	return status.Errorf(codes.ResourceExhausted, "%v: at most %g a second after a burst of %g; retry later",
		errRateLimited, s.clients.rate, s.clients.burst)
}

// WatchTrustBundle sends the trust bundle at once and again whenever the
// trust anchors change, until the client leaves or Run returns. A new
// issuer under the same anchors sends nothing. A client that reads slowly
// holds up only its own stream, and skips to the newest bundle. Streams
// past the limits in all or per client address are refused with
// RESOURCE_EXHAUSTED.
func (s *Server) WatchTrustBundle(_ *identityv1.WatchTrustBundleRequest, stream grpc.ServerStreamingServer[identityv1.TrustBundle]) error {
	ctx := stream.Context()
	client := clientAddr(ctx)
	if err := s.watches.acquire(client); err != nil {
		return s.refuseWatch(ctx, err)
	}
	defer s.watches.release(client)
	s.metrics.watch(1)
	defer s.metrics.watch(-1)
	var sent *x509bundle.Bundle
	for {
		iss, replaced := s.ca.Issuer()
		if b := iss.Bundle(); sent == nil || !b.Equal(sent) {
			if err := stream.Send(bundleProto(b)); err != nil {
				return err // the client is gone; gRPC has the status
			}
			sent = b
		}
		select {
		case <-replaced:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.stopping:
			return status.Error(codes.Unavailable, "identity service shutting down; reconnect")
		}
	}
}

// refuseWatch counts, logs at debug level (a flood must not fill the log)
// and returns the refusal of a trust-bundle stream.
func (s *Server) refuseWatch(ctx context.Context, err error) error {
	reason, msg := ReasonBusy, fmt.Sprintf("%v: %d trust-bundle streams open; retry later", err, s.watches.max)
	if errors.Is(err, errClientStreams) {
		reason, msg = ReasonClientLimit, fmt.Sprintf("%v: at most %d", err, s.watches.perClient)
	}
	s.metrics.refuseWatch(reason)
	s.log.Debug("trust bundle stream refused", "reason", reason, "peer", peerAddr(ctx))
	return status.Error(codes.ResourceExhausted, msg)
}

func bundleProto(b *x509bundle.Bundle) *identityv1.TrustBundle {
	return &identityv1.TrustBundle{
		TrustDomain:     b.TrustDomain().Name(),
		X509Authorities: raw(b.X509Authorities()),
	}
}

func raw(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// printable bounds an untrusted string for a log line.
func printable(s string) string {
	const limit = 256
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return strings.ToValidUTF8(s, string(utf8.RuneError))
}
