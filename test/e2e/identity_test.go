package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/install/cluster"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

const identityNS = "e2e-identity"

// TestCertify asks the controller's identity service for certificates
// with real ServiceAccount tokens, which it checks with a real TokenReview:
// the right token gets a SPIFFE certificate go-spiffe accepts; every bad
// request gets a clear gRPC error and no certificate.
func TestCertify(t *testing.T) {
	needEnv(t)
	t.Parallel() // alongside the other tests that leave the mesh as they found it (main_test.go)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	mustRun(t, ctx, []byte(plainNamespaceManifest(identityNS)), e2e.kubectl, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, identityNS)
	})
	for _, sa := range []string{"alice", "bob"} {
		mustRun(t, ctx, nil, e2e.kubectl, "create", "serviceaccount", "-n", identityNS, sa)
	}
	conn, bundle := dialIdentity(t, ctx)
	ids := identityv1.NewIdentityClient(conn)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	alice := spiffeid.RequireFromSegments(td, "ns", identityNS, "sa", "alice")

	aliceToken := saToken(t, ctx, "alice", names.IdentityTokenAudience, nil)
	bobToken := saToken(t, ctx, "bob", names.IdentityTokenAudience, nil)
	wrongAudience := saToken(t, ctx, "alice", "https://kubernetes.default.svc", nil)
	// A token bound to an object that is then deleted is refused by the
	// API server like an expired one. Tokens cannot be made to expire in
	// less than ten minutes, so this is the nearest real invalid token.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bound", Namespace: identityNS}}
	secret, err := e2e.client.CoreV1().Secrets(identityNS).Create(ctx, secret, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	revoked := saToken(t, ctx, "alice", names.IdentityTokenAudience, &authenticationv1.BoundObjectReference{
		Kind: "Secret", APIVersion: "v1", Name: secret.Name, UID: secret.UID})
	if err := e2e.client.CoreV1().Secrets(identityNS).Delete(ctx, secret.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		token string
		csr   []byte
		want  codes.Code
	}{
		{name: "own token", token: aliceToken, csr: csr(t, alice), want: codes.OK},
		{name: "another ServiceAccount's token", token: bobToken, csr: csr(t, alice), want: codes.PermissionDenied},
		{name: "token for another audience", token: wrongAudience, csr: csr(t, alice), want: codes.Unauthenticated},
		{name: "token bound to a deleted object", token: revoked, csr: csr(t, alice), want: codes.Unauthenticated},
		{name: "CSR with an extra URI SAN", token: aliceToken, csr: csr(t, alice, withURI("spiffe://cluster.local/ns/kube-system/sa/admin")), want: codes.InvalidArgument},
		{name: "CSR with a DNS name", token: aliceToken, csr: csr(t, alice, withDNS("kubernetes.default.svc")), want: codes.InvalidArgument},
		{name: "malformed CSR", token: aliceToken, csr: []byte("not a CSR"), want: codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ids.Certify(ctx, &identityv1.CertifyRequest{
				Identity: alice.String(), Token: []byte(tc.token), CertificateSigningRequest: tc.csr})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("Certify: %v, want %s", err, tc.want)
			}
			if tc.want != codes.OK {
				if res != nil {
					t.Errorf("a refused request got a response: %v", res)
				}
				t.Logf("refused: %v", err)
				return
			}
			leaf, err := x509.ParseCertificate(res.GetLeafCertificate())
			if err != nil {
				t.Fatal(err)
			}
			chain := []*x509.Certificate{leaf}
			for _, der := range res.GetIntermediateCertificates() {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					t.Fatal(err)
				}
				chain = append(chain, c)
			}
			id, _, err := x509svid.Verify(chain, bundle)
			if err != nil || id != alice {
				t.Fatalf("go-spiffe verifies the leaf as %v (%v), want %s", id, err, alice)
			}
			t.Logf("issued %s, valid until %s", id, leaf.NotAfter.Format(time.RFC3339))
		})
	}
}

// dialIdentity connects to the controller pod's identity port from the
// node's network namespace, checking the server is the controller by its
// SPIFFE ID against the trust roots mesh install published.
func dialIdentity(t *testing.T, ctx context.Context) (*grpc.ClientConn, *x509bundle.Set) {
	t.Helper()
	cm, err := e2e.client.CoreV1().ConfigMaps(manifests.DefaultNamespace).Get(ctx, manifests.TrustRootsConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	roots, err := x509bundle.Parse(td, []byte(cm.Data[manifests.TrustRootsKey]))
	if err != nil {
		t.Fatal(err)
	}
	pods, err := e2e.client.CoreV1().Pods(manifests.DefaultNamespace).List(ctx,
		metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + manifests.ControllerName})
	if err != nil || len(pods.Items) == 0 || pods.Items[0].Status.PodIP == "" {
		t.Fatalf("controller pod: %v (%d pods)", err, len(pods.Items))
	}
	controller := spiffeid.RequireFromSegments(td, "ns", manifests.DefaultNamespace, "sa", names.ControllerServiceAccount)
	dial := cluster.DialInNetns("/var/run/netns/" + cluster.DefaultName)
	conn, err := grpc.NewClient("passthrough:///"+net.JoinHostPort(pods.Items[0].Status.PodIP, "8080"),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) }),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(roots, tlsconfig.AuthorizeID(controller)))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, x509bundle.NewSet(roots)
}

// saToken asks the API server for a token of ServiceAccount sa.
func saToken(t *testing.T, ctx context.Context, sa, audience string, bound *authenticationv1.BoundObjectReference) string {
	t.Helper()
	ttl := int64(600)
	tr, err := e2e.client.CoreV1().ServiceAccounts(identityNS).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &ttl, BoundObjectRef: bound},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

type csrOption func(*x509.CertificateRequest)

func withURI(u string) csrOption {
	return func(r *x509.CertificateRequest) {
		parsed, _ := url.Parse(u)
		r.URIs = append(r.URIs, parsed)
	}
}

func withDNS(name string) csrOption {
	return func(r *x509.CertificateRequest) { r.DNSNames = append(r.DNSNames, name) }
}

// csr is a P-256 CSR for id, as a proxy makes it, changed by opts.
func csr(t *testing.T, id spiffeid.ID, opts ...csrOption) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}
	for _, o := range opts {
		o(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
