// Package meshtls builds the TLS configurations of mesh TLS, the mutual
// TLS between two proxies, from rotating X509-SVID and trust-bundle
// sources (identity/client.Source in the proxy). The configs read the
// sources on every handshake, so a renewed certificate or a new trust
// anchor applies to the next connection without rebuilding anything.
//
// Both sides speak TLS 1.3 only and offer the ALPN protocol ALPN, by which
// the inbound side tells a proxy's connection from an application's own
// TLS. The protocol inside (HTTP/1, HTTP/2, opaque TCP) is detected after
// the handshake as on a plain connection, so ALPN carries no more.
//
// A proxy's second connection to the same server resumes the first one's
// session (SessionCache, TicketKeys): no certificate is sent or
// signed, but the peer's certificate chain, kept in the session, is
// verified against the current trust bundle and its SPIFFE ID authorized
// on every handshake, resumed or not (verifyPeer).
package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ALPN is the application protocol a mesh proxy offers when it connects
// to another proxy.
const ALPN = "mesh.dev/proxy.v1"

// Errors callers can test with errors.Is.
var (
	// ErrNoPeerCertificate: the peer presented no certificate.
	ErrNoPeerCertificate = errors.New("meshtls: peer presented no certificate")
	// ErrUnauthorized: the peer's verified ID is not one this side
	// accepts.
	ErrUnauthorized = errors.New("meshtls: peer identity not authorized")
)

// ServerConfig returns the configuration of the inbound side of mesh TLS:
// it presents svid's certificate, requires a client certificate that
// verifies against bundle, and admits the client's SPIFFE ID if authorize
// allows it. A nil authorize admits any ID in the trust domain of the
// server's own SVID; the proxy's authorization policy decides more
// finely after the handshake, with PeerID.
//
// The config issues session tickets, and a client that presents one
// resumes its session: its chain and ID are checked again as on a full
// handshake. Share one config among all of a listener's connections, as
// tickets are sealed with its keys; TicketKeys rotates them.
func ServerConfig(svid x509svid.Source, bundle x509bundle.Source, authorize tlsconfig.Authorizer) *tls.Config {
	if authorize == nil {
		authorize = sameTrustDomain(svid)
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		NextProtos:       []string{ALPN},
		GetCertificate:   tlsconfig.GetCertificate(svid),
		ClientAuth:       tls.RequireAnyClientCert, // verified by verifyPeer
		VerifyConnection: verifyPeer(bundle, authorize, newChainCache(chainCacheSize)),
	}
}

// ClientConfig returns the configuration of one outbound mesh TLS
// connection: it presents svid's certificate and accepts the server only
// if its certificate verifies against bundle as exactly server, the
// identity the destination service named for the endpoint. The config
// holds no session cache, so every handshake is a full one;
// SessionCache.ClientConfig is the same with resumption.
func ClientConfig(svid x509svid.Source, bundle x509bundle.Source, server spiffeid.ID) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		NextProtos:           []string{ALPN},
		GetClientCertificate: tlsconfig.GetClientCertificate(svid),
		// The server is named by a SPIFFE ID, not a host name:
		// verifyPeer checks its chain and its ID instead.
		InsecureSkipVerify: true,
		VerifyConnection:   verifyPeer(bundle, authorizeID(server), nil),
	}
}

// verifyPeer returns the VerifyConnection callback of both sides: the
// peer's chain must verify against bundle as an X509-SVID, and authorize
// must admit its ID. crypto/tls runs VerifyConnection on every handshake,
// resumed ones included, with the chain of the session's original
// handshake as PeerCertificates (crypto/tls handshake_client_tls13.go
// readServerCertificate, handshake_server_tls13.go readClientCertificate),
// where it skips VerifyPeerCertificate. So a resumed session is held to
// the bundle and the authorizer of now, not of the handshake that made it:
// a root since removed from the bundle, or a server that is not the one
// this connection expects, fails it like a full handshake. With chains,
// a chain that verified before is not verified again (chainCache); nil
// verifies every one.
func verifyPeer(bundle x509bundle.Source, authorize tlsconfig.Authorizer, chains *chainCache) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return ErrNoPeerCertificate
		}
		var (
			id       spiffeid.ID
			verified [][]*x509.Certificate
			err      error
		)
		if chains != nil {
			id, verified, err = chains.verify(cs.PeerCertificates, bundle, time.Now())
		} else {
			id, verified, err = x509svid.Verify(cs.PeerCertificates, bundle)
		}
		if err != nil {
			return err
		}
		return authorize(id, verified)
	}
}

// PeerID returns the SPIFFE ID of the peer of a completed handshake made
// with ServerConfig or ClientConfig, which verified it. It returns
// ErrNoPeerCertificate when there is none.
func PeerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, ErrNoPeerCertificate
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("meshtls: peer certificate: %w", err)
	}
	return id, nil
}

// OffersMesh reports whether a ClientHello's ALPN protocols
// (tls.ClientHelloInfo.SupportedProtos) include ALPN, that is, whether the
// connection comes from a mesh proxy rather than from an application
// speaking TLS itself.
func OffersMesh(protos []string) bool { return slices.Contains(protos, ALPN) }

// authorizeID admits only want. It differs from tlsconfig.AuthorizeID in
// wrapping ErrUnauthorized and naming both IDs, which is what an operator
// reading a failed handshake in the proxy's log needs.
func authorizeID(want spiffeid.ID) tlsconfig.Authorizer {
	return func(got spiffeid.ID, _ [][]*x509.Certificate) error {
		if got != want {
			return fmt.Errorf("%w: server is %q, expected %q", ErrUnauthorized, got, want)
		}
		return nil
	}
}

// sameTrustDomain admits any ID in the trust domain of the current SVID,
// read at each handshake so it follows the source.
func sameTrustDomain(svid x509svid.Source) tlsconfig.Authorizer {
	return func(got spiffeid.ID, _ [][]*x509.Certificate) error {
		own, err := svid.GetX509SVID()
		if err != nil {
			return fmt.Errorf("meshtls: own identity: %w", err)
		}
		if td := own.ID.TrustDomain(); !got.MemberOf(td) {
			return fmt.Errorf("%w: client %q is not in trust domain %q", ErrUnauthorized, got, td.Name())
		}
		return nil
	}
}
