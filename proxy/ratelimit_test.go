package proxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	at "github.com/mesh-dev/mesh/proxy/authz/authztest"
	"github.com/mesh-dev/mesh/proxy/policy/policytest"
)

// limited is a pod whose port lets everyone in, one request a second in
// total (an HTTPLocalRateLimitPolicy); /healthz is a probe.
func limited(port uint32) *inboundv1.PodPolicy {
	return &inboundv1.PodPolicy{
		Revision: "r1", DefaultPolicy: "deny",
		Ports: []*inboundv1.PortPolicy{{Port: port, Server: "api", Authorizations: []*inboundv1.Authorization{at.Authz("everyone")},
			RateLimit: &inboundv1.RateLimit{Name: "rl", TotalRps: 1}}},
		Probes: []*inboundv1.Probe{{Port: port, Path: "/healthz"}},
	}
}

// TestInboundRateLimitHTTP: past a Server's rate limit, HTTP/1 and h2c
// clients get 429 with Retry-After and the reason, never the
// application; probes pass; each is counted.
func TestInboundRateLimitHTTP(t *testing.T) {
	app := backend(t, named("hello from api", 0))
	fake, policyAddr, _ := policytest.Start(t)
	fake.Set(limited(portOf(t, app)))
	p := startProxy(t, app, withPolicy(policyAddr, 10*time.Second))
	waitReady(t, p)

	for _, tc := range []struct {
		name   string
		client *http.Client
	}{{"HTTP/1", h1Client(t)}, {"h2c", h2cClient(t)}} {
		t.Run(tc.name, func(t *testing.T) {
			// The first may find the second's cell of the previous subtest
			// not yet due: the limit admits one request a second.
			deadline := time.Now().Add(3 * time.Second)
			for {
				if status, _ := get(t, tc.client, "http://"+p.inbound+"/"); status == 200 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no request admitted in 3s")
				}
				time.Sleep(100 * time.Millisecond)
			}
			res, err := tc.client.Get("http://" + p.inbound + "/")
			if err != nil {
				t.Fatal(err)
			}
			body := new(strings.Builder)
			_, _ = io.Copy(body, res.Body)
			res.Body.Close()
			want := `mesh-proxy: rate limited: server "api" allows 1 request per second in total; retry after 1s`
			if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") != "1" ||
				res.Header.Get("Mesh-Proxy-Error") != "rate limited" || !strings.HasPrefix(body.String(), want) {
				t.Errorf("got %d, Retry-After %q, Mesh-Proxy-Error %q, %q; want 429, 1, rate limited, %q",
					res.StatusCode, res.Header.Get("Retry-After"), res.Header.Get("Mesh-Proxy-Error"), body, want)
			}
			if status, _ := get(t, tc.client, "http://"+p.inbound+"/healthz"); status != 200 {
				t.Errorf("probe: %d, want 200", status)
			}
		})
	}
	if got := p.counter(t, "mesh_proxy_http_rate_limited_total", "server", "api", "scope", "total"); got < 2 {
		t.Errorf("rate limited requests counted = %v, want at least 2", got)
	}
}

// TestInboundRateLimitGRPC: a gRPC client past the limit sees
// RESOURCE_EXHAUSTED with the reason.
func TestInboundRateLimitGRPC(t *testing.T) {
	app := startGRPC(t)
	fake, policyAddr, _ := policytest.Start(t)
	fake.Set(limited(portOf(t, app)))
	p := startProxy(t, app, withPolicy(policyAddr, 10*time.Second))
	waitReady(t, p)
	hc := healthClient(t, p.inbound)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := hc.List(ctx, &healthpb.HealthListRequest{}); err != nil {
		t.Fatalf("first call: %v", err)
	}
	_, err := hc.List(ctx, &healthpb.HealthListRequest{})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "mesh-proxy: rate limited") {
		t.Errorf("second call: %v; want ResourceExhausted from the proxy", err)
	}
}
