package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authnv1 "k8s.io/api/authentication/v1"
	k8stesting "k8s.io/client-go/testing"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/identity/client"
	"github.com/mesh-dev/mesh/internal/names"
)

// TestController goes through the lab's control plane as the client
// proxy does, on loopback: a certificate from the identity service for
// the pod's token, then, over mesh TLS with it, the server pod's IP from
// the destination service, which must name the server's identity (what
// makes the proxy speak mesh TLS to it), and the pod's inbound policy.
func TestController(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca, err := newLabPKI(td)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.writeIssuer(filepath.Join(dir, "issuer")); err != nil {
		t.Fatal(err)
	}
	cfg := controllerConfig{
		IssuerDir: filepath.Join(dir, "issuer"), TrustDomain: td.Name(),
		IdentityAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
		Pods: []podSpec{
			{Name: "client", Namespace: "bench", ServiceAccount: "client", IP: "10.252.0.2", Port: 8080, Token: "client-token"},
			{Name: "server", Namespace: "bench", ServiceAccount: "server", IP: "10.252.0.3", Port: 8080, Token: "server-token"},
		},
	}
	ctx, cancel := context.WithCancel(t.Context())
	type addrs struct{ identity, api net.Addr }
	ready := make(chan addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- runController(ctx, cfg, slog.New(slog.NewTextHandler(t.Output(), nil)), func(identity, api net.Addr) {
			ready <- addrs{identity, api}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runController: %v", err)
		}
	})
	var a addrs
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("runController: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the control plane was not ready after 20s")
	}

	anchors, err := x509bundle.Parse(td, ca.anchorsPEM())
	if err != nil {
		t.Fatal(err)
	}
	ctl := controllerID(td)
	idConn, err := grpc.NewClient(a.identity.String(), grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.TLSClientConfig(anchors, tlsconfig.AuthorizeID(ctl)))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idConn.Close() })
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("client-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := client.New(client.Config{TrustDomain: td.Name(), Namespace: "bench", ServiceAccount: "client", TokenPath: token, Conn: idConn})
	if err != nil {
		t.Fatal(err)
	}
	srcDone := make(chan struct{})
	go func() { src.Run(ctx); close(srcDone) }()
	t.Cleanup(func() { cancel(); <-srcDone })
	select {
	case <-src.Ready():
	case <-time.After(20 * time.Second):
		t.Fatalf("no certificate for the client pod's token after 20s: %v", src.Health())
	}

	apiConn, err := grpc.NewClient(a.api.String(), grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(ctl)))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { apiConn.Close() })
	callCtx, callCancel := context.WithTimeout(ctx, 20*time.Second)
	defer callCancel()
	stream, err := destinationv1.NewDestinationClient(apiConn).Get(callCtx, &destinationv1.GetDestinationRequest{Authority: "10.252.0.3:8080"})
	if err != nil {
		t.Fatal(err)
	}
	u, err := stream.Recv()
	if err != nil {
		t.Fatalf("destination of the server pod's IP: %v", err)
	}
	eps := u.GetAdd().GetEndpoints()
	if len(eps) != 1 || eps[0].GetAddress() != "10.252.0.3:8080" || eps[0].GetIdentity() != "spiffe://cluster.local/ns/bench/sa/server" {
		t.Errorf("destination of 10.252.0.3:8080: %v; want that address with the server's identity", u)
	}
	policy, err := inboundv1.NewInboundPolicyClient(apiConn).Watch(callCtx, &inboundv1.WatchRequest{Namespace: "bench", Pod: "client"})
	if err != nil {
		t.Fatal(err)
	}
	pp, err := policy.Recv()
	if err != nil {
		t.Fatalf("inbound policy of the client pod: %v", err)
	}
	if pp.GetDefaultPolicy() != names.DefaultInboundPolicy {
		t.Errorf("the client pod's default inbound policy is %q, want the install default %q", pp.GetDefaultPolicy(), names.DefaultInboundPolicy)
	}
}

func TestReviewTokens(t *testing.T) {
	review := reviewTokens([]podSpec{{Name: "server-0", Namespace: "bench", ServiceAccount: "server", Token: "s3cret"}})
	tests := []struct {
		name, token, audience string
		wantUser              string // "" means not authenticated
	}{
		{name: "the pod's token", token: "s3cret", audience: names.IdentityTokenAudience, wantUser: "system:serviceaccount:bench:server"},
		{name: "another audience", token: "s3cret", audience: "https://kubernetes.default.svc"},
		{name: "unknown token", token: "guess", audience: names.IdentityTokenAudience},
		{name: "empty token", token: "", audience: names.IdentityTokenAudience},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: tc.token, Audiences: []string{tc.audience}}}
			handled, obj, err := review(k8stesting.NewRootCreateAction(authnv1.SchemeGroupVersion.WithResource("tokenreviews"), in))
			if !handled || err != nil {
				t.Fatalf("handled %v, err %v", handled, err)
			}
			st := obj.(*authnv1.TokenReview).Status
			if st.Authenticated != (tc.wantUser != "") || st.User.Username != tc.wantUser {
				t.Errorf("status %+v, want user %q", st, tc.wantUser)
			}
			if st.Authenticated && st.User.Extra["authentication.kubernetes.io/pod-name"][0] != "server-0" {
				t.Errorf("status %+v: not bound to the pod", st)
			}
		})
	}
}
