package certify_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

// defaultLimits is the Config of the tests of the limits: the defaults
// mesh-controller runs with.
func defaultLimits() certify.Config {
	return certify.Config{ClientRate: certify.DefaultClientRate, ClientBurst: certify.DefaultClientBurst}
}

// TestCertifyFlood sends 200 junk-token requests at once from 127.0.0.1
// while a pod at 127.0.0.2 asks for its certificate: the flood costs no
// more TokenReviews than the burst allows, is refused with
// RESOURCE_EXHAUSTED past it, and the pod gets its certificate. The
// clock stands still, so no token comes back to the flooder's bucket.
func TestCertifyFlood(t *testing.T) {
	e := newEnv(t, envOptions{cfg: defaultLimits()})
	web := e.pki.ID("shop", "web")
	junkCSR, _ := identitytest.NewCSR(t, web)
	const flood = 200

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		codesOf = map[codes.Code]int{}
	)
	start := make(chan struct{})
	for i := range flood {
		wg.Go(func() {
			<-start
			_, err := e.client.Certify(t.Context(), &identityv1.CertifyRequest{
				Identity: web.String(), Token: fmt.Appendf(nil, "junk-%d", i), CertificateSigningRequest: junkCSR,
			})
			st := status.Convert(err)
			if st.Code() == codes.ResourceExhausted && !strings.Contains(st.Message(), "too many certificate requests from this address") {
				t.Errorf("refusal message %q does not say why", st.Message())
			}
			mu.Lock()
			codesOf[st.Code()]++
			mu.Unlock()
		})
	}
	good := e.clientFrom(t, "127.0.0.2")
	csr, key := identitytest.NewCSR(t, web)
	close(start)
	resp, err := good.Certify(t.Context(), &identityv1.CertifyRequest{
		Identity: web.String(), Token: []byte(tokenWeb), CertificateSigningRequest: csr,
	})
	if err != nil {
		t.Fatalf("Certify from another address during the flood: %v", err)
	}
	verified(t, resp, web, key)
	wg.Wait()

	want := map[codes.Code]int{codes.Unauthenticated: certify.DefaultClientBurst, codes.ResourceExhausted: flood - certify.DefaultClientBurst}
	if fmt.Sprint(codesOf) != fmt.Sprint(want) {
		t.Errorf("flood answered %v, want %v", codesOf, want)
	}
	if got, want := e.reviewer.callCount(), certify.DefaultClientBurst+1; got != want {
		t.Errorf("%d TokenReviews, want %d (the burst and the good token)", got, want)
	}
	if got := e.denied(certify.ReasonRateLimited); got != flood-certify.DefaultClientBurst {
		t.Errorf("denied{rate_limited} = %v, want %d", got, flood-certify.DefaultClientBurst)
	}
	if got := strings.Count(e.logs.String(), `"reason":"rate_limited"`); got != 1 {
		t.Errorf("%d log lines for the rate-limited requests, want the first alone", got)
	}

	// A second later, five more tokens are back in the flooder's bucket.
	e.clock.Add(time.Second)
	for i := range certify.DefaultClientRate + 1 {
		_, err := e.client.Certify(t.Context(), &identityv1.CertifyRequest{Identity: web.String(), Token: []byte("junk"), CertificateSigningRequest: junkCSR})
		wantCode := codes.Unauthenticated
		if i == certify.DefaultClientRate {
			wantCode = codes.ResourceExhausted
		}
		if got := status.Code(err); got != wantCode {
			t.Errorf("request %d a second after the flood: %v, want %v", i, got, wantCode)
		}
	}
	if got := strings.Count(e.logs.String(), `"reason":"rate_limited"`); got != 1 {
		t.Errorf("%d log lines for the rate-limited requests of one flood, want 1", got)
	}
}

// TestCertifyCachedDenial sends a token the API server refuses again and
// again: only the first costs a TokenReview, until the denial expires.
func TestCertifyCachedDenial(t *testing.T) {
	e := newEnv(t, envOptions{cfg: defaultLimits()})
	web := e.pki.ID("shop", "web")
	csr, _ := identitytest.NewCSR(t, web)
	req := &identityv1.CertifyRequest{Identity: web.String(), Token: []byte("forged"), CertificateSigningRequest: csr}

	for i := range 5 {
		_, err := e.client.Certify(t.Context(), req)
		if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "token not accepted") {
			t.Fatalf("request %d: %v %q, want Unauthenticated saying the token was not accepted", i, st.Code(), st.Message())
		}
	}
	if got := e.reviewer.callCount(); got != 1 {
		t.Errorf("%d TokenReviews for one bad token sent 5 times, want 1", got)
	}
	if got := e.denied(certify.ReasonUnauthenticated); got != 1 {
		t.Errorf("denied{unauthenticated} = %v, want 1", got)
	}
	if got := e.denied(certify.ReasonCachedDenial); got != 4 {
		t.Errorf("denied{cached_denial} = %v, want 4", got)
	}

	// Another token is reviewed as ever.
	if _, err := e.client.Certify(t.Context(), &identityv1.CertifyRequest{Identity: web.String(), Token: []byte(tokenWeb), CertificateSigningRequest: csr}); err != nil {
		t.Fatalf("Certify with a good token: %v", err)
	}
	e.clock.Add(certify.DefaultDenialTTL)
	if _, err := e.client.Certify(t.Context(), req); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("bad token after the denial expired: %v", err)
	}
	if got := e.reviewer.callCount(); got != 3 {
		t.Errorf("%d TokenReviews, want 3: the bad token once, the good one, the bad one again after %s", got, certify.DefaultDenialTTL)
	}
	if strings.Contains(e.logs.String(), "forged") {
		t.Error("the token was logged")
	}
}

// TestCertifyBusy holds the only review slot with a slow TokenReview: a
// request that needs another is refused with RESOURCE_EXHAUSTED after the
// review wait, and gets its review once the slot is free. Cheap refusals
// need no slot.
func TestCertifyBusy(t *testing.T) {
	cfg := defaultLimits()
	cfg.MaxReviews, cfg.ReviewWait = 1, 50*time.Millisecond
	e := newEnv(t, envOptions{cfg: cfg})
	hold, held := make(chan struct{}), make(chan struct{})
	e.reviewer.mu.Lock()
	e.reviewer.hold, e.reviewer.held = hold, held
	e.reviewer.mu.Unlock()
	web := e.pki.ID("shop", "web")
	csr, key := identitytest.NewCSR(t, web)

	slow := make(chan error, 1)
	go func() {
		_, err := e.client.Certify(t.Context(), &identityv1.CertifyRequest{Identity: web.String(), Token: []byte(tokenSlow), CertificateSigningRequest: csr})
		slow <- err
	}()
	<-held // the slow review holds the slot
	good := &identityv1.CertifyRequest{Identity: web.String(), Token: []byte(tokenWeb), CertificateSigningRequest: csr}
	_, err := e.client.Certify(t.Context(), good)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "busy") {
		t.Fatalf("Certify with every slot taken = %v %q, want ResourceExhausted saying busy", st.Code(), st.Message())
	}
	if got := e.denied(certify.ReasonBusy); got != 1 {
		t.Errorf("denied{busy} = %v, want 1", got)
	}
	if _, err := e.client.Certify(t.Context(), &identityv1.CertifyRequest{Identity: "junk"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a malformed request with every slot taken: %v, want InvalidArgument", err)
	}

	close(hold)
	if err := <-slow; status.Code(err) != codes.Unauthenticated {
		t.Errorf("slow review: %v", err)
	}
	resp, err := e.client.Certify(t.Context(), good)
	if err != nil {
		t.Fatalf("Certify after the slot was freed: %v", err)
	}
	verified(t, resp, web, key)
}

// TestWatchTrustBundleLimits opens streams up to the limits per address
// and in all: the one past each is refused with RESOURCE_EXHAUSTED, and a
// closed stream makes room.
func TestWatchTrustBundleLimits(t *testing.T) {
	cfg := defaultLimits()
	cfg.MaxBundleWatches, cfg.MaxWatchesPerClient = 3, 2
	e := newEnv(t, envOptions{cfg: cfg})
	other := e.clientFrom(t, "127.0.0.2")
	third := e.clientFrom(t, "127.0.0.3")

	// watch opens a stream and reads its first message: the bundle, or
	// the refusal.
	watch := func(c identityv1.IdentityClient) (context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(t.Context())
		t.Cleanup(cancel)
		stream, err := c.WatchTrustBundle(ctx, &identityv1.WatchTrustBundleRequest{})
		if err != nil {
			return cancel, err
		}
		_, err = stream.Recv()
		return cancel, err
	}
	first, err := watch(e.client)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch(e.client); err != nil {
		t.Fatal(err)
	}
	_, err = watch(e.client)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "from this address") {
		t.Errorf("third stream from one address: %v %q, want ResourceExhausted", st.Code(), st.Message())
	}
	if _, err := watch(other); err != nil {
		t.Fatalf("stream from another address: %v", err)
	}
	_, err = watch(third)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "streams open") {
		t.Errorf("fourth stream in all: %v %q, want ResourceExhausted", st.Code(), st.Message())
	}
	for reason, want := range map[string]float64{certify.ReasonClientLimit: 1, certify.ReasonBusy: 1} {
		if got := e.counter("mesh_identity_trust_bundle_watches_refused_total", reason); got != want {
			t.Errorf("watches refused{reason=%q} = %v, want %v", reason, got, want)
		}
	}

	first()
	for e.counter("mesh_identity_trust_bundle_watchers", "") != 2 { // the server sees the cancel
		time.Sleep(time.Millisecond)
	}
	if _, err := watch(third); err != nil {
		t.Errorf("stream after one closed: %v", err)
	}
}
