package meshtls_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/identity/meshtls"
)

// TestResumption: the second connection of a client to a server resumes
// the first one's session, and both ends still see the other's verified
// identity and the mesh ALPN.
func TestResumption(t *testing.T) {
	p := newPKI(t)
	addr, results := listen(t, meshtls.ServerConfig(p.serverSrc, p.serverSrc, nil))
	cache := meshtls.NewSessionCache(8)
	for i, wantResumed := range []bool{false, true, true} {
		// A config per connection, as the proxy builds them: the cache
		// carries the session.
		cli := dial(t, addr, cache.ClientConfig(p.clientSrc, p.clientSrc, p.serverID))
		srv := recv(t, results)
		if cli.err != nil || srv.err != nil {
			t.Fatalf("connection %d: client %v, server %v", i, cli.err, srv.err)
		}
		for _, side := range []struct {
			name   string
			state  tls.ConnectionState
			wantID spiffeid.ID
		}{
			{"client", cli.state, p.serverID},
			{"server", srv.state, p.clientID},
		} {
			if side.state.DidResume != wantResumed {
				t.Errorf("connection %d, %s: resumed %v, want %v", i, side.name, side.state.DidResume, wantResumed)
			}
			if side.state.NegotiatedProtocol != meshtls.ALPN {
				t.Errorf("connection %d, %s: ALPN %q, want %q", i, side.name, side.state.NegotiatedProtocol, meshtls.ALPN)
			}
			if id, err := meshtls.PeerID(side.state); err != nil || id != side.wantID {
				t.Errorf("connection %d, %s: PeerID = %v, %v; want %s", i, side.name, id, err, side.wantID)
			}
		}
	}
}

// spyCache is a client session cache keyed by address only, as
// crypto/tls keys it, that counts the sessions it hands out.
type spyCache struct {
	tls.ClientSessionCache
	offered atomic.Int64
}

func (s *spyCache) Get(key string) (*tls.ClientSessionState, bool) {
	cs, ok := s.ClientSessionCache.Get(key)
	if ok {
		s.offered.Add(1)
	}
	return cs, ok
}

// TestResumedSessionIsVerified: a session made with a full handshake is
// resumed after what made it acceptable changed; each side checks the
// peer as on a full handshake, and refuses it. The client resumes through
// a SessionCache, as the proxy does, except where the connection expects
// another server: a SessionCache never offers the session there
// (TestSessionCacheIsPerIdentity), so a cache keyed by address alone
// stands in for one that would.
func TestResumedSessionIsVerified(t *testing.T) {
	var refuseClients atomic.Bool
	tests := []struct {
		name string
		// change is what happens between the two connections; it returns
		// the client config of the second, from the client configs of the
		// first (second wants another server ID).
		change        func(p *pki, client func(server spiffeid.ID) *tls.Config) *tls.Config
		addressKeyed  bool
		wantClientErr error  // errors.Is
		wantClient    string // in the client's error
		wantServer    string // in the server's error
	}{
		{
			name: "the client expects another server",
			change: func(p *pki, client func(spiffeid.ID) *tls.Config) *tls.Config {
				return client(p.ca.ID("shop", "payments"))
			},
			addressKeyed:  true,
			wantClientErr: meshtls.ErrUnauthorized,
			wantClient:    `server is "spiffe://cluster.local/ns/shop/sa/catalog", expected "spiffe://cluster.local/ns/shop/sa/payments"`,
		},
		{
			name: "the client's anchor left the server's bundle",
			change: func(p *pki, client func(spiffeid.ID) *tls.Config) *tls.Config {
				svid, _ := p.serverSrc.GetX509SVID()
				p.serverSrc.Set(svid, identitytest.NewCA(t).Bundle())
				return client(p.serverID)
			},
			wantServer: "could not verify leaf certificate",
		},
		{
			name: "the server's anchor left the client's bundle",
			change: func(p *pki, client func(spiffeid.ID) *tls.Config) *tls.Config {
				svid, _ := p.clientSrc.GetX509SVID()
				p.clientSrc.Set(svid, identitytest.NewCA(t).Bundle())
				return client(p.serverID)
			},
			wantClient: "could not verify leaf certificate",
		},
		{
			name: "the server no longer admits the client",
			change: func(p *pki, client func(spiffeid.ID) *tls.Config) *tls.Config {
				refuseClients.Store(true)
				return client(p.serverID)
			},
			wantServer: "refused after the first connection",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			refuseClients.Store(false)
			p := newPKI(t)
			authorize := func(id spiffeid.ID, _ [][]*x509.Certificate) error {
				if refuseClients.Load() {
					return fmt.Errorf("%w: %s refused after the first connection", meshtls.ErrUnauthorized, id)
				}
				return nil
			}
			addr, results := listen(t, meshtls.ServerConfig(p.serverSrc, p.serverSrc, authorize))
			sessions := meshtls.NewSessionCache(8)
			spy := &spyCache{ClientSessionCache: tls.NewLRUClientSessionCache(8)}
			client := func(server spiffeid.ID) *tls.Config {
				if tc.addressKeyed {
					cfg := meshtls.ClientConfig(p.clientSrc, p.clientSrc, server)
					cfg.ClientSessionCache = spy
					return cfg
				}
				return sessions.ClientConfig(p.clientSrc, p.clientSrc, server)
			}
			if cli, srv := dial(t, addr, client(p.serverID)), recv(t, results); cli.err != nil || srv.err != nil {
				t.Fatalf("first connection: client %v, server %v", cli.err, srv.err)
			}

			cli, srv := dial(t, addr, tc.change(p, client)), recv(t, results)
			if !srv.state.DidResume {
				t.Fatalf("the server did not resume the session (client %v, server %v)", cli.err, srv.err)
			}
			if tc.addressKeyed && spy.offered.Load() != 1 {
				t.Fatalf("the client offered %d sessions, want the first connection's", spy.offered.Load())
			}
			if cli.err == nil || srv.err == nil {
				t.Fatalf("resumed handshake: client %v, server %v; want both failed", cli.err, srv.err)
			}
			if tc.wantClientErr != nil && !errors.Is(cli.err, tc.wantClientErr) {
				t.Errorf("client error = %v, want %v", cli.err, tc.wantClientErr)
			}
			if tc.wantClient != "" && !strings.Contains(cli.err.Error(), tc.wantClient) {
				t.Errorf("client error = %v, want one saying %s", cli.err, tc.wantClient)
			}
			if tc.wantServer != "" && !strings.Contains(srv.err.Error(), tc.wantServer) {
				t.Errorf("server error = %v, want one saying %s", srv.err, tc.wantServer)
			}
		})
	}
}

// TestSessionCacheIsPerIdentity: a SessionCache never offers a session to
// a connection that expects another identity at the same address, so that
// connection gets a full handshake (here refused, as the server is not
// that identity), and the session stays for the next connection that
// expects the server's identity.
func TestSessionCacheIsPerIdentity(t *testing.T) {
	p := newPKI(t)
	addr, results := listen(t, meshtls.ServerConfig(p.serverSrc, p.serverSrc, nil))
	cache := meshtls.NewSessionCache(8)
	if cli, srv := dial(t, addr, cache.ClientConfig(p.clientSrc, p.clientSrc, p.serverID)), recv(t, results); cli.err != nil || srv.err != nil {
		t.Fatalf("first connection: client %v, server %v", cli.err, srv.err)
	}
	other := dial(t, addr, cache.ClientConfig(p.clientSrc, p.clientSrc, p.ca.ID("shop", "payments")))
	otherSrv := recv(t, results)
	if !errors.Is(other.err, meshtls.ErrUnauthorized) {
		t.Errorf("expecting another identity: client error %v, want ErrUnauthorized", other.err)
	}
	if otherSrv.state.DidResume {
		t.Error("expecting another identity: the server resumed the session")
	}
	again := dial(t, addr, cache.ClientConfig(p.clientSrc, p.clientSrc, p.serverID))
	if srv := recv(t, results); again.err != nil || srv.err != nil || !again.state.DidResume {
		t.Errorf("expecting the server's identity again: client %v, server %v, resumed %v; want resumed", again.err, srv.err, again.state.DidResume)
	}
}

// TestTicketKeyRotation: a ticket resumes across one rotation of the
// server's keys, and gets a full handshake after two.
func TestTicketKeyRotation(t *testing.T) {
	tests := []struct {
		rotations   int
		wantResumed bool
	}{
		{rotations: 0, wantResumed: true},
		{rotations: 1, wantResumed: true},
		{rotations: 2, wantResumed: false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d rotations", tc.rotations), func(t *testing.T) {
			p := newPKI(t)
			cfg := meshtls.ServerConfig(p.serverSrc, p.serverSrc, nil)
			keys := meshtls.NewTicketKeys(cfg)
			addr, results := listen(t, cfg)
			cache := meshtls.NewSessionCache(8)
			if cli, srv := dial(t, addr, cache.ClientConfig(p.clientSrc, p.clientSrc, p.serverID)), recv(t, results); cli.err != nil || srv.err != nil {
				t.Fatalf("first connection: client %v, server %v", cli.err, srv.err)
			}
			for range tc.rotations {
				keys.Rotate()
			}
			cli, srv := dial(t, addr, cache.ClientConfig(p.clientSrc, p.clientSrc, p.serverID)), recv(t, results)
			if cli.err != nil || srv.err != nil {
				t.Fatalf("second connection: client %v, server %v", cli.err, srv.err)
			}
			if cli.state.DidResume != tc.wantResumed || srv.state.DidResume != tc.wantResumed {
				t.Errorf("resumed: client %v, server %v; want %v", cli.state.DidResume, srv.state.DidResume, tc.wantResumed)
			}
		})
	}
}
