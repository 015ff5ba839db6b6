package client_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/identity/ca"
	"github.com/mesh-dev/mesh/identity/client"
	"github.com/mesh-dev/mesh/identity/client/clienttest"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

// harness is one proxy's identity client against a stand-in controller.
type harness struct {
	ca    *identitytest.CA
	ctrl  *clienttest.Controller
	clock *fakeClock // nil with the system clock
	src   *client.Source
	token string // the token file's path
	logs  *logBuffer
}

// logBuffer collects the client's log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type harnessConfig struct {
	realClock bool
	lifetime  time.Duration // of leaves; 0 means one hour
	// before runs after the controller starts and before the client does.
	before func(*harness)
}

const (
	testNamespace = "shop"
	testAccount   = "web"
)

// start runs a Source against a clienttest.Controller until the test ends.
// The controller is a stand-in for mesh-controller: it signs with the
// production ca.Issuer, while the real Certify path (TokenReview included)
// is covered by mesh-controller's own tests.
func start(t *testing.T, hc harnessConfig) *harness {
	t.Helper()
	if hc.lifetime == 0 {
		hc.lifetime = time.Hour
	}
	h := &harness{ca: identitytest.NewCA(t), token: filepath.Join(t.TempDir(), "token"), logs: &logBuffer{}}
	cfg := clienttest.ControllerConfig{Issuer: h.ca.NewIssuer(t), Lifetime: hc.lifetime}
	ccfg := client.Config{
		Namespace:      testNamespace,
		ServiceAccount: testAccount,
		TokenPath:      h.token,
		Log:            slog.New(slog.NewTextHandler(h.logs, nil)),
	}
	if hc.realClock {
		ccfg.MinBackoff = 100 * time.Millisecond
	} else {
		h.clock = newFakeClock()
		cfg.Now, ccfg.Clock = h.clock.Now, h.clock
	}
	h.ctrl = clienttest.StartController(t, cfg)
	ccfg.Conn = h.ctrl.Dial(t)
	h.writeToken(t, "token-1")
	if hc.before != nil {
		hc.before(h)
	}
	src, err := client.New(ccfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.src = src
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

func (h *harness) writeToken(t *testing.T, token string) {
	t.Helper()
	if err := os.WriteFile(h.token, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) id() spiffeid.ID { return h.ca.ID(testNamespace, testAccount) }

func (h *harness) now() time.Time {
	if h.clock == nil {
		return time.Now()
	}
	return h.clock.Now()
}

// waitReady waits for the first certificate and returns it.
func (h *harness) waitReady(t *testing.T) *x509svid.SVID {
	t.Helper()
	select {
	case <-h.src.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not ready after 10s")
	}
	svid, err := h.src.GetX509SVID()
	if err != nil {
		t.Fatalf("GetX509SVID after Ready: %v", err)
	}
	return svid
}

// waitFor waits until cond holds for the Source's current state, checking
// at every change.
func (h *harness) waitFor(t *testing.T, what string, cond func(*x509svid.SVID, *x509bundle.Bundle) bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		svid, bundle, changed := h.src.Current()
		if cond(svid, bundle) {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("waited 10s for %s", what)
		}
	}
}

// checkValid fails unless svid is an X509-SVID of the harness's ID that
// verifies against bundle now.
func (h *harness) checkValid(t *testing.T, svid *x509svid.SVID, bundle *x509bundle.Bundle) {
	t.Helper()
	id, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(h.now()))
	if err != nil {
		t.Fatalf("SVID does not verify: %v", err)
	}
	if id != h.id() {
		t.Fatalf("SVID is for %s, want %s", id, h.id())
	}
}

// watchGaps checks the Source from another goroutine until the returned
// function is called, which reports every moment the Source had no valid
// certificate to hand out.
func (h *harness) watchGaps(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var gaps []string
	wg.Go(func() {
		for ctx.Err() == nil {
			svid, err := h.src.GetX509SVID()
			if err == nil {
				_, _, err = x509svid.Verify(svid.Certificates, h.src, x509svid.WithTime(h.now()))
			}
			if err != nil {
				gaps = append(gaps, err.Error())
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	return func() {
		cancel()
		wg.Wait()
		if len(gaps) > 0 {
			t.Errorf("the Source had no valid certificate %d times, first: %s", len(gaps), gaps[0])
		}
	}
}

func serial(svid *x509svid.SVID) string { return svid.Certificates[0].SerialNumber.String() }

func TestFirstCertificate(t *testing.T) {
	h := start(t, harnessConfig{})
	svid := h.waitReady(t)

	h.checkValid(t, svid, h.ca.Bundle())
	key, ok := svid.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Errorf("private key is %T, want an ECDSA P-256 key", svid.PrivateKey)
	}
	if got := h.src.ID(); got != h.id() {
		t.Errorf("ID() = %s, want %s", got, h.id())
	}
	bundle, err := h.src.GetX509BundleForTrustDomain(h.ca.TrustDomain)
	if err != nil {
		t.Fatalf("GetX509BundleForTrustDomain: %v", err)
	}
	if !bundle.Equal(h.ca.Bundle()) {
		t.Errorf("bundle has %d authorities, want the test trust anchor", len(bundle.X509Authorities()))
	}
	if _, err := h.src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("other.example")); err == nil {
		t.Error("GetX509BundleForTrustDomain(other.example) succeeded")
	}

	reqs := h.ctrl.Requests()
	if len(reqs) != 1 {
		t.Fatalf("controller got %d requests, want 1", len(reqs))
	}
	if got := string(reqs[0].GetToken()); got != "token-1" {
		t.Errorf("token = %q, want the file's content without the newline", got)
	}
	if got := reqs[0].GetIdentity(); got != h.id().String() {
		t.Errorf("identity = %q, want %q", got, h.id())
	}
	csr, err := x509.ParseCertificateRequest(reqs[0].GetCertificateSigningRequest())
	if err != nil {
		t.Fatal(err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != h.id().String() || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
		t.Errorf("CSR names URIs %v DNS %v IPs %v e-mails %v, want exactly the URI %s",
			csr.URIs, csr.DNSNames, csr.IPAddresses, csr.EmailAddresses, h.id())
	}
}

func TestNotReadyUntilFirstCertificate(t *testing.T) {
	h := start(t, harnessConfig{before: func(h *harness) {
		h.ctrl.SetFailure(status.Error(codes.Unavailable, "issuer not loaded"))
	}})
	left := h.clock.waitTimers(t, 1) // the retry after the first failure
	select {
	case <-h.src.Ready():
		t.Fatal("ready without a certificate")
	default:
	}
	if _, err := h.src.GetX509SVID(); !errors.Is(err, client.ErrNotReady) {
		t.Errorf("GetX509SVID error = %v, want ErrNotReady", err)
	}
	if err := h.src.Health(); !errors.Is(err, client.ErrNotReady) || !strings.Contains(fmt.Sprint(err), "issuer not loaded") {
		t.Errorf("Health = %v, want ErrNotReady saying why the request failed", err)
	}
	if left[0] > client.DefaultMinBackoff || left[0] < client.DefaultMinBackoff/2 {
		t.Errorf("first retry in %s, want within [%s, %s]", left[0], client.DefaultMinBackoff/2, client.DefaultMinBackoff)
	}

	h.ctrl.SetFailure(nil)
	h.clock.Advance(left[0])
	h.checkValid(t, h.waitReady(t), h.ca.Bundle())
}

func TestRenewsAtSeventyPercent(t *testing.T) {
	h := start(t, harnessConfig{lifetime: time.Hour})
	first := h.waitReady(t)
	stop := h.watchGaps(t)

	// Certificates carry whole seconds, so the leaf may be up to a second
	// short of an hour.
	left := h.clock.waitTimers(t, 1)[0]
	if want := 42 * time.Minute; left > want || left < want-time.Second {
		t.Fatalf("renewal in %s, want 70%% of an hour, %s", left, want)
	}
	h.writeToken(t, "token-2") // kubelet rotated it meanwhile

	h.clock.Advance(left - time.Second)
	if got := h.clock.waitTimers(t, 1)[0]; got != time.Second {
		t.Errorf("a second before renewal, the timer has %s left", got)
	}
	if n := len(h.ctrl.Requests()); n != 1 {
		t.Fatalf("controller got %d requests before the renewal time, want 1", n)
	}

	h.clock.Advance(time.Second)
	h.waitFor(t, "the renewed certificate", func(svid *x509svid.SVID, _ *x509bundle.Bundle) bool {
		return serial(svid) != serial(first)
	})
	stop()
	renewed, _ := h.src.GetX509SVID()
	h.checkValid(t, renewed, h.ca.Bundle())
	if renewed.PrivateKey.Public().(*ecdsa.PublicKey).Equal(first.PrivateKey.Public()) {
		t.Error("the renewal reused the first private key")
	}
	reqs := h.ctrl.Requests()
	if got := string(reqs[len(reqs)-1].GetToken()); got != "token-2" {
		t.Errorf("renewal sent token %q, want the rotated token-2", got)
	}
}

// TestRotatesInRealTime runs the system clock against three-second leaves:
// two renewals, and a valid certificate at every moment in between.
func TestRotatesInRealTime(t *testing.T) {
	h := start(t, harnessConfig{realClock: true, lifetime: 3 * time.Second})
	first := h.waitReady(t)
	stop := h.watchGaps(t)
	seen := map[string]bool{serial(first): true}
	h.waitFor(t, "two renewals", func(svid *x509svid.SVID, _ *x509bundle.Bundle) bool {
		seen[serial(svid)] = true
		return len(seen) == 3
	})
	stop()
}

func TestKeepsCertificateWhileControllerFails(t *testing.T) {
	h := start(t, harnessConfig{lifetime: time.Hour})
	first := h.waitReady(t)
	notAfter := first.Certificates[0].NotAfter

	h.ctrl.SetFailure(status.Error(codes.Unavailable, "API server down"))
	h.clock.Advance(h.clock.waitTimers(t, 1)[0])
	// Retry well past the certificate's expiry: the delays double from 1s
	// up to a minute, jittered within the upper half of each step, and the
	// old certificate stays in place, expired or not.
	for i := 0; h.clock.Now().Before(notAfter.Add(2 * time.Minute)); i++ {
		d := h.clock.waitTimers(t, 1)[0]
		step := min(client.DefaultMinBackoff<<min(i, 10), client.DefaultMaxBackoff)
		if d < step/2 || d > step {
			t.Fatalf("retry %d in %s, want within [%s, %s]", i, d, step/2, step)
		}
		if svid, err := h.src.GetX509SVID(); err != nil || svid != first {
			t.Fatalf("retry %d: GetX509SVID = %v, %v; want the first certificate still", i, svid, err)
		}
		h.clock.Advance(d)
	}

	h.ctrl.SetFailure(nil)
	h.clock.Advance(h.clock.waitTimers(t, 1)[0])
	h.waitFor(t, "a new certificate once the controller answers", func(svid *x509svid.SVID, _ *x509bundle.Bundle) bool {
		return svid != first
	})
	renewed, _ := h.src.GetX509SVID()
	h.checkValid(t, renewed, h.ca.Bundle())
}

func TestControllerUnreachable(t *testing.T) {
	h := start(t, harnessConfig{})
	first := h.waitReady(t)
	renewal := h.clock.waitTimers(t, 1)[0]

	h.ctrl.Stop()
	// The broken trust-bundle stream now waits for its retry too.
	if left := h.clock.waitTimers(t, 2); left[1] != renewal {
		t.Fatalf("timers %v, want a retry and the renewal in %s", left, renewal)
	}
	h.clock.Advance(renewal)
	h.clock.waitTimers(t, 2) // both retrying
	if svid, err := h.src.GetX509SVID(); err != nil || svid != first {
		t.Fatalf("GetX509SVID = %v, %v; want the first certificate", svid, err)
	}
	select {
	case <-h.src.Ready():
	default:
		t.Fatal("no longer ready")
	}
}

func TestTrustBundleUpdates(t *testing.T) {
	h := start(t, harnessConfig{})
	first := h.waitReady(t)
	next := identitytest.NewCA(t)

	// A second anchor arrives on the stream alone: no new certificate.
	h.ctrl.SetBundle(h.ca.Root, next.Root)
	h.waitFor(t, "the two-anchor bundle", func(_ *x509svid.SVID, b *x509bundle.Bundle) bool {
		return len(b.X509Authorities()) == 2
	})
	if svid, _ := h.src.GetX509SVID(); svid != first {
		t.Error("adding an anchor replaced the certificate")
	}

	// The old anchor goes: the certificate it signed is renewed at once,
	// without waiting for the schedule (the fake clock stands still).
	h.ctrl.SetIssuer(next.NewIssuer(t))
	h.ctrl.SetBundle(next.Root)
	h.waitFor(t, "a certificate under the new anchor", func(svid *x509svid.SVID, b *x509bundle.Bundle) bool {
		_, _, err := x509svid.Verify(svid.Certificates, next.Bundle(), x509svid.WithTime(h.now()))
		return err == nil && b.Equal(next.Bundle())
	})
}

func TestTrustBundleStreamReconnects(t *testing.T) {
	h := start(t, harnessConfig{})
	h.waitReady(t)
	other := identitytest.NewCA(t)
	h.ctrl.SetBundle(h.ca.Root, other.Root)
	h.waitFor(t, "the stream to deliver", func(_ *x509svid.SVID, b *x509bundle.Bundle) bool {
		return len(b.X509Authorities()) == 2
	})

	h.ctrl.BreakWatches()
	left := h.clock.waitTimers(t, 2) // the stream's retry and the renewal
	h.ctrl.SetBundle(h.ca.Root)      // changed while the proxy is disconnected
	h.clock.Advance(left[0])
	h.waitFor(t, "the bundle after reconnecting", func(_ *x509svid.SVID, b *x509bundle.Bundle) bool {
		return b.Equal(h.ca.Bundle())
	})
}

func TestRejectsBadCertificates(t *testing.T) {
	type tamperFunc = func(*ca.CSR, *identityv1.CertifyResponse)
	tests := []struct {
		name string
		// tamper returns what changes the first answer, which h.ca signed
		// for the CSR's key and ID; it runs on the test goroutine, the
		// function it returns on the controller's.
		tamper  func(t *testing.T, h *harness) tamperFunc
		wantLog string
	}{
		{
			name: "key of another proxy",
			tamper: func(t *testing.T, h *harness) tamperFunc {
				other := h.ca.IssueSVID(t, h.id()).Certificates[0].Raw
				return func(_ *ca.CSR, resp *identityv1.CertifyResponse) { resp.LeafCertificate = other }
			},
			wantLog: "another key",
		},
		{
			name: "another identity",
			tamper: func(t *testing.T, h *harness) tamperFunc {
				iss, admin := h.ca.NewIssuer(t), h.ca.ID(testNamespace, "admin")
				return func(csr *ca.CSR, resp *identityv1.CertifyResponse) {
					resp.LeafCertificate = sign(t, iss, csr, admin).Raw
				}
			},
			wantLog: "ns/shop/sa/admin",
		},
		{
			name: "issuer outside the trust bundle",
			tamper: func(t *testing.T, _ *harness) tamperFunc {
				other := identitytest.NewCA(t)
				iss := other.NewIssuer(t)
				return func(csr *ca.CSR, resp *identityv1.CertifyResponse) {
					resp.LeafCertificate = sign(t, iss, csr, csr.ID).Raw
					resp.IntermediateCertificates = [][]byte{other.Issuer.Raw}
				}
			},
			wantLog: "could not verify leaf certificate",
		},
		{
			name: "bundle of another trust domain",
			tamper: func(*testing.T, *harness) tamperFunc {
				return func(_ *ca.CSR, resp *identityv1.CertifyResponse) { resp.TrustBundle.TrustDomain = "other.example" }
			},
			wantLog: "other.example",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tampered := make(chan struct{})
			h := start(t, harnessConfig{before: func(h *harness) {
				tamper := tc.tamper(t, h)
				h.ctrl.SetTamper(func(csr *ca.CSR, resp *identityv1.CertifyResponse) {
					tamper(csr, resp)
					h.ctrl.SetTamper(nil) // only the first answer is bad
					close(tampered)
				})
			}})
			select {
			case <-tampered:
			case <-time.After(10 * time.Second):
				t.Fatal("no Certify request in 10s")
			}
			left := h.clock.waitTimers(t, 1) // the retry after refusing it
			if _, err := h.src.GetX509SVID(); !errors.Is(err, client.ErrNotReady) {
				t.Fatalf("after a bad answer GetX509SVID error = %v, want ErrNotReady", err)
			}
			if logs := h.logs.String(); !strings.Contains(logs, tc.wantLog) {
				t.Errorf("logs do not say %q:\n%s", tc.wantLog, logs)
			}
			h.clock.Advance(left[0])
			h.checkValid(t, h.waitReady(t), h.ca.Bundle())
		})
	}
}

// sign certifies csr's key as id with iss, as a controller with a bug would.
func sign(t *testing.T, iss *ca.Issuer, csr *ca.CSR, id spiffeid.ID) *x509.Certificate {
	t.Helper()
	leaf, err := iss.Sign(csr.PublicKey, id, time.Now(), time.Hour)
	if err != nil {
		t.Errorf("sign: %v", err)
		return &x509.Certificate{}
	}
	return leaf.Certificate
}

func TestNewRejectsBadConfig(t *testing.T) {
	// The connection is never used: New only checks it is there.
	conn, err := grpc.NewClient("passthrough:///127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tests := []struct {
		name    string
		cfg     client.Config
		wantErr string
	}{
		{name: "no namespace", cfg: client.Config{ServiceAccount: "web", Conn: conn}, wantErr: "required"},
		{name: "no connection", cfg: client.Config{Namespace: "shop", ServiceAccount: "web"}, wantErr: "connection"},
		{name: "bad trust domain", cfg: client.Config{TrustDomain: "not a domain!", Namespace: "shop", ServiceAccount: "web", Conn: conn}, wantErr: "trust domain"},
		{name: "bad service account", cfg: client.Config{Namespace: "shop", ServiceAccount: "a/b", Conn: conn}, wantErr: "service account"},
		{name: "backoffs inverted", cfg: client.Config{Namespace: "shop", ServiceAccount: "web", Conn: conn, MinBackoff: time.Minute, MaxBackoff: time.Second}, wantErr: "backoff"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New error = %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestRunTwice(t *testing.T) {
	h := start(t, harnessConfig{})
	h.waitReady(t) // so the first Run has started
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := h.src.Run(ctx); err == nil {
		t.Error("a second Run succeeded")
	}
}

// TestBundleFrom: a Source that follows another's trust bundle gets a
// certificate of its own key and every bundle the other's stream brings,
// without a stream of its own (the proxy's Source for the application).
func TestBundleFrom(t *testing.T) {
	h := start(t, harnessConfig{realClock: true})
	proxy := h.waitReady(t)
	app, err := client.New(client.Config{
		Namespace: testNamespace, ServiceAccount: testAccount, TokenPath: h.token,
		Conn: h.ctrl.Dial(t), MinBackoff: 100 * time.Millisecond, BundleFrom: h.src,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	follower := &harness{ca: h.ca, src: app}
	svid := follower.waitReady(t)
	if svid.ID != h.id() {
		t.Errorf("ID = %s, want %s", svid.ID, h.id())
	}
	if svid.PrivateKey.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(proxy.PrivateKey.Public()) {
		t.Error("the follower holds the other Source's key")
	}
	other := identitytest.NewCA(t)
	h.ctrl.SetBundle(h.ca.Root, other.Root)
	follower.waitFor(t, "the followed bundle", func(_ *x509svid.SVID, b *x509bundle.Bundle) bool {
		return b != nil && len(b.X509Authorities()) == 2
	})
	if n := h.ctrl.Watches(); n != 1 {
		t.Errorf("%d trust-bundle streams open, want the proxy's only", n)
	}
}
