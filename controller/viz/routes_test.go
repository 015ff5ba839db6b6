package viz

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// routed starts viz on the shop and runs two scrape rounds 5s apart, as
// scraped does, with the shop's traffic between them and more routes:
// web-b serves a few requests under the proxies' overflow authority and a
// few without one (whose label set is also that of its TCP connections),
// and web-a calls an address outside the mesh.
func (s *shop) routed(t testing.TB) string {
	t.Helper()
	s.webA.serve(webInbound, 7, 200, time.Millisecond) // before the first scrape
	v, base := s.start(t, nil)
	now := time.Now()
	v.round(context.Background(), now)
	s.traffic()
	noAuthority := labels{Direction: inbound, TargetAddr: "10.0.0.2:8080"}
	s.webB.serve(labels{Direction: inbound, Authority: "other", TargetAddr: "10.0.0.2:8080"}, 5, 200, 18*time.Millisecond)
	s.webB.serve(noAuthority, 4, 200, 18*time.Millisecond)
	s.webB.connect(noAuthority, 2, 1, 100, 300)
	s.webA.serve(labels{Direction: outbound, Authority: "api.example.com:443", TargetAddr: "93.184.216.34:443"}, 10, 200, 35*time.Millisecond)
	v.round(context.Background(), now.Add(testInterval))
	return base
}

func TestRoutes(t *testing.T) {
	base := newShop(t).routed(t)
	// Requests in one bucket: (15ms, 20ms], (2.5ms, 5ms] or (30ms, 40ms].
	at18ms := func(n uint64) vizv1.Stats {
		return vizv1.Stats{Requests: n, Successes: n, SuccessRate: ptr(1.0), RPS: float64(n) / 5,
			LatencyP50: ptr(17.5), LatencyP95: ptr(19.75), LatencyP99: ptr(19.95), TotalRequests: n}
	}
	backendCalls := vizv1.Stats{Requests: 30, Successes: 30, SuccessRate: ptr(1.0), RPS: 6,
		LatencyP50: ptr(2.5 + 2.5*0.5), LatencyP95: ptr(2.5 + 2.5*0.95), LatencyP99: ptr(2.5 + 2.5*0.99), TotalRequests: 30}
	exampleCalls := vizv1.Stats{Requests: 10, Successes: 10, SuccessRate: ptr(1.0), RPS: 2,
		LatencyP50: ptr(35.0), LatencyP95: ptr(39.5), LatencyP99: ptr(39.9), TotalRequests: 10}
	// Both web pods: 140 in (15ms, 20ms], 10 failures in (250ms, 500ms],
	// and 7 before the first scrape in the total.
	webServed := vizv1.Stats{Requests: 150, Successes: 140, SuccessRate: ptr(140.0 / 150), RPS: 30,
		LatencyP50: ptr(15 + 5*75.0/140), LatencyP95: ptr(250 + 250*2.5/10), LatencyP99: ptr(250 + 250*8.5/10), TotalRequests: 157}
	webAServed := vizv1.Stats{Requests: 100, Successes: 90, SuccessRate: ptr(0.9), RPS: 20,
		LatencyP50: ptr(15 + 5*50.0/90), LatencyP95: ptr(250 + 250*5.0/10), LatencyP99: ptr(250 + 250*9.0/10), TotalRequests: 107}

	web := vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "web"}
	backend := vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "backend"}
	webA := vizv1.Resource{Kind: "pod", Namespace: "shop", Name: "web-5d8f7c-a"}
	shopNS := vizv1.Resource{Kind: "namespace", Name: "shop"}
	webIn := []vizv1.Route{
		{Resource: web, Direction: "inbound", Authority: "", Stats: at18ms(4)},
		{Resource: web, Direction: "inbound", Authority: "other", Stats: at18ms(5)},
		{Resource: web, Direction: "inbound", Authority: "web.shop:80", Stats: webServed},
	}
	webOut := []vizv1.Route{
		{Resource: web, Direction: "outbound", Authority: "api.example.com:443", Stats: exampleCalls},
		{Resource: web, Direction: "outbound", Authority: "backend.shop:80", Dst: &backend, Stats: backendCalls},
	}
	tests := []struct {
		name string
		q    url.Values
		want []vizv1.Route
	}{
		{
			name: "a deployment's inbound routes by default, over its pods, without TCP figures",
			q:    values("kind", "deploy", "namespace", "shop", "name", "web"),
			want: webIn,
		},
		{
			name: "outbound: per authority and destination, none when unknown",
			q:    values("kind", "deployment", "namespace", "shop", "name", "web", "direction", "outbound", "window", "30s"),
			want: webOut,
		},
		{
			name: "both directions",
			q:    values("kind", "deploy", "namespace", "shop", "name", "web", "direction", "all"),
			want: append(append([]vizv1.Route{}, webIn...), webOut...),
		},
		{
			name: "one pod",
			q:    values("kind", "po", "namespace", "shop", "name", "web-5d8f7c-a", "direction", "all"),
			want: []vizv1.Route{
				{Resource: webA, Direction: "inbound", Authority: "web.shop:80", Stats: webAServed},
				{Resource: webA, Direction: "outbound", Authority: "api.example.com:443", Stats: exampleCalls},
				{Resource: webA, Direction: "outbound", Authority: "backend.shop:80", Dst: &backend, Stats: backendCalls},
			},
		},
		{
			name: "every deployment of a namespace; one without a proxy has none",
			q:    values("kind", "deploy", "namespace", "shop", "direction", "inbound"),
			want: append([]vizv1.Route{{Resource: backend, Direction: "inbound", Authority: "backend.shop:80", Stats: backendCalls}}, webIn...),
		},
		{
			name: "a namespace",
			q:    values("kind", "ns", "name", "shop"),
			want: []vizv1.Route{
				{Resource: shopNS, Direction: "inbound", Authority: "", Stats: at18ms(4)},
				{Resource: shopNS, Direction: "inbound", Authority: "backend.shop:80", Stats: backendCalls},
				{Resource: shopNS, Direction: "inbound", Authority: "other", Stats: at18ms(5)},
				{Resource: shopNS, Direction: "inbound", Authority: "web.shop:80", Stats: webServed},
			},
		},
		{
			name: "a deployment without traffic",
			q:    values("kind", "deploy", "namespace", "shop", "name", "legacy"),
			want: []vizv1.Route{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got vizv1.RouteList
			if code := getJSON(t, base, vizv1.PathRoutes, tc.q, &got); code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			// An empty list is [], not null: cmp tells them apart.
			if diff := cmp.Diff(tc.want, got.Routes, approx); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
			wantWindow := tc.q.Get("window")
			if wantWindow == "" {
				wantWindow = "1m"
			}
			if got.Collected.IsZero() || got.Window != wantWindow {
				t.Errorf("collected %v, window %q; want a time and %q", got.Collected, got.Window, wantWindow)
			}
		})
	}
}
