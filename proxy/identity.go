package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/mesh-dev/mesh/identity/client"
	"github.com/mesh-dev/mesh/identity/meshtls"
	"github.com/mesh-dev/mesh/identity/workloadapi"
	"github.com/mesh-dev/mesh/proxy/dnsresolve"
)

// identity is the proxy's SPIFFE identity: the certificate it renews from
// the controller, the TLS configurations built on it, and the Workload API
// it serves to the pod.
type identity struct {
	conn *grpc.ClientConn
	src  *client.Source
	// app is the application's own certificate, which the Workload API
	// serves: same SPIFFE ID and token as src, but its own key pair, so
	// the proxy's key never leaves the proxy. Nil when the Workload API
	// is not served.
	app *client.Source
	cfg *Config

	// server is the inbound side's mesh TLS config, one for every
	// connection so that the session tickets it issues resume on the
	// next; tickets rotates their keys. sessions keeps the outbound
	// side's sessions, by peer identity and address.
	server   *tls.Config
	tickets  *meshtls.TicketKeys
	sessions *meshtls.SessionCache
}

// sessionCacheSize bounds the outbound sessions kept for resumption: one
// per peer endpoint, of a few KB each (the peer's certificates).
const sessionCacheSize = 256

// newIdentity connects to the identity service, checking it is the
// controller by its SPIFFE ID and the configured trust anchors before any
// token is sent.
// Its metrics go to reg.
func newIdentity(ctx context.Context, cfg *Config, res *dnsresolve.Resolver, reg prometheus.Registerer) (*identity, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust-domain %q: %w", cfg.TrustDomain, err)
	}
	anchors, err := x509bundle.Parse(td, []byte(cfg.TrustAnchors))
	if err != nil || len(anchors.X509Authorities()) == 0 {
		return nil, fmt.Errorf("trust-anchors: want PEM certificates: %v", err)
	}
	server, err := spiffeid.FromString(cfg.IdentityServerID)
	if err != nil {
		return nil, fmt.Errorf("identity-server-id %q: %w", cfg.IdentityServerID, err)
	}
	conn, err := grpc.NewClient(dnsresolve.Scheme+":///"+cfg.IdentityAddr,
		grpc.WithResolvers(dnsresolve.NewBuilder(ctx, res, dnsresolve.BuilderConfig{})),
		grpc.WithTransportCredentials(credentials.NewTLS(
			tlsconfig.TLSClientConfig(anchors, tlsconfig.AuthorizeID(server)))),
		grpc.WithConnectParams(controllerConnectParams))
	if err != nil {
		return nil, fmt.Errorf("identity service %s: %w", cfg.IdentityAddr, err)
	}
	ccfg := client.Config{
		TrustDomain: cfg.TrustDomain, Namespace: cfg.Namespace, ServiceAccount: cfg.ServiceAccount,
		TokenPath: cfg.IdentityTokenFile, Conn: conn,
	}
	src, err := client.New(ccfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	var app *client.Source
	if cfg.WorkloadAPISocket != "" {
		// A second rotating Source with its own key, certified and
		// renewed like the proxy's: every process that can open the
		// socket gets this one, so it must not be the proxy's (whose key
		// would let an application container impersonate the proxy's
		// TLS and read its peers' traffic).
		// It follows the proxy's trust bundle rather than opening a
		// second stream to the controller.
		acfg := ccfg
		acfg.BundleFrom = src
		if app, err = client.New(acfg); err != nil {
			conn.Close()
			return nil, err
		}
	}
	if err := reg.Register(certExpiry{src}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("identity metrics: %w", err)
	}
	inbound := meshtls.ServerConfig(src, src, nil)
	return &identity{
		conn: conn, src: src, app: app, cfg: cfg,
		server: inbound, tickets: meshtls.NewTicketKeys(inbound), sessions: meshtls.NewSessionCache(sessionCacheSize),
	}, nil
}

// run renews the proxy's certificate and, when the Workload API is
// served, the application's, serving it on the socket, until ctx ends.
func (id *identity) run(ctx context.Context, log interface{ Error(string, ...any) }) {
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := id.src.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("certificate client stopped", "err", err)
		}
	})
	wg.Go(func() { id.tickets.Run(ctx, meshtls.TicketKeyPeriod) })
	if id.app != nil {
		wg.Go(func() {
			if err := id.app.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("application certificate client stopped", "err", err)
			}
		})
		if err := workloadapi.Run(ctx, workloadapi.Config{SocketPath: id.cfg.WorkloadAPISocket, Source: id.app}); err != nil {
			log.Error("workload API stopped", "err", err)
		}
	}
	wg.Wait()
	id.conn.Close()
}

// ready returns nil while the proxy holds a certificate peers accept and
// can keep doing so: it fails before the first certificate, and once the
// certificate is minutes from expiry (or past it) and renewal fails,
// saying when it expires and the renewal's last error, so that the pod
// leaves its Services before its peers start refusing it
// (client.Source.Health).
func (id *identity) ready() error { return id.src.Health() }

// certExpiryDesc describes the expiry gauge; its name follows Prometheus's
// convention for timestamps, so alerts read `..._seconds - time() < X`.
var certExpiryDesc = prometheus.NewDesc("mesh_proxy_identity_cert_expiry_timestamp_seconds",
	"When the proxy's current identity certificate expires, in seconds since the Unix epoch; absent before the first certificate.",
	nil, nil)

// certExpiry exports certExpiryDesc, read from the Source on every scrape.
type certExpiry struct{ src *client.Source }

func (c certExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- certExpiryDesc }

func (c certExpiry) Collect(ch chan<- prometheus.Metric) {
	svid, err := c.src.GetX509SVID()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue,
		float64(svid.Certificates[0].NotAfter.Unix()))
}

// controllerCredentials returns the transport credentials of the
// connection to the controller's destination and policy API: mesh TLS
// that presents the proxy's own certificate and accepts the server only
// if it proves exactly server against the trust bundle, both read from
// the rotating Source on every handshake. A handshake waits for the
// proxy's first certificate, so a starting proxy's first dial does not
// fail for want of one.
func (id *identity) controllerCredentials(server spiffeid.ID) credentials.TransportCredentials {
	cfg := tlsconfig.MTLSClientConfig(id.src, id.src, authorizeController(server))
	return awaitCertificate{TransportCredentials: credentials.NewTLS(cfg), ready: id.src.Ready()}
}

// authorizeController admits only want, and names both IDs when it
// refuses, which is what an operator reading the proxy's log needs: a
// server of the mesh's CA that is not the controller is an impostor, or a
// destination-server-id that does not match the install.
func authorizeController(want spiffeid.ID) tlsconfig.Authorizer {
	return func(got spiffeid.ID, _ [][]*x509.Certificate) error {
		if got != want {
			return fmt.Errorf("the destination server proved %q, not the controller's %q (destination-server-id)", got, want)
		}
		return nil
	}
}

// awaitCertificate is TLS credentials whose client handshakes wait until
// ready is closed (the proxy holds its first certificate) or the dial's
// context ends.
type awaitCertificate struct {
	credentials.TransportCredentials
	ready <-chan struct{}
}

func (a awaitCertificate) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	select {
	case <-a.ready:
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("mesh TLS to the controller: the proxy has no certificate yet: %w", ctx.Err())
	}
	return a.TransportCredentials.ClientHandshake(ctx, authority, conn)
}

func (a awaitCertificate) Clone() credentials.TransportCredentials {
	return awaitCertificate{TransportCredentials: a.TransportCredentials.Clone(), ready: a.ready}
}

// serverTLS is inbound mesh TLS: any workload of the trust domain. Every
// connection shares the config, whose session tickets resume.
func (id *identity) serverTLS() *tls.Config { return id.server }

// clientHandshake wraps an outbound connection in mesh TLS, requiring the
// peer proxy to prove the identity the controller named for the endpoint.
// A connection to an endpoint the proxy connected to before as the same
// identity resumes that session, the server's chain and identity checked
// again (meshtls.SessionCache).
func (id *identity) clientHandshake(ctx context.Context, c net.Conn, peer string) (net.Conn, error) {
	want, err := spiffeid.FromString(peer)
	if err != nil {
		return nil, fmt.Errorf("endpoint identity %q: %w", peer, err)
	}
	tc := tls.Client(c, id.sessions.ClientConfig(id.src, id.src, want))
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, fmt.Errorf("mesh TLS to %s as %s: %w", c.RemoteAddr(), peer, err)
	}
	return tc, nil
}

// identityJSON is GET /identity on the admin port: the proxy's current
// certificate, what `mesh identity` shows.
func (id *identity) identityJSON(w http.ResponseWriter, _ *http.Request) {
	svid, err := id.src.GetX509SVID()
	if err != nil {
		http.Error(w, "no certificate yet: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	leaf := svid.Certificates[0]
	var chain []byte
	for _, c := range svid.Certificates {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	// The trust anchors in force: how a rotated bundle is seen to have
	// reached a running proxy.
	type anchor struct {
		Subject  string    `json:"subject"`
		NotAfter time.Time `json:"not_after"`
		SHA256   string    `json:"sha256"`
	}
	anchors := []anchor{}
	if b, err := id.src.GetX509BundleForTrustDomain(svid.ID.TrustDomain()); err == nil {
		for _, c := range b.X509Authorities() {
			sum := sha256.Sum256(c.Raw)
			anchors = append(anchors, anchor{c.Subject.String(), c.NotAfter, hex.EncodeToString(sum[:])})
		}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(struct {
		SPIFFEID     string    `json:"spiffe_id"`
		Issuer       string    `json:"issuer"`
		Serial       string    `json:"serial"`
		NotBefore    time.Time `json:"not_before"`
		NotAfter     time.Time `json:"not_after"`
		Chain        string    `json:"chain_pem"`
		TrustAnchors []anchor  `json:"trust_anchors"`
	}{svid.ID.String(), leaf.Issuer.String(), leaf.SerialNumber.Text(16), leaf.NotBefore, leaf.NotAfter, string(chain), anchors})
}
