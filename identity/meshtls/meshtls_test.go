package meshtls_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/identity/client/clienttest"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/identity/meshtls"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// pki is a trust domain with a server and a client proxy in it.
type pki struct {
	ca                   *identitytest.CA
	serverID, clientID   spiffeid.ID
	serverSrc, clientSrc *clienttest.Source
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	c := identitytest.NewCA(t)
	p := &pki{ca: c, serverID: c.ID("shop", "catalog"), clientID: c.ID("shop", "web")}
	p.serverSrc = clienttest.NewSource(c.IssueSVID(t, p.serverID), c.Bundle())
	p.clientSrc = clienttest.NewSource(c.IssueSVID(t, p.clientID), c.Bundle())
	return p
}

// result is what one side saw of a handshake.
type result struct {
	state tls.ConnectionState
	err   error
}

// listen serves TLS with cfg on 127.0.0.1:0 until the test ends: each
// connection is handshaken, answered with "ok" and closed, and its result
// sent on the returned channel.
func listen(t *testing.T, cfg *tls.Config) (string, <-chan result) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan result, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			conn := tls.Server(raw, cfg)
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			err = conn.Handshake()
			if err == nil {
				_, err = conn.Write([]byte("ok"))
			}
			results <- result{conn.ConnectionState(), err}
			conn.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String(), results
}

// dial handshakes with addr using cfg and reads the server's "ok", which in
// TLS 1.3 is where a client learns that the server refused its
// certificate.
func dial(t *testing.T, addr string, cfg *tls.Config) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return result{err: err}
	}
	defer c.Close()
	conn := c.(*tls.Conn)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(conn)
	if err == nil && string(b) != "ok" {
		err = errors.New("server sent " + string(b))
	}
	return result{conn.ConnectionState(), err}
}

func recv(t *testing.T, results <-chan result) result {
	t.Helper()
	select {
	case r := <-results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("server saw no connection in 10s")
		return result{}
	}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	addr, results := listen(t, meshtls.ServerConfig(p.serverSrc, p.serverSrc, nil))

	cli := dial(t, addr, meshtls.ClientConfig(p.clientSrc, p.clientSrc, p.serverID))
	srv := recv(t, results)
	if cli.err != nil || srv.err != nil {
		t.Fatalf("handshake: client %v, server %v", cli.err, srv.err)
	}
	for _, side := range []struct {
		name   string
		state  tls.ConnectionState
		wantID spiffeid.ID
	}{
		{"client", cli.state, p.serverID},
		{"server", srv.state, p.clientID},
	} {
		if side.state.Version != tls.VersionTLS13 {
			t.Errorf("%s: TLS version %x, want 1.3", side.name, side.state.Version)
		}
		if side.state.NegotiatedProtocol != meshtls.ALPN {
			t.Errorf("%s: ALPN %q, want %q", side.name, side.state.NegotiatedProtocol, meshtls.ALPN)
		}
		if id, err := meshtls.PeerID(side.state); err != nil || id != side.wantID {
			t.Errorf("%s: PeerID = %v, %v; want %s", side.name, id, err, side.wantID)
		}
	}
}

func TestRefusedHandshakes(t *testing.T) {
	p := newPKI(t)
	stranger := identitytest.NewCA(t) // same trust domain name, another anchor
	foreign := identitytest.NewCA(t, identitytest.WithTrustDomain("partner.example"))
	strangerSVID := stranger.IssueSVID(t, stranger.ID("shop", "web"))
	foreignSVID := foreign.IssueSVID(t, foreign.ID("shop", "web"))
	// The server trusts the partner's anchor too, so only authorization
	// keeps its workloads out.
	both := x509bundle.NewSet(p.ca.Bundle(), foreign.Bundle())

	tests := []struct {
		name          string
		client        *tls.Config
		wantClientErr string
		wantServerErr string
	}{
		{
			name:          "client expects another server",
			client:        meshtls.ClientConfig(p.clientSrc, p.clientSrc, p.ca.ID("shop", "payments")),
			wantClientErr: `server is "spiffe://cluster.local/ns/shop/sa/catalog", expected "spiffe://cluster.local/ns/shop/sa/payments"`,
			wantServerErr: "",
		},
		{
			name:          "client without certificate",
			client:        &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: []string{meshtls.ALPN}},
			wantServerErr: "client didn't provide a certificate",
		},
		{
			name:          "client certificate from another anchor",
			client:        meshtls.ClientConfig(strangerSVID, p.clientSrc, p.serverID),
			wantServerErr: "could not verify leaf certificate",
		},
		{
			name:          "client from another trust domain",
			client:        meshtls.ClientConfig(foreignSVID, p.clientSrc, p.serverID),
			wantServerErr: `not in trust domain "cluster.local"`,
		},
		{
			name:          "TLS 1.2 client",
			client:        tls12(meshtls.ClientConfig(p.clientSrc, p.clientSrc, p.serverID)),
			wantServerErr: "unsupported versions",
		},
	}
	addr, results := listen(t, meshtls.ServerConfig(p.serverSrc, both, nil))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cli := dial(t, addr, tc.client)
			srv := recv(t, results)
			if cli.err == nil {
				t.Error("client: connected")
			}
			if tc.wantClientErr != "" && (cli.err == nil || !strings.Contains(cli.err.Error(), tc.wantClientErr)) {
				t.Errorf("client error = %v, want one saying %s", cli.err, tc.wantClientErr)
			}
			if srv.err == nil {
				t.Error("server: accepted")
			}
			if tc.wantServerErr != "" && (srv.err == nil || !strings.Contains(srv.err.Error(), tc.wantServerErr)) {
				t.Errorf("server error = %v, want one saying %s", srv.err, tc.wantServerErr)
			}
		})
	}
}

// tls12 limits cfg to TLS 1.2, which mesh TLS refuses.
func tls12(cfg *tls.Config) *tls.Config {
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	return cfg
}

func TestRefusalsAreTyped(t *testing.T) {
	p := newPKI(t)
	addr, results := listen(t, meshtls.ServerConfig(p.serverSrc, p.serverSrc, nil))
	cli := dial(t, addr, meshtls.ClientConfig(p.clientSrc, p.clientSrc, p.clientID))
	recv(t, results)
	if !errors.Is(cli.err, meshtls.ErrUnauthorized) {
		t.Errorf("client error = %v, want ErrUnauthorized", cli.err)
	}
	if _, err := meshtls.PeerID(tls.ConnectionState{}); !errors.Is(err, meshtls.ErrNoPeerCertificate) {
		t.Errorf("PeerID without certificates: %v, want ErrNoPeerCertificate", err)
	}
}

// TestRotationUnderOpenListener rotates both proxies' certificates while
// the listener stays up: the next handshakes present the new ones.
func TestRotationUnderOpenListener(t *testing.T) {
	p := newPKI(t)
	addr, results := listen(t, meshtls.ServerConfig(p.serverSrc, p.serverSrc, nil))
	clientCfg := func() *tls.Config { return meshtls.ClientConfig(p.clientSrc, p.clientSrc, p.serverID) }

	before := dial(t, addr, clientCfg())
	beforeSrv := recv(t, results)
	if before.err != nil || beforeSrv.err != nil {
		t.Fatalf("first handshake: client %v, server %v", before.err, beforeSrv.err)
	}

	newServer := p.ca.IssueSVID(t, p.serverID)
	newClient := p.ca.IssueSVID(t, p.clientID)
	p.serverSrc.Set(newServer, p.ca.Bundle())
	p.clientSrc.Set(newClient, p.ca.Bundle())

	after := dial(t, addr, clientCfg())
	afterSrv := recv(t, results)
	if after.err != nil || afterSrv.err != nil {
		t.Fatalf("handshake after rotation: client %v, server %v", after.err, afterSrv.err)
	}
	if !after.state.PeerCertificates[0].Equal(newServer.Certificates[0]) {
		t.Error("the client saw the old server certificate after rotation")
	}
	if !afterSrv.state.PeerCertificates[0].Equal(newClient.Certificates[0]) {
		t.Error("the server saw the old client certificate after rotation")
	}
}

// TestBundleRotationUnderOpenListener drops the client's anchor from the
// server's bundle: the next handshake is refused without a restart.
func TestBundleRotationUnderOpenListener(t *testing.T) {
	p := newPKI(t)
	addr, results := listen(t, meshtls.ServerConfig(p.serverSrc, p.serverSrc, nil))
	clientCfg := meshtls.ClientConfig(p.clientSrc, p.clientSrc, p.serverID)
	if r, s := dial(t, addr, clientCfg), recv(t, results); r.err != nil || s.err != nil {
		t.Fatalf("first handshake: client %v, server %v", r.err, s.err)
	}
	next := identitytest.NewCA(t)
	svid, _ := p.serverSrc.GetX509SVID()
	p.serverSrc.Set(svid, next.Bundle())
	if r, s := dial(t, addr, clientCfg), recv(t, results); r.err == nil || s.err == nil {
		t.Fatalf("handshake after the anchor left the bundle: client %v, server %v; want both refused", r.err, s.err)
	}
}

// TestSpiffeTLSInterop connects go-spiffe's own spiffetls to our configs,
// in both directions.
func TestSpiffeTLSInterop(t *testing.T) {
	p := newPKI(t)
	addr, results := listen(t, meshtls.ServerConfig(p.serverSrc, p.serverSrc, nil))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	clientSVID, _ := p.clientSrc.GetX509SVID()

	t.Run("spiffetls client, our server", func(t *testing.T) {
		conn, err := spiffetls.DialWithMode(ctx, "tcp", addr,
			spiffetls.MTLSClientWithRawConfig(tlsconfig.AuthorizeID(p.serverID), clientSVID, p.ca.Bundle()))
		if err != nil {
			t.Fatalf("spiffetls.DialWithMode: %v", err)
		}
		defer conn.Close()
		if b, err := io.ReadAll(conn); err != nil || string(b) != "ok" {
			t.Fatalf("read %q, %v", b, err)
		}
		srv := recv(t, results)
		if id, err := meshtls.PeerID(srv.state); err != nil || id != p.clientID {
			t.Errorf("server: PeerID = %v, %v; want %s", id, err, p.clientID)
		}
		if id, err := spiffetls.PeerIDFromConn(conn); err != nil || id != p.serverID {
			t.Errorf("spiffetls.PeerIDFromConn = %v, %v; want %s", id, err, p.serverID)
		}
	})

	t.Run("spiffetls client expecting another ID", func(t *testing.T) {
		conn, err := spiffetls.DialWithMode(ctx, "tcp", addr,
			spiffetls.MTLSClientWithRawConfig(tlsconfig.AuthorizeID(p.ca.ID("shop", "payments")), clientSVID, p.ca.Bundle()))
		if err == nil {
			conn.Close()
			t.Fatal("spiffetls connected to a server of another ID")
		}
		recv(t, results)
	})

	t.Run("our client, spiffetls server", func(t *testing.T) {
		serverSVID, _ := p.serverSrc.GetX509SVID()
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := spiffetls.NewListenerWithMode(ctx, inner,
			spiffetls.MTLSServerWithRawConfig(tlsconfig.AuthorizeID(p.clientID), serverSVID, p.ca.Bundle()))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		served := make(chan error, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				served <- err
				return
			}
			defer conn.Close()
			_, err = conn.Write([]byte("ok"))
			served <- err
		}()
		cli := dial(t, ln.Addr().String(), meshtls.ClientConfig(p.clientSrc, p.clientSrc, p.serverID))
		if err := <-served; cli.err != nil || err != nil {
			t.Fatalf("client %v, spiffetls server %v", cli.err, err)
		}
		if id, err := meshtls.PeerID(cli.state); err != nil || id != p.serverID {
			t.Errorf("PeerID = %v, %v; want %s", id, err, p.serverID)
		}
	})
}

func TestOffersMesh(t *testing.T) {
	tests := []struct {
		protos []string
		want   bool
	}{
		{nil, false},
		{[]string{"h2", "http/1.1"}, false},
		{[]string{meshtls.ALPN}, true},
		{[]string{"h2", meshtls.ALPN}, true},
	}
	for _, tc := range tests {
		if got := meshtls.OffersMesh(tc.protos); got != tc.want {
			t.Errorf("OffersMesh(%q) = %v, want %v", tc.protos, got, tc.want)
		}
	}
}
