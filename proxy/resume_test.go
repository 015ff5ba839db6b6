package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/identity/meshtls"
)

// TestMeshTLSResumes: a proxy's second mesh TLS connection to the same
// peer resumes the first one's session, on the identities both proxies got
// from the identity service, and each side still sees the other's ID; a
// connection that expects another identity of the same peer gets no
// resumption, and is refused.
func TestMeshTLSResumes(t *testing.T) {
	pki := startPKI(t)
	client := startProxy(t, "127.0.0.1:1", pki.withIdentity(t, "shop", "web"))
	server := startProxy(t, "127.0.0.1:1", pki.withIdentity(t, "shop", "api"))
	waitReady(t, client)
	waitReady(t, server)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type accepted struct {
		state tls.ConnectionState
		err   error
	}
	results := make(chan accepted, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(raw, server.id.serverTLS())
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			err = tc.Handshake()
			if err == nil {
				_, err = tc.Write([]byte("x")) // carries the session ticket with it
			}
			results <- accepted{tc.ConnectionState(), err}
			tc.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})

	api, web := pki.ca.ID("shop", "api").String(), pki.ca.ID("shop", "web").String()
	connect := func(peer string) (tls.ConnectionState, accepted, error) {
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		c, err := client.id.clientHandshake(ctx, raw, peer)
		var state tls.ConnectionState
		if err == nil {
			state = c.(*tls.Conn).ConnectionState()
			_, err = c.Read(make([]byte, 1))
		}
		return state, <-results, err
	}
	for i, wantResumed := range []bool{false, true} {
		cli, srv, err := connect(api)
		if err != nil || srv.err != nil {
			t.Fatalf("connection %d: client %v, server %v", i, err, srv.err)
		}
		if cli.DidResume != wantResumed || srv.state.DidResume != wantResumed {
			t.Errorf("connection %d resumed: client %v, server %v; want %v", i, cli.DidResume, srv.state.DidResume, wantResumed)
		}
		if id, err := meshtls.PeerID(cli); err != nil || id.String() != api {
			t.Errorf("connection %d: the client saw %v, %v; want %s", i, id, err, api)
		}
		if id, err := meshtls.PeerID(srv.state); err != nil || id.String() != web {
			t.Errorf("connection %d: the server saw %v, %v; want %s", i, id, err, web)
		}
	}
	if _, srv, err := connect(pki.ca.ID("shop", "payments").String()); err == nil || srv.state.DidResume {
		t.Errorf("expecting another identity: client %v, server resumed %v; want a refused full handshake", err, srv.state.DidResume)
	}
}
