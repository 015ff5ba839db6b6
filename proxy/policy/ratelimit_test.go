package policy

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/proxy/authz"
	at "github.com/mesh-dev/mesh/proxy/authz/authztest"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
)

// fakeClock is the time rate limits count with in these tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// limitedPolicy lets everyone reach Server api on 8080, limited to total
// requests a second and identity per client; /healthz is a probe.
func limitedPolicy(rev string, total, identity uint32) *inboundv1.PodPolicy {
	return &inboundv1.PodPolicy{
		Revision: rev, DefaultPolicy: "deny",
		Ports: []*inboundv1.PortPolicy{{Port: 8080, Server: "api", Authorizations: []*inboundv1.Authorization{at.Authz("everyone")},
			RateLimit: &inboundv1.RateLimit{Name: "rl", TotalRps: total, IdentityRps: identity}}},
		Probes: []*inboundv1.Probe{{Port: 8080, Path: "/healthz"}},
	}
}

// startLimited is start with the clock of rate limits faked.
func startLimited(t *testing.T, p *inboundv1.PodPolicy) (*harness, *fakeClock) {
	t.Helper()
	h := start(t, time.Second)
	clock := &fakeClock{t: time.Unix(1000, 0)}
	h.e.now = clock.now
	h.set(t, p)
	return h, clock
}

func (h *harness) conn(t *testing.T, id string) *Conn {
	t.Helper()
	pol, err := h.e.Admit(t.Context(), 8080, local)
	if err != nil {
		t.Fatal(err)
	}
	return h.e.Conn(pol, 8080, authz.Client{Addr: local, ID: id})
}

// request sends GET target on c and returns the rate limit refusal, nil
// when admitted; any other error fails the test.
func request(t *testing.T, c *Conn, target string) *httpproxy.RateLimited {
	t.Helper()
	err := c.AuthorizeRequest(httptest.NewRequest("GET", target, nil))
	var rl *httpproxy.RateLimited
	if err != nil && !errors.As(err, &rl) {
		t.Fatalf("AuthorizeRequest = %v, want nil or a rate limit", err)
	}
	return rl
}

func TestRateLimitedRequests(t *testing.T) {
	h, clock := startLimited(t, limitedPolicy("r1", 3, 2))
	webConn, otherConn, plain := h.conn(t, web), h.conn(t, other), h.conn(t, "")

	for i := range 2 {
		if rl := request(t, webConn, "/api"); rl != nil {
			t.Fatalf("web's request %d: %v", i, rl)
		}
	}
	rl := request(t, webConn, "/api")
	if want := (httpproxy.RateLimited{RetryAfter: 500 * time.Millisecond, Scope: "identity", Server: "api", RequestsPerSecond: 2}); rl == nil || *rl != want {
		t.Fatalf("web's 3rd: %+v, want %+v", rl, want)
	}
	if got, want := rl.Error(), `server "api" allows 2 requests per second per client identity; retry after 1s`; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	if rl := request(t, otherConn, "/api"); rl != nil {
		t.Fatalf("other's first: %v", rl)
	}
	// The total's 3 are gone: a client of its own limit left is held by it.
	if rl := request(t, plain, "/api"); rl == nil || rl.Scope != "total" || rl.RequestsPerSecond != 3 {
		t.Errorf("plain text client: %+v, want the total's refusal", rl)
	}
	// Probes are never limited.
	for range 5 {
		if rl := request(t, webConn, "/healthz"); rl != nil {
			t.Fatalf("a probe was rate limited: %v", rl)
		}
	}
	clock.advance(time.Second)
	if rl := request(t, plain, "/api"); rl != nil {
		t.Errorf("a second later: %v", rl)
	}

	for _, c := range []struct {
		scope string
		want  float64
	}{{"identity", 1}, {"total", 1}, {"override", 0}} {
		if got := h.sum(t, "mesh_proxy_http_rate_limited_total", "server", "api", "scope", c.scope); got != c.want {
			t.Errorf("rate limited with scope %s: %v, want %v", c.scope, got, c.want)
		}
	}
	// Rate limited requests were allowed by the policy, and count so.
	if got := h.sum(t, "mesh_proxy_inbound_http_authz_total", "server", "api", "authz", "everyone", "decision", "allow"); got != 11 {
		t.Errorf("allowed requests = %v, want all 11", got)
	}
	if !strings.Contains(h.logs.String(), "inbound request rate limited") || !strings.Contains(h.logs.String(), "scope=identity") {
		t.Errorf("no log of the rate limited request:\n%s", h.logs)
	}
}

// TestRateLimitDeniedFirst: a request authorization denies is a 403,
// whatever the limit, and takes none of it.
func TestRateLimitDeniedFirst(t *testing.T) {
	p := limitedPolicy("r1", 1, 0)
	p.Ports[0].Authorizations = []*inboundv1.Authorization{at.Authz("web-only", at.MeshTLS("m", web))}
	h, _ := startLimited(t, p)
	denied := h.conn(t, other)
	for range 3 {
		err := denied.AuthorizeRequest(httptest.NewRequest("GET", "/", nil))
		var rl *httpproxy.RateLimited
		if err == nil || errors.As(err, &rl) {
			t.Fatalf("AuthorizeRequest = %v, want a denial", err)
		}
	}
	if rl := request(t, h.conn(t, web), "/"); rl != nil {
		t.Errorf("web after the denials: %v; the denials took the total", rl)
	}
}

// TestRateLimitUnderAudit: a would-be denial let through by audit is still
// limited.
func TestRateLimitUnderAudit(t *testing.T) {
	p := limitedPolicy("r1", 1, 0)
	p.Audit, p.Ports[0].Authorizations = true, nil
	h, _ := startLimited(t, p)
	c := h.conn(t, other)
	if rl := request(t, c, "/"); rl != nil {
		t.Fatalf("first: %v", rl)
	}
	if rl := request(t, c, "/"); rl == nil || rl.Scope != "total" {
		t.Errorf("second: %+v, want the total's refusal", rl)
	}
}

// TestRateLimitAcrossPolicies: a new policy keeps the count of a limit it
// does not change, and a changed limit starts afresh; an open connection
// follows.
func TestRateLimitAcrossPolicies(t *testing.T) {
	h, _ := startLimited(t, limitedPolicy("r1", 1, 0))
	c := h.conn(t, web)
	if rl := request(t, c, "/"); rl != nil {
		t.Fatal(rl)
	}
	same := limitedPolicy("r2", 1, 0)
	same.Ports[0].Authorizations = append(same.Ports[0].Authorizations, at.Authz("another"))
	h.set(t, same)
	if rl := request(t, c, "/"); rl == nil {
		t.Error("an unrelated policy change gave the limit a fresh burst")
	}
	h.set(t, limitedPolicy("r3", 2, 0))
	if rl := request(t, c, "/"); rl != nil {
		t.Errorf("a new limit: %v, want a fresh one", rl)
	}
	h.set(t, at.AllowAll())
	for range 5 {
		if err := c.AuthorizeRequest(httptest.NewRequest("GET", "/", nil)); err != nil {
			t.Fatalf("the limit is gone: %v", err)
		}
	}
}

// TestRateLimitServerLabelBounded: the server label keeps 100 values,
// then counts under "other".
func TestRateLimitServerLabelBounded(t *testing.T) {
	h := start(t, time.Second)
	for i := range maxServers + 10 {
		h.e.rateLimited.counter(fmt.Sprintf("s%d", i), string(authz.ScopeTotal)).Inc()
	}
	h.e.rateLimited.counter("s0", string(authz.ScopeIdentity)).Inc()
	if got := h.sum(t, "mesh_proxy_http_rate_limited_total", "server", "other"); got != 10 {
		t.Errorf("other = %v, want 10", got)
	}
	if got := h.sum(t, "mesh_proxy_http_rate_limited_total", "server", "s0"); got != 2 {
		t.Errorf("s0 = %v, want 2 (a known server keeps its label)", got)
	}
	if got := h.sum(t, "mesh_proxy_http_rate_limited_total"); got != maxServers+11 {
		t.Errorf("total = %v, want every request counted", got)
	}
}
