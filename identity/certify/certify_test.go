package certify_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/identity/ca"
	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

// verified checks resp as a proxy would: the leaf and intermediates verify
// with go-spiffe against the bundle sent along, as id, for key.
func verified(t *testing.T, resp *identityv1.CertifyResponse, id spiffeid.ID, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	leaf, err := verify(resp, id, key)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// verify is verified for goroutines other than the test's.
func verify(resp *identityv1.CertifyResponse, id spiffeid.ID, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	td, err := spiffeid.TrustDomainFromString(resp.GetTrustBundle().GetTrustDomain())
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	bundle, err := x509bundle.ParseRaw(td, concat(resp.GetTrustBundle().GetX509Authorities()))
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	chain := append([][]byte{resp.GetLeafCertificate()}, resp.GetIntermediateCertificates()...)
	got, _, err := x509svid.ParseAndVerify(chain, x509bundle.NewSet(bundle))
	if err != nil {
		return nil, fmt.Errorf("go-spiffe refuses the issued chain: %w", err)
	}
	if got != id {
		return nil, fmt.Errorf("issued ID = %q, want %q", got, id)
	}
	leaf, err := x509.ParseCertificate(resp.GetLeafCertificate())
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, errors.New("the leaf certifies another key than the CSR's")
	}
	if !resp.GetValidUntil().AsTime().Equal(leaf.NotAfter) {
		return nil, fmt.Errorf("valid_until = %s, leaf NotAfter = %s", resp.GetValidUntil().AsTime(), leaf.NotAfter)
	}
	return leaf, nil
}

func concat(bs [][]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestCertifyIssues(t *testing.T) {
	e := newEnv(t, envOptions{})
	now := time.Now().Truncate(time.Second)
	e.clock.Set(now)
	id := e.pki.ID("shop", "web")
	csr, key := identitytest.NewCSR(t, id)

	resp, err := e.client.Certify(t.Context(), &identityv1.CertifyRequest{
		Identity: id.String(), Token: []byte(tokenWeb), CertificateSigningRequest: csr,
	})
	if err != nil {
		t.Fatalf("Certify: %v", err)
	}
	leaf := verified(t, resp, id, key)
	if got := len(resp.GetIntermediateCertificates()); got != 1 {
		t.Errorf("%d intermediates, want the issuer alone", got)
	}
	if !leaf.NotBefore.Equal(now.Add(-ca.Backdate)) || !leaf.NotAfter.Equal(now.Add(ca.DefaultLifetime)) {
		t.Errorf("validity %s..%s, want %s..%s", leaf.NotBefore, leaf.NotAfter, now.Add(-ca.Backdate), now.Add(ca.DefaultLifetime))
	}
	if got := e.issued(); got != 1 {
		t.Errorf("issued counter = %v, want 1", got)
	}
	if got := e.reviewer.audiences; len(got) != 1 || got[0] != certify.DefaultAudience {
		t.Errorf("reviewed for audiences %q, want [%q]", got, certify.DefaultAudience)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"msg":"certificate issued"`) || !strings.Contains(logs, id.String()) || !strings.Contains(logs, "web-5d8f-abcde") {
		t.Errorf("no issuance log line with the identity and pod:\n%s", logs)
	}
	if strings.Contains(logs, tokenWeb) {
		t.Error("the token was logged")
	}
}

// csrWith makes a CSR from tmpl with a new P-256 key.
func csrWith(t *testing.T, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestCertifyDenied(t *testing.T) {
	e := newEnv(t, envOptions{})
	web := e.pki.ID("shop", "web")
	webURI := []*url.URL{web.URL()}
	good, _ := identitytest.NewCSR(t, web)
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-1] ^= 1
	other := spiffeid.RequireFromString("spiffe://other.example/ns/shop/sa/web")
	otherCSR, _ := identitytest.NewCSR(t, other)
	adminCSR, _ := identitytest.NewCSR(t, e.pki.ID("shop", "admin"))

	tests := []struct {
		name     string
		identity string // "" means web
		token    string
		csr      []byte
		code     codes.Code
		reason   string
		msg      string // in the status message
		reviewed bool   // a TokenReview was made
	}{
		{"token of another ServiceAccount", "", tokenAdmin, good, codes.PermissionDenied, certify.ReasonWrongIdentity, "ServiceAccount shop/admin", true},
		{"token of a person", "", tokenUser, good, codes.PermissionDenied, certify.ReasonWrongIdentity, "not a ServiceAccount", true},
		{"token rejected", "", "forged", good, codes.Unauthenticated, certify.ReasonUnauthenticated, "token not accepted", true},
		{"token expired", "", tokenExpired, good, codes.Unauthenticated, certify.ReasonUnauthenticated, "has expired", true},
		{"no token", "", "", good, codes.Unauthenticated, certify.ReasonUnauthenticated, "projected ServiceAccount token", false},
		{"CSR with an extra URI SAN", "", tokenWeb, csrWith(t, &x509.CertificateRequest{URIs: append(webURI, &url.URL{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/shop/sa/admin"})}), codes.InvalidArgument, certify.ReasonBadCSR, "2 URI SANs", false},
		{"CSR with a DNS name", "", tokenWeb, csrWith(t, &x509.CertificateRequest{URIs: webURI, DNSNames: []string{"web.shop.svc.cluster.local"}}), codes.InvalidArgument, certify.ReasonBadCSR, "DNS names", false},
		{"CSR with an IP", "", tokenWeb, csrWith(t, &x509.CertificateRequest{URIs: webURI, IPAddresses: []net.IP{net.IPv4(10, 1, 2, 3)}}), codes.InvalidArgument, certify.ReasonBadCSR, "IP addresses", false},
		{"CSR with no SAN", "", tokenWeb, csrWith(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: web.String()}}), codes.InvalidArgument, certify.ReasonBadCSR, "no URI SAN", false},
		{"malformed CSR", "", tokenWeb, []byte("-----BEGIN CERTIFICATE REQUEST-----"), codes.InvalidArgument, certify.ReasonBadCSR, "malformed certificate signing request", false},
		{"no CSR", "", tokenWeb, nil, codes.InvalidArgument, certify.ReasonBadCSR, "empty", false},
		{"CSR with a bad signature", "", tokenWeb, badSig, codes.InvalidArgument, certify.ReasonBadCSR, "signature is invalid", false},
		{"CSR for another identity", "", tokenWeb, adminCSR, codes.InvalidArgument, certify.ReasonBadCSR, "asks for another identity", false},
		{"identity in another trust domain", other.String(), tokenWeb, otherCSR, codes.InvalidArgument, certify.ReasonForeignDomain, "another trust domain", false},
		{"identity not a SPIFFE ID", "shop/web", tokenWeb, good, codes.InvalidArgument, certify.ReasonBadIdentity, "malformed identity", false},
		{"identity not of a ServiceAccount", "spiffe://cluster.local/web", tokenWeb, good, codes.InvalidArgument, certify.ReasonBadIdentity, "/ns/<namespace>/sa/<serviceaccount>", false},
		{"identity too long", "spiffe://cluster.local/ns/shop/sa/" + strings.Repeat("w", 3000), tokenWeb, good, codes.InvalidArgument, certify.ReasonBadIdentity, "at most 2048", false},
		{"API server down", "", tokenUnavailable, good, codes.Unavailable, certify.ReasonReviewUnavailable, "retry", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			identity := tc.identity
			if identity == "" {
				identity = web.String()
			}
			deniedBefore, reviewsBefore := e.denied(tc.reason), e.reviewer.callCount()
			resp, err := e.client.Certify(t.Context(), &identityv1.CertifyRequest{
				Identity: identity, Token: []byte(tc.token), CertificateSigningRequest: tc.csr,
			})
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("Certify = %v, %q; want %v with %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			t.Logf("%v: %s", st.Code(), st.Message())
			if resp != nil {
				t.Error("a response came with the error")
			}
			if got := e.denied(tc.reason) - deniedBefore; got != 1 {
				t.Errorf("denied{reason=%q} grew by %v, want 1", tc.reason, got)
			}
			if got := e.reviewer.callCount() > reviewsBefore; got != tc.reviewed {
				t.Errorf("TokenReview made = %v, want %v", got, tc.reviewed)
			}
		})
	}
	if got := e.issued(); got != 0 {
		t.Errorf("issued counter = %v after only bad requests", got)
	}
	checkDenialLogs(t, e, len(tests))
}

// checkDenialLogs checks that n denials were logged, without any token,
// and that the API server's error is in the log for the operator though
// it was not sent to the proxy.
func checkDenialLogs(t *testing.T, e *env, n int) {
	t.Helper()
	logs := e.logs.String()
	if got := strings.Count(logs, "certificate request denied"); got != n {
		t.Errorf("%d denial log lines, want %d", got, n)
	}
	for _, tok := range []string{tokenWeb, tokenAdmin, tokenUser, tokenExpired, tokenUnavailable, "forged"} {
		if strings.Contains(logs, tok) {
			t.Errorf("token %q was logged", tok)
		}
	}
	if !strings.Contains(logs, "connection refused") {
		t.Error("the TokenReview failure is not logged")
	}
}

func TestCertifyIssuerExpiry(t *testing.T) {
	e := newEnv(t, envOptions{pki: identitytest.NewCA(t, identitytest.WithIssuerValidity(2*time.Hour))})
	id := e.pki.ID("shop", "web")
	csr, key := identitytest.NewCSR(t, id)
	req := &identityv1.CertifyRequest{Identity: id.String(), Token: []byte(tokenWeb), CertificateSigningRequest: csr}

	resp, err := e.client.Certify(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if leaf := verified(t, resp, id, key); !leaf.NotAfter.Equal(e.pki.Issuer.NotAfter) {
		t.Errorf("NotAfter = %s, want clamped to the issuer's %s", leaf.NotAfter, e.pki.Issuer.NotAfter)
	}

	e.clock.Add(3 * time.Hour)
	_, err = e.client.Certify(t.Context(), req)
	if st := status.Convert(err); st.Code() != codes.Unavailable {
		t.Fatalf("Certify with an expired issuer = %v %q, want Unavailable", st.Code(), st.Message())
	}
	if got := e.denied(certify.ReasonIssuerUnavailable); got != 1 {
		t.Errorf("denied{issuer_unavailable} = %v, want 1", got)
	}
	if got := e.issued(); got != 1 {
		t.Errorf("issued = %v, want 1", got)
	}
}

// TestCertifyConcurrentWithReload signs from many goroutines while the
// issuer is replaced, for the race detector: every leaf verifies against
// the bundle it came with.
func TestCertifyConcurrentWithReload(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.pki.ID("shop", "web")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				csr, key := identitytest.NewCSR(t, id)
				resp, err := e.client.Certify(t.Context(), &identityv1.CertifyRequest{
					Identity: id.String(), Token: []byte(tokenWeb), CertificateSigningRequest: csr,
				})
				if err != nil {
					t.Errorf("Certify: %v", err)
					return
				}
				if _, err := verify(resp, id, key); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for range 3 {
		e.pki = e.pki.RotateIssuer(t)
		e.pki.WriteSecret(t, e.dir)
		if err := e.server.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if got := e.issued(); got != 40 {
		t.Errorf("issued = %v, want 40", got)
	}
}
