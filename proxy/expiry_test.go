package proxy

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/identity/identitytest"
)

// startExpiringPKI is startPKI with an issuer that expires after validity,
// so the leaves it signs (capped at the issuer's expiry) expire then too.
func startExpiringPKI(t testing.TB, validity time.Duration) (pki *meshPKI, stop func()) {
	t.Helper()
	return startPKIWith(t, identitytest.WithIssuerValidity(validity))
}

// TestReadyFollowsCertificateExpiry (issue 12 test 7): a proxy whose
// certificate is about to expire while the identity service is down goes
// unready before the certificate expires, and /ready says when it expires
// and why renewal fails; it is ready again once the service returns. The
// expiry is exported as a timestamp gauge. Today /ready stays
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
	checkReadyBody(t, body, notAfter)

	// The controller returns, with an issuer rotated under the same trust
	// anchor (the old one has expired): the proxy renews and is ready
	// again, with no restart.
	serveIdentity(t, pki.ca.RotateIssuer(t, identitytest.WithIssuerValidity(time.Hour)), pki.addr)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, b := getReady(t, admin.String())
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the identity service returned, /ready = %d %q", code, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	renewed, err := p.id.src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if got := renewed.Certificates[0].NotAfter; !got.After(notAfter) {
		t.Errorf("ready again with a certificate expiring at %s, not renewed past %s", got, notAfter)
	}
}

// checkReadyBody checks that an unready /ready says when the certificate
// expires and why renewing it fails.
func checkReadyBody(t *testing.T, body string, notAfter time.Time) {
	t.Helper()
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
