package proxy

import (
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

// startExpiringPKI is startPKI with an issuer that expires after validity,
// so the leaves it signs (capped at the issuer's expiry) expire then too,
// and with a stop function that takes the identity service down as a
// crashed controller would.
func startExpiringPKI(t testing.TB, validity time.Duration) (pki *meshPKI, stop func()) {
	t.Helper()
	ca := identitytest.NewCA(t, identitytest.WithIssuerValidity(validity))
	dir := identitytest.NewSecretDir(t)
	ca.WriteSecret(t, dir)
	ids, err := certify.New(certify.Config{
		IssuerDir: dir.Path, TrustDomain: ca.TrustDomain,
		Reviewer: certify.TokenReviewerFunc(func(_ context.Context, token, _ string) (certify.TokenInfo, error) {
			return certify.TokenInfo{Username: "system:serviceaccount:" + token}, nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	controller := ca.ID("mesh-system", "mesh-controller")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ids.TLSConfig(controller))))
	ids.Register(srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ids.Run(ctx); close(done) }()
	go srv.Serve(ln)
	stop = sync.OnceFunc(func() { cancel(); <-done; srv.Stop() })
	t.Cleanup(stop)
	anchors := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw})
	return &meshPKI{ca: ca, addr: ln.Addr().String(), serverID: controller.String(), anchors: string(anchors)}, stop
}

// TestReadyFollowsCertificateExpiry: a proxy whose certificate is about to
// expire while the identity service is down goes unready before the
// certificate expires, and /ready says when it expires and why renewal
// fails; the expiry is exported as a timestamp gauge. Today /ready stays
// 200 with an expired certificate and there is no such metric.
func TestReadyFollowsCertificateExpiry(t *testing.T) {
	// Five seconds of validity: renewal is due after about 3.5, the
	// margin is its last second.
	pki, stopPKI := startExpiringPKI(t, 5*time.Second)
	app := backend(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	p := startProxy(t, app, pki.withIdentity(t, "shop", "api"))
	waitReady(t, p)
	svid, err := p.id.src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	notAfter := svid.Certificates[0].NotAfter
	_, _, admin := p.Addrs()
	if got, want := scrapeGauge(t, admin.String(), "mesh_proxy_identity_cert_expiry_timestamp_seconds"), float64(notAfter.Unix()); got != want {
		t.Errorf("mesh_proxy_identity_cert_expiry_timestamp_seconds = %v, want %v (%s)", got, want, notAfter)
	}

	stopPKI()
	var body string
	for {
		code, b := getReady(t, admin.String())
		if code == http.StatusServiceUnavailable {
			body = b
			if now := time.Now(); !now.Before(notAfter) {
				t.Errorf("unready only at %s, after the certificate expired at %s", now, notAfter)
			}
			break
		}
		if code != http.StatusOK {
			t.Fatalf("/ready = %d %q", code, b)
		}
		if time.Now().After(notAfter.Add(5 * time.Second)) {
			t.Fatalf("still ready 5s after the certificate expired at %s", notAfter)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("/ready: %s", body)
	for _, want := range []string{"at " + notAfter.UTC().Format(time.RFC3339), "renewal fails: ", "Unavailable"} {
		if !strings.Contains(body, want) {
			t.Errorf("/ready says %q, want it to say %q", body, want)
		}
	}
	if !strings.Contains(body, "expires at") && !strings.Contains(body, "expired at") {
		t.Errorf("/ready says %q, want it to say when the certificate expires", body)
	}
}

// getReady returns /ready's status code and body.
func getReady(t testing.TB, admin string) (int, string) {
	t.Helper()
	res, err := http.Get("http://" + admin + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// scrapeGauge reads the unlabelled sample name from the admin port's
// /metrics, as Prometheus would; it fails the test if there is none.
func scrapeGauge(t testing.TB, admin, name string) float64 {
	t.Helper()
	res, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s:\n%s", name, b)
	return 0
}
