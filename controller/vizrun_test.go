package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/controller/injector/injectortest"
	"github.com/mesh-dev/mesh/controller/viz"
	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/identity/pki"
	"github.com/mesh-dev/mesh/internal/names"
)

func TestVizConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*VizConfig)
		wantErr string // "" for none
	}{
		{name: "defaults", mod: func(*VizConfig) {}},
		{name: "IPv6 loopback", mod: func(c *VizConfig) { c.Addr = "[::1]:8085" }},
		{name: "no tap API", mod: func(c *VizConfig) { c.TapAddr, c.TapTLSDir = "", "" }},
		// The viz API checks no caller: on any other address every pod
		// of the cluster could read it (issue 12).
		{name: "every address", mod: func(c *VizConfig) { c.Addr = ":8085" }, wantErr: `--viz-addr ":8085": must be a loopback address`},
		{name: "unspecified address", mod: func(c *VizConfig) { c.Addr = "0.0.0.0:8085" }, wantErr: "must be a loopback address"},
		{name: "pod IP", mod: func(c *VizConfig) { c.Addr = "10.42.0.7:8085" }, wantErr: "must be a loopback address"},
		// A name could resolve to anything.
		{name: "host name", mod: func(c *VizConfig) { c.Addr = "localhost:8085" }, wantErr: "must be a loopback address"},
		{name: "no address", mod: func(c *VizConfig) { c.Addr = "" }, wantErr: "--viz-addr and --admin-addr must not be empty"},
		{name: "tap API without certificate", mod: func(c *VizConfig) { c.TapTLSDir = "" }, wantErr: "--tap-tls-dir"},
		{name: "no token", mod: func(c *VizConfig) { c.IdentityTokenFile = "" }, wantErr: "--identity-token-file"},
		{name: "bad trust domain", mod: func(c *VizConfig) { c.TrustDomain = "Cluster Local" }, wantErr: "--trust-domain"},
		{name: "bad service account", mod: func(c *VizConfig) { c.ServiceAccount = "mesh/viz" }, wantErr: "--service-account"},
		{name: "bad log format", mod: func(c *VizConfig) { c.LogFormat = "xml" }, wantErr: "--log-format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultVizConfig()
			tc.mod(&cfg)
			err := cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate: %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// TestRunVizRefusesAPublicAddress: RunViz checks its config before it
// opens anything.
func TestRunVizRefusesAPublicAddress(t *testing.T) {
	cfg := DefaultVizConfig()
	cfg.Addr = ":0"
	cfg.onListen = func(component string, a net.Addr) { t.Errorf("%s listens on %s", component, a) }
	if err := RunViz(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("RunViz on every address: %v, want a refusal naming loopback", err)
	}
}

func TestVizFlags(t *testing.T) {
	cfg := DefaultVizConfig()
	if cfg.Addr != "127.0.0.1:8085" || cfg.ServiceAccount != "mesh-viz" || cfg.AdminAddr != ":9990" {
		t.Errorf("defaults %+v: want the viz API on 127.0.0.1:8085, as mesh-viz, admin on :9990", cfg)
	}
	fs := pflag.NewFlagSet("viz", pflag.ContinueOnError)
	cfg.AddFlags(fs)
	err := fs.Parse([]string{
		"--namespace=mesh", "--service-account=viz", "--kubeconfig=/k", "--viz-addr=127.0.0.2:1", "--admin-addr=:2",
		"--tap-addr=:3", "--tap-tls-dir=/tap", "--identity-addr=id:4", "--identity-token-file=/t",
		"--trust-anchors-file=/a", "--trust-domain=example.org", "--log-level=debug", "--log-format=text",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := VizConfig{
		Namespace: "mesh", ServiceAccount: "viz", Kubeconfig: "/k", Addr: "127.0.0.2:1", AdminAddr: ":2",
		TapAddr: ":3", TapTLSDir: "/tap", IdentityAddr: "id:4", IdentityTokenFile: "/t",
		TrustAnchorsFile: "/a", TrustDomain: "example.org", LogLevel: slog.LevelDebug, LogFormat: "text",
	}
	if diff := cmp.Diff(want, cfg, cmp.AllowUnexported(VizConfig{})); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if got := (VizConfig{Namespace: "mesh"}).identityAddr(); got != names.DefaultIdentityAddr("mesh") {
		t.Errorf("identity address %q, want mesh-identity of the namespace", got)
	}
}

// identityService is the controller's identity service, for real: TLS as
// the controller's SPIFFE ID, tokens reviewed by review.
type identityService struct {
	ca   *identitytest.CA
	addr string
}

func startIdentityService(t *testing.T, review certify.TokenReviewerFunc) *identityService {
	t.Helper()
	ca := identitytest.NewCA(t)
	issuer := identitytest.NewSecretDir(t)
	ca.WriteSecret(t, issuer)
	ids, err := certify.New(certify.Config{IssuerDir: issuer.Path, Reviewer: review})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ids.TLSConfig(ca.ID("mesh-system", "mesh-controller")))))
	ids.Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone, serveDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(runDone); ids.Run(ctx) }()
	go func() { defer close(serveDone); srv.Serve(ln) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
		srv.Stop()
		<-serveDone
	})
	return &identityService{ca: ca, addr: ln.Addr().String()}
}

// TestRunViz runs mesh-viz against a real identity service: it is not
// ready until it holds a certificate of its own ServiceAccount, which it
// gets with its projected token; the proxies' tap servers, which admit
// only mesh-viz, accept the tap relay's TLS; the viz API answers on
// loopback; the tap API serves, refusing strangers; and everything stops
// with ctx.
func TestRunViz(t *testing.T) {
	const token = "mesh-viz-token"
	allow := make(chan struct{})
	ids := startIdentityService(t, func(ctx context.Context, got, _ string) (certify.TokenInfo, error) {
		select {
		case <-allow:
		case <-ctx.Done():
			return certify.TokenInfo{}, ctx.Err()
		}
		if got != token {
			return certify.TokenInfo{}, errors.New("not mesh-viz's token")
		}
		return certify.TokenInfo{Username: "system:serviceaccount:mesh-system:mesh-viz"}, nil
	})
	dir := t.TempDir()
	cfg := DefaultVizConfig()
	cfg.Addr, cfg.AdminAddr, cfg.TapAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.TapTLSDir = t.TempDir()
	injectortest.NewCA(t).WriteServing(t, cfg.TapTLSDir)
	cfg.IdentityAddr = ids.addr
	cfg.IdentityTokenFile = writeFile(t, dir, "token", []byte(token))
	cfg.TrustAnchorsFile = writeFile(t, dir, "ca-bundle.crt", pki.EncodeCerts(ids.ca.Root))
	cfg.client = fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}})
	cfg.logTo = t.Output()
	addrs := make(chan [2]string, 3)
	cfg.onListen = func(component string, a net.Addr) { addrs <- [2]string{component, a.String()} }
	var tapTLS func(spiffeid.ID) *tls.Config
	cfg.vizMod = func(c *viz.Config) { tapTLS = c.TapTLS }

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- RunViz(ctx, cfg) }()
	listening := map[string]string{}
	for len(listening) < 3 {
		select {
		case a := <-addrs:
			listening[a[0]] = a[1]
		case err := <-done:
			t.Fatalf("RunViz: %v", err)
		}
	}
	adminURL := "http://" + listening["admin"]

	// Its caches sync at once, but without a certificate it cannot tap.
	waitFor(t, adminURL+"/ready", func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(body, "no usable identity certificate")
	})
	close(allow)
	waitReady(t, adminURL+"/ready")

	// The tap relay presents mesh-viz's certificate: a tap server that
	// admits only mesh-viz, as injected proxies do, completes the
	// handshake.
	vizID := ids.ca.ID("mesh-system", "mesh-viz")
	podID := ids.ca.ID("shop", "web")
	if got := handshake(t, ids.ca.IssueSVID(t, podID), ids.ca, vizID, tapTLS(podID)); got != vizID {
		t.Errorf("the tap relay presented %s, want mesh-viz's %s", got, vizID)
	}

	if host, _, _ := net.SplitHostPort(listening["viz"]); host != "127.0.0.1" {
		t.Errorf("the viz API listens on %s, want loopback", listening["viz"])
	}
	var stat vizv1.StatList
	getJSON(t, "http://"+listening["viz"]+vizv1.PathStat+"?kind=ns&name=shop", &stat)
	if len(stat.Rows) != 1 || stat.Rows[0].TotalPods != 1 || stat.Rows[0].MeshedPods != 0 {
		t.Errorf("viz stat ns/shop: %+v, want its one unmeshed pod", stat.Rows)
	}
	// Tap is served by the tap API only, which refuses a caller that is
	// not the API server's front proxy.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer insecure.CloseIdleConnections()
	resp, err := insecure.Get("https://" + listening["tap"] + "/apis/tap.mesh.dev/v1alpha1/watch/namespaces/shop/tap")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("tap API without the front proxy's certificate: %d, want 401", resp.StatusCode)
	}

	_, metrics := get(t, adminURL+"/metrics")
	for _, want := range []string{"mesh_controller_viz_scrapes_total", "go_goroutines", "process_"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunViz after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("RunViz did not return after cancel")
	}
}

// handshake runs a TLS server presenting svid that admits only client,
// connects to it with cfg, and returns the client ID the server saw.
func handshake(t *testing.T, svid *x509svid.SVID, ca *identitytest.CA, client spiffeid.ID, cfg *tls.Config) spiffeid.ID {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(svid, ca.Bundle(), tlsconfig.AuthorizeID(client)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan spiffeid.ID, 1)
	go func() {
		defer close(seen)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if tc.Handshake() != nil {
			return
		}
		if id, err := x509svid.IDFromCert(tc.ConnectionState().PeerCertificates[0]); err == nil {
			seen <- id
		}
		io.Copy(io.Discard, tc)
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatalf("TLS to a tap server: %v", err)
	}
	// The client's handshake ends before the server has checked the
	// client certificate; a round trip makes the server finish.
	conn.Write([]byte("x"))
	conn.Close()
	return <-seen
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitFor polls url until ok accepts its answer.
func waitFor(t *testing.T, url string, ok func(code int, body string) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, url)
		if ok(code, body) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %q", url, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
