package certify_test

import (
	"bytes"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/identity/ca"
	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/identity/pki"
)

// recvBundle waits for the next bundle on stream and checks it holds
// exactly roots.
func recvBundle(t *testing.T, stream grpc.ServerStreamingClient[identityv1.TrustBundle], roots ...*x509.Certificate) {
	t.Helper()
	got, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if got.GetTrustDomain() != "cluster.local" {
		t.Errorf("trust domain %q, want cluster.local", got.GetTrustDomain())
	}
	if len(got.GetX509Authorities()) != len(roots) {
		t.Fatalf("bundle has %d authorities, want %d", len(got.GetX509Authorities()), len(roots))
	}
	for i, r := range roots {
		if !bytes.Equal(got.GetX509Authorities()[i], r.Raw) {
			t.Errorf("authority %d is not the expected root", i)
		}
	}
}

// certifyWeb asks for the web identity and returns the leaf, verified
// against the bundle that came with it.
func certifyWeb(t *testing.T, e *env) *x509.Certificate {
	t.Helper()
	id := e.pki.ID("shop", "web")
	csr, key := identitytest.NewCSR(t, id)
	resp, err := e.client.Certify(t.Context(), &identityv1.CertifyRequest{
		Identity: id.String(), Token: []byte(tokenWeb), CertificateSigningRequest: csr,
	})
	if err != nil {
		t.Fatalf("Certify: %v", err)
	}
	return verified(t, resp, id, key)
}

// TestRotation replaces the Secret's files the way kubelet does, through
// an issuer rotation, a trust anchor rotation and a corrupt update, and
// checks what Certify signs with and what WatchTrustBundle sends.
func TestRotation(t *testing.T) {
	e := newEnv(t, envOptions{})
	stream, err := e.client.WatchTrustBundle(t.Context(), &identityv1.WatchTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	oldRoot := e.pki.Root
	recvBundle(t, stream, oldRoot) // at once

	// A new issuer under the same anchor: new leaves come from it, and no
	// bundle is sent, as the next Recv shows.
	e.pki = e.pki.RotateIssuer(t)
	e.pki.WriteSecret(t, e.dir)
	if err := e.server.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := certifyWeb(t, e).CheckSignatureFrom(e.pki.Issuer); err != nil {
		t.Errorf("leaf after issuer rotation not signed by the new issuer: %v", err)
	}

	// A new anchor and issuer, with the old anchor still trusted while
	// proxies move over: the stream sends both.
	e.pki = identitytest.NewCA(t)
	files := e.pki.SecretFiles(t)
	files[ca.AnchorsFile] = pki.EncodeCerts(e.pki.Root, oldRoot)
	e.dir.Write(t, files)
	if err := e.server.Reload(); err != nil {
		t.Fatal(err)
	}
	recvBundle(t, stream, e.pki.Root, oldRoot)
	if err := certifyWeb(t, e).CheckSignatureFrom(e.pki.Issuer); err != nil {
		t.Errorf("leaf after anchor rotation not signed by the new issuer: %v", err)
	}

	// A corrupt update keeps the issuer and the bundle.
	corrupt := e.pki.SecretFiles(t)
	corrupt[ca.CertFile] = []byte("not PEM")
	corrupt[ca.AnchorsFile] = files[ca.AnchorsFile]
	e.dir.Write(t, corrupt)
	if err := e.server.Reload(); err == nil {
		t.Fatal("Reload accepted a corrupt tls.crt")
	}
	if err := certifyWeb(t, e).CheckSignatureFrom(e.pki.Issuer); err != nil {
		t.Errorf("leaf after a corrupt update not signed by the kept issuer: %v", err)
	}

	// The old anchor retired.
	e.pki.WriteSecret(t, e.dir)
	if err := e.server.Reload(); err != nil {
		t.Fatal(err)
	}
	recvBundle(t, stream, e.pki.Root)
	if got := e.counter("mesh_identity_trust_bundle_watchers", ""); got != 1 {
		t.Errorf("watchers gauge = %v, want 1", got)
	}
}

// TestRunFollowsFiles lets Run's poll notice the update, as in production.
func TestRunFollowsFiles(t *testing.T) {
	e := newEnv(t, envOptions{cfg: certify.Config{PollInterval: 10 * time.Millisecond}})
	stream, err := e.client.WatchTrustBundle(t.Context(), &identityv1.WatchTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvBundle(t, stream, e.pki.Root)
	e.pki = identitytest.NewCA(t)
	e.pki.WriteSecret(t, e.dir)
	recvBundle(t, stream, e.pki.Root) // Recv waits for the poll
	if err := certifyWeb(t, e).CheckSignatureFrom(e.pki.Issuer); err != nil {
		t.Errorf("leaf not signed by the new issuer: %v", err)
	}
}

// TestRunEndsStreams: when Run returns, open streams end with UNAVAILABLE,
// so the client reconnects and a graceful stop does not hang on them.
func TestRunEndsStreams(t *testing.T) {
	e := newEnv(t, envOptions{})
	stream, err := e.client.WatchTrustBundle(t.Context(), &identityv1.WatchTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvBundle(t, stream, e.pki.Root)
	e.stopRun()
	_, err = stream.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable {
		t.Fatalf("Recv after Run ended = %v, want Unavailable", err)
	}
}

// TestTLS serves the API over TLS with the server's own SVID and has a
// proxy-like client check it with go-spiffe against the trust bundle alone.
func TestTLS(t *testing.T) {
	e := newEnv(t, envOptions{})
	controller := e.pki.ID("mesh-system", "mesh-controller")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(e.server.TLSConfig(controller))))
	e.server.Register(gs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() { gs.Stop(); <-served })

	dial := func(want spiffeid.ID) identityv1.IdentityClient {
		cfg := tlsconfig.TLSClientConfig(e.pki.Bundle(), tlsconfig.AuthorizeID(want))
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return identityv1.NewIdentityClient(conn)
	}
	id := e.pki.ID("shop", "web")
	csr, key := identitytest.NewCSR(t, id)
	req := &identityv1.CertifyRequest{Identity: id.String(), Token: []byte(tokenWeb), CertificateSigningRequest: csr}
	resp, err := dial(controller).Certify(t.Context(), req)
	if err != nil {
		t.Fatalf("Certify over TLS: %v", err)
	}
	verified(t, resp, id, key)

	// A client expecting another server identity refuses the handshake,
	// so its token is never sent.
	_, err = dial(e.pki.ID("mesh-system", "impostor")).Certify(t.Context(), req)
	if st := status.Convert(err); st.Code() != codes.Unavailable {
		t.Fatalf("Certify to the wrong server identity = %v, want Unavailable", err)
	}
	if got := e.issued(); got != 1 {
		t.Errorf("issued = %v, want 1", got)
	}
}
