package policy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/proxy/authz"
	at "github.com/mesh-dev/mesh/proxy/authz/authztest"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
	"github.com/mesh-dev/mesh/proxy/policy/policytest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	web   = "spiffe://cluster.local/ns/shop/sa/web"
	other = "spiffe://cluster.local/ns/shop/sa/other"
)

// syncBuffer is a log sink tests read while the enforcer writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type harness struct {
	e       *Enforcer
	fake    *policytest.Server
	srv     *grpc.Server
	metrics *metrics.Metrics
	logs    *syncBuffer
}

// start runs an Enforcer against a fake controller until the test ends.
func start(t *testing.T, grace time.Duration) *harness {
	t.Helper()
	fake, addr, srv := policytest.Start(t)
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{fake: fake, srv: srv, metrics: metrics.New(), logs: &syncBuffer{}}
	h.e, err = New(Config{
		Client: inboundv1.NewInboundPolicyClient(conn), Namespace: "shop", Pod: "api-0",
		TrustDomain: "cluster.local", Grace: grace, Metrics: h.metrics,
		Log: slog.New(slog.NewTextHandler(h.logs, nil)), MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; conn.Close() })
	return h
}

// set sends p and waits until the enforcer holds it.
func (h *harness) set(t *testing.T, p *inboundv1.PodPolicy) {
	t.Helper()
	h.fake.Set(p)
	deadline := time.Now().Add(5 * time.Second)
	for h.e.Policy().Revision() != p.GetRevision() {
		if time.Now().After(deadline) {
			t.Fatalf("revision %q never reached the enforcer (holds %q)", p.GetRevision(), h.e.Policy().Revision())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (h *harness) sum(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	h.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	fams, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams.Sum(name, labels...)
}

var local = netip.MustParseAddr("10.1.2.3")

func TestAdmitWaitsForTheFirstPolicy(t *testing.T) {
	h := start(t, 5*time.Second)
	if err := h.e.Ready(); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("Ready before a policy = %v, want ErrNoPolicy", err)
	}
	if got := h.sum(t, "mesh_proxy_inbound_policy_ready"); got != 0 {
		t.Errorf("ready gauge = %v before a policy, want 0", got)
	}
	type admitted struct {
		pol *authz.Policy
		err error
	}
	res := make(chan admitted, 1)
	go func() {
		pol, err := h.e.Admit(t.Context(), 80, local)
		res <- admitted{pol, err}
	}()
	time.Sleep(50 * time.Millisecond)
	h.fake.Set(at.AllowAll())
	select {
	case got := <-res:
		if got.err != nil || got.pol.DefaultPolicy() != "all-unauthenticated" {
			t.Errorf("Admit = %v, %v; want the policy that arrived", got.pol, got.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Admit still waiting after the policy arrived")
	}
	if err := h.e.Ready(); err != nil {
		t.Errorf("Ready with a policy = %v", err)
	}
	if w := h.fake.Watches(); len(w) == 0 || w[0].GetNamespace() != "shop" || w[0].GetPod() != "api-0" {
		t.Errorf("watch requests = %v, want shop/api-0", w)
	}
	for name, want := range map[string]float64{"mesh_proxy_inbound_policy_ready": 1, "mesh_proxy_inbound_policy_updates_total": 1} {
		if got := h.sum(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if !strings.Contains(h.logs.String(), "inbound policy received") {
		t.Errorf("no log of the new policy:\n%s", h.logs)
	}
}

func TestAdmitRefusesAfterTheGrace(t *testing.T) {
	h := start(t, 100*time.Millisecond)
	begin := time.Now()
	if _, err := h.e.Admit(t.Context(), 80, local); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("Admit = %v, want ErrNoPolicy", err)
	}
	if waited := time.Since(begin); waited < 50*time.Millisecond {
		t.Errorf("refused after %v, want the rest of the grace", waited)
	}
	begin = time.Now()
	if _, err := h.e.Admit(t.Context(), 80, local); !errors.Is(err, ErrNoPolicy) || time.Since(begin) > 50*time.Millisecond {
		t.Errorf("Admit past the grace = %v after %v, want ErrNoPolicy at once", err, time.Since(begin))
	}
	if got := h.sum(t, "mesh_proxy_inbound_tcp_authz_total", "decision", "deny", "server", ""); got != 2 {
		t.Errorf("refusals counted = %v, want 2", got)
	}
	if logs := h.logs.String(); !strings.Contains(logs, "no inbound policy from the controller yet") || !strings.Contains(logs, "client=10.1.2.3") {
		t.Errorf("the refusal is not logged with its reason and client:\n%s", logs)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	h2 := start(t, time.Hour)
	if _, err := h2.e.Admit(ctx, 80, local); !errors.Is(err, context.Canceled) {
		t.Errorf("Admit with an ended context = %v, want context.Canceled", err)
	}
}

func TestConnDecisions(t *testing.T) {
	server := &inboundv1.PodPolicy{
		Revision: "r1", DefaultPolicy: "deny",
		Ports: []*inboundv1.PortPolicy{{Port: 8080, Server: "api", Authorizations: []*inboundv1.Authorization{
			at.Authz("web-only", at.MeshTLS("MeshTLSAuthentication/web", web)),
		}}},
		Probes: []*inboundv1.Probe{{Port: 8080, Path: "/healthz"}},
	}
	audit := at.Default("audit")
	audit.Probes = server.Probes
	tests := []struct {
		name       string
		policy     *inboundv1.PodPolicy
		client     string
		method     string
		target     string
		wantErr    string // "" lets the request through
		wantLabels []string
		wantLog    string
	}{
		{name: "allowed identity", policy: server, client: web, method: "GET", target: "/api",
			wantLabels: []string{"server", "api", "authz", "web-only", "client_id", web, "decision", "allow"}},
		{name: "another identity", policy: server, client: other, method: "GET", target: "/api",
			wantErr:    `server "api" allows no traffic from ` + other + " on port 8080",
			wantLabels: []string{"server", "api", "authz", "", "client_id", other, "decision", "deny"},
			wantLog:    "inbound request denied"},
		{name: "plain text", policy: server, method: "POST", target: "/api",
			wantErr:    `server "api" allows no traffic from unauthenticated clients on port 8080`,
			wantLabels: []string{"server", "api", "client_id", "", "decision", "deny"},
			wantLog:    "inbound request denied"},
		{name: "probe passes a denial", policy: server, method: "GET", target: "/healthz",
			wantLabels: []string{"server", "api", "authz", "probe", "decision", "allow"}},
		{name: "probe path with another method", policy: server, method: "DELETE", target: "/healthz",
			wantErr:    "allows no traffic",
			wantLabels: []string{"server", "api", "authz", "", "decision", "deny"}},
		{name: "audit", policy: audit, client: other, method: "GET", target: "/api",
			wantLabels: []string{"server", "default:audit", "authz", "", "client_id", other, "decision", "audit"},
			wantLog:    "inbound request would be denied; allowed by audit"},
		{name: "probe under audit is a probe", policy: audit, method: "GET", target: "/healthz",
			wantLabels: []string{"server", "default:audit", "authz", "probe", "decision", "allow"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, time.Second)
			h.set(t, tc.policy)
			pol, err := h.e.Admit(t.Context(), 8080, local)
			if err != nil {
				t.Fatal(err)
			}
			c := h.e.Conn(pol, 8080, authz.Client{Addr: local, ID: tc.client})
			for range 2 { // the second request uses the cached decision
				err = c.AuthorizeRequest(httptest.NewRequest(tc.method, tc.target, nil))
				if got := errString(err); !strings.Contains(got, tc.wantErr) || (tc.wantErr == "") != (err == nil) {
					t.Fatalf("AuthorizeRequest = %q, want %q", got, tc.wantErr)
				}
			}
			if got := h.sum(t, "mesh_proxy_inbound_http_authz_total", tc.wantLabels...); got != 2 {
				t.Errorf("requests counted with %v = %v, want 2", tc.wantLabels, got)
			}
			if tc.wantLog != "" && !strings.Contains(h.logs.String(), tc.wantLog) {
				t.Errorf("no %q in the log:\n%s", tc.wantLog, h.logs)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestAuthorizeTCP(t *testing.T) {
	h := start(t, time.Second)
	h.set(t, &inboundv1.PodPolicy{Revision: "r1", DefaultPolicy: "deny", Ports: []*inboundv1.PortPolicy{
		{Port: 6379, Server: "redis", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_OPAQUE, Authorizations: []*inboundv1.Authorization{
			at.Authz("web", at.MeshTLS("m", web)),
		}},
	}})
	pol, err := h.e.Admit(t.Context(), 6379, local)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		client string
		want   bool
		labels []string
	}{
		{name: "allowed", client: web, want: true, labels: []string{"server", "redis", "authz", "web", "decision", "allow"}},
		{name: "denied", client: other, labels: []string{"server", "redis", "authz", "", "client_id", other, "decision", "deny"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.e.Conn(pol, 6379, authz.Client{Addr: local, ID: tc.client})
			if c.Protocol() != authz.Opaque {
				t.Errorf("Protocol = %v, want opaque", c.Protocol())
			}
			if got := c.AuthorizeTCP(); got != tc.want {
				t.Errorf("AuthorizeTCP = %v, want %v", got, tc.want)
			}
			if got := h.sum(t, "mesh_proxy_inbound_tcp_authz_total", tc.labels...); got != 1 {
				t.Errorf("connections counted with %v = %v, want 1", tc.labels, got)
			}
		})
	}
}

// TestNewPolicyReachesOpenConnections: a connection decided under one
// policy decides its next request under the next, and the last policy
// stays in force while the controller is away.
func TestNewPolicyReachesOpenConnections(t *testing.T) {
	h := start(t, time.Second)
	h.set(t, at.Default("deny"))
	pol, _ := h.e.Admit(t.Context(), 80, local)
	c := h.e.Conn(pol, 80, authz.Client{Addr: local, ID: web})
	if err := c.AuthorizeRequest(httptest.NewRequest("GET", "/", nil)); err == nil {
		t.Fatal("allowed under deny")
	}
	allow := at.AllowAll()
	allow.Revision = "r2"
	h.set(t, allow)
	if err := c.AuthorizeRequest(httptest.NewRequest("GET", "/", nil)); err != nil {
		t.Fatalf("denied after the policy changed to allow everyone: %v", err)
	}
	if !strings.Contains(h.logs.String(), "inbound policy updated") {
		t.Errorf("no log of the update:\n%s", h.logs)
	}
	h.srv.Stop() // the controller goes away
	deadline := time.Now().Add(5 * time.Second)
	for h.fake.Open() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a few reconnect attempts
	if err := c.AuthorizeRequest(httptest.NewRequest("GET", "/", nil)); err != nil || h.e.Ready() != nil {
		t.Errorf("without the controller: %v, ready %v; want the last policy in force", err, h.e.Ready())
	}
	if got := h.sum(t, "mesh_proxy_inbound_policy_updates_total"); got != 2 {
		t.Errorf("updates = %v, want 2", got)
	}
}

func TestLogLimiter(t *testing.T) {
	l := logLimiter{perSecond: 3}
	base := time.Unix(1000, 0)
	var got []bool
	for i := range 5 {
		ok, _ := l.allow(base.Add(time.Duration(i) * time.Millisecond))
		got = append(got, ok)
	}
	if want := []bool{true, true, true, false, false}; !slices.Equal(got, want) {
		t.Errorf("within one second: %v, want %v", got, want)
	}
	ok, suppressed := l.allow(base.Add(time.Second))
	if !ok || suppressed != 2 {
		t.Errorf("next second: %v, %d suppressed; want allowed, 2", ok, suppressed)
	}
}

// BenchmarkAuthorizeRequest is what the policy adds to a request on a
// connection already decided: under a policy of 100 Servers with 100
// authorizations each, the client's the last one. Run with
//
//	go test -run '^$' -bench AuthorizeRequest -benchmem ./proxy/policy/
func BenchmarkAuthorizeRequest(b *testing.B) {
	m := metrics.New()
	e, err := New(Config{Client: inboundv1.NewInboundPolicyClient(nil), Namespace: "n", Pod: "p", Metrics: m, TrustDomain: "cluster.local"})
	if err != nil {
		b.Fatal(err)
	}
	e.apply(at.Large(100, 100, 8000, at.MeshTLS("m", web)))
	pol, _ := e.Admit(b.Context(), 8099, local)
	c := e.Conn(pol, 8099, authz.Client{Addr: local, ID: web})
	r := httptest.NewRequest("GET", "/", nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.AuthorizeRequest(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
