package viz

import (
	"context"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

const (
	webID     = "spiffe://cluster.local/ns/shop/sa/web"
	backendID = "spiffe://cluster.local/ns/shop/sa/backend"
)

// shop is a namespace with two meshed web pods calling a meshed backend
// over mesh TLS, and an unmeshed legacy pod.
type shop struct {
	*cluster
	webA, webB, backend *proxy
}

var (
	webInbound = labels{Direction: inbound, Authority: "web.shop:80", TargetAddr: "10.0.0.1:8080"}
	webToBack  = labels{
		Direction: outbound, Authority: "backend.shop:80", TargetAddr: "10.96.0.20:80",
		DstNamespace: "shop", DstWorkload: "deployment/backend", DstService: "backend", ServerID: backendID,
	}
	backInbound = labels{Direction: inbound, Authority: "backend.shop:80", TargetAddr: "10.0.0.3:8080", ClientID: webID}
	webTCP      = labels{Direction: inbound, TargetAddr: "10.0.0.1:8080"}
)

func newShop(t testing.TB) *shop {
	c := newCluster("shop", "other")
	s := &shop{cluster: c}
	s.webA = c.addPod(t, podSpec{ns: "shop", deploy: "web", suffix: "a", sa: "web", ip: "10.0.0.1", meshed: true})
	s.webB = c.addPod(t, podSpec{ns: "shop", deploy: "web", suffix: "b", sa: "web", ip: "10.0.0.2", meshed: true})
	s.backend = c.addPod(t, podSpec{ns: "shop", deploy: "backend", suffix: "a", sa: "backend", ip: "10.0.0.3", meshed: true})
	c.addPod(t, podSpec{ns: "shop", deploy: "legacy", suffix: "a", sa: "legacy", ip: "10.0.0.4"})
	c.addService("shop", "web", "10.96.0.10", map[string]string{"app": "web"})
	c.addService("shop", "backend", "10.96.0.20", map[string]string{"app": "backend"})
	return s
}

// traffic is what the shop does between two scrapes: 150 requests to web
// (10 failing slowly), 30 of which web-a sends on to backend, and TCP.
func (s *shop) traffic() {
	s.webA.serve(webInbound, 90, 200, 18*time.Millisecond)
	s.webA.serve(webInbound, 10, 503, 300*time.Millisecond)
	s.webB.serve(webInbound, 50, 200, 18*time.Millisecond)
	s.webA.serve(webToBack, 30, 200, 5*time.Millisecond)
	s.backend.serve(backInbound, 30, 200, 4*time.Millisecond)
	s.webA.connect(webTCP, 3, 1, 500, 1000)
	// backend's Server lets web in and refuses others: 4 requests and 2
	// connections denied, from two clients; what was allowed, or let
	// through by audit, is not a denial.
	s.backend.authorize(authz{http: true, server: "backend-http", policy: "web-only", clientID: webID, decision: "allow"}, 30)
	s.backend.authorize(authz{http: true, server: "backend-http", clientID: "spiffe://cluster.local/ns/other/sa/x", decision: "deny"}, 3)
	s.backend.authorize(authz{http: true, server: "backend-http", decision: "deny"}, 1)
	s.backend.authorize(authz{server: "backend-redis", decision: "deny"}, 2)
	s.webB.authorize(authz{http: true, server: "default", policy: "default:audit", decision: "audit"}, 5)
}

// scraped starts viz on the shop and runs two scrape rounds 5s apart:
// the first sets the baselines (the proxies had traffic before), the
// second sees one round of traffic.
func (s *shop) scraped(t testing.TB) (*Viz, string) {
	t.Helper()
	s.webA.serve(webInbound, 7, 200, time.Millisecond) // before the first scrape
	v, url := s.start(t, nil)
	base := time.Now()
	v.round(context.Background(), base)
	s.traffic()
	v.round(context.Background(), base.Add(testInterval))
	return v, url
}

func ptr[T any](v T) *T { return &v }

// approx compares float pointers to a millionth.
var approx = cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) < 1e-6 })

func TestStat(t *testing.T) {
	s := newShop(t)
	_, base := s.scraped(t)
	webTotal := s.webA.total(t, map[string]string{"direction": inbound}) + s.webB.total(t, map[string]string{"direction": inbound})
	if webTotal != 157 {
		t.Fatalf("web pods exported %d responses, want 157", webTotal)
	}
	webStats := vizv1.Stats{
		Requests: 150, Successes: 140, SuccessRate: ptr(140.0 / 150), RPS: 30,
		// 140 observations in (15ms, 20ms], 10 in (250ms, 500ms].
		LatencyP50:     ptr(15 + 5*75.0/140),
		LatencyP95:     ptr(250 + 250*2.5/10),
		LatencyP99:     ptr(250 + 250*8.5/10),
		TCPConnections: 2, ReadBytesPerSec: 100, WriteBytesPerSec: 200,
		TotalRequests: webTotal, Denied: ptr[uint64](0), DeniedPerSec: ptr(0.0),
	}
	backendStats := vizv1.Stats{
		Requests: 30, Successes: 30, SuccessRate: ptr(1.0), RPS: 6,
		LatencyP50: ptr(2.5 + 2.5*0.5), LatencyP95: ptr(2.5 + 2.5*0.95), LatencyP99: ptr(2.5 + 2.5*0.99),
		TotalRequests: 30, Denied: ptr[uint64](6), DeniedPerSec: ptr(6.0 / 5),
	}
	// Clients' outbound figures carry no denials: the server counts them.
	noDenials := vizv1.Stats{Denied: ptr[uint64](0), DeniedPerSec: ptr(0.0)}
	toBackend := backendStats
	toBackend.Denied, toBackend.DeniedPerSec = nil, nil
	// 5ms is the upper bound of the bucket (2.5ms, 5ms], like backend's 4ms.
	backend := vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "backend"}
	legacy := vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "legacy"}
	web := vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "web"}
	tests := []struct {
		name string
		q    url.Values
		want []vizv1.StatRow
	}{
		{
			name: "deployments, with and without traffic or proxies",
			q:    values("kind", "deploy", "namespace", "shop"),
			want: []vizv1.StatRow{
				{Resource: backend, MeshedPods: 1, TotalPods: 1, Stats: backendStats, Identities: []string{backendID}},
				{Resource: legacy, MeshedPods: 0, TotalPods: 1, Stats: noDenials},
				{Resource: web, MeshedPods: 2, TotalPods: 2, Stats: webStats, Identities: []string{webID}},
			},
		},
		{
			name: "one deployment",
			q:    values("kind", "deployment", "namespace", "shop", "name", "web", "window", "30s"),
			want: []vizv1.StatRow{{Resource: web, MeshedPods: 2, TotalPods: 2, Stats: webStats, Identities: []string{webID}}},
		},
		{
			name: "one pod",
			q:    values("kind", "po", "namespace", "shop", "name", "web-5d8f7c-b"),
			want: []vizv1.StatRow{{
				Resource: vizv1.Resource{Kind: "pod", Namespace: "shop", Name: "web-5d8f7c-b"}, MeshedPods: 1, TotalPods: 1,
				Stats: vizv1.Stats{
					Requests: 50, Successes: 50, SuccessRate: ptr(1.0), RPS: 10,
					LatencyP50: ptr(17.5), LatencyP95: ptr(19.75), LatencyP99: ptr(19.95), TotalRequests: 50,
					Denied: ptr[uint64](0), DeniedPerSec: ptr(0.0),
				},
				Identities: []string{webID},
			}},
		},
		{
			name: "a service: its clients' outbound traffic",
			q:    values("kind", "svc", "namespace", "shop", "name", "backend"),
			want: []vizv1.StatRow{{
				Resource: vizv1.Resource{Kind: "service", Namespace: "shop", Name: "backend"}, MeshedPods: 1, TotalPods: 1,
				Stats: toBackend, Identities: []string{backendID},
			}},
		},
		{
			name: "from a deployment",
			q:    values("kind", "deploy", "namespace", "shop", "from", "deploy/web"),
			want: []vizv1.StatRow{
				{Resource: backend, MeshedPods: 1, TotalPods: 1, Stats: toBackend, Identities: []string{backendID}},
				{Resource: legacy, MeshedPods: 0, TotalPods: 1},
				{Resource: web, MeshedPods: 2, TotalPods: 2, Identities: []string{webID}},
			},
		},
		{
			name: "to a service",
			q:    values("kind", "pod", "namespace", "shop", "name", "web-5d8f7c-a", "to", "svc/backend"),
			want: []vizv1.StatRow{{
				Resource: vizv1.Resource{Kind: "pod", Namespace: "shop", Name: "web-5d8f7c-a"}, MeshedPods: 1, TotalPods: 1,
				Stats: toBackend, Identities: []string{webID},
			}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got vizv1.StatList
			if code := getJSON(t, base, vizv1.PathStat, tc.q, &got); code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			if diff := cmp.Diff(tc.want, got.Rows, approx); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
			if got.Collected.IsZero() || got.Window == "" {
				t.Errorf("collected %v, window %q", got.Collected, got.Window)
			}
		})
	}
}

func TestStatNamespaces(t *testing.T) {
	s := newShop(t)
	_, base := s.scraped(t)
	var got vizv1.StatList
	getJSON(t, base, vizv1.PathStat, values("kind", "ns"), &got)
	if len(got.Rows) != 2 || got.Rows[0].Resource.Name != "other" || got.Rows[1].Resource.Name != "shop" {
		t.Fatalf("rows %+v, want other and shop", got.Rows)
	}
	shopRow := got.Rows[1]
	if shopRow.MeshedPods != 3 || shopRow.TotalPods != 4 || shopRow.Requests != 180 || len(shopRow.Identities) != 2 {
		t.Errorf("shop: %d/%d pods meshed, %d requests, identities %v; want 3/4, 180 inbound, 2",
			shopRow.MeshedPods, shopRow.TotalPods, shopRow.Requests, shopRow.Identities)
	}
	if shopRow.Denied == nil || *shopRow.Denied != 6 {
		t.Errorf("shop: denied %v, want backend's 6", shopRow.Denied)
	}
	if got.Window != "1m" {
		t.Errorf("window %q, want the default 1m", got.Window)
	}
}

func TestEdges(t *testing.T) {
	s := newShop(t)
	_, base := s.scraped(t)
	// Plain-text traffic from backend to web makes a second edge.
	plain := labels{Direction: outbound, TargetAddr: "10.96.0.10:80", Authority: "web.shop:80",
		DstNamespace: "shop", DstWorkload: "deployment/web", DstService: "web"}
	s.backend.serve(plain, 5, 200, time.Millisecond)
	var got vizv1.EdgeList
	getJSON(t, base, vizv1.PathEdges, values("namespace", "shop"), &got)
	want := []vizv1.Edge{{
		Src:   vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "web"},
		Dst:   vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "backend"},
		SrcID: webID, DstID: backendID, MTLS: true,
	}}
	opts := []cmp.Option{approx, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Stats" }, cmp.Ignore())}
	if diff := cmp.Diff(want, got.Edges, opts...); diff != "" {
		t.Errorf("edges (-want +got):\n%s", diff)
	}
	if len(got.Edges) == 1 && (got.Edges[0].Requests != 30 || got.Edges[0].TotalRequests != 30) {
		t.Errorf("edge stats %+v, want 30 requests", got.Edges[0].Stats)
	}

	v, _ := s.start(t, nil) // the same pods, a new viz: scrape the plain edge
	now := time.Now()
	v.round(context.Background(), now)
	s.backend.serve(plain, 5, 200, time.Millisecond)
	v.round(context.Background(), now.Add(testInterval))
	edges, _ := v.store.edges("", time.Minute, testInterval)
	if len(edges) != 1 || edges[0].Src.Name != "backend" || edges[0].MTLS || edges[0].DstID != "" || edges[0].SrcID != backendID {
		t.Errorf("plain-text edge: %+v", edges)
	}
	if other, _ := v.store.edges("other", time.Minute, testInterval); len(other) != 0 {
		t.Errorf("edges of namespace other: %+v", other)
	}
}

func TestSeries(t *testing.T) {
	s := newShop(t)
	v, base := s.start(t, nil)
	now := time.Now()
	// Rounds every 5s for a minute, web serving 10 requests in each.
	for i := range 13 {
		if i > 0 {
			s.webB.serve(webInbound, 10, 200, 18*time.Millisecond)
			s.webB.authorize(authz{server: "web-tcp", decision: "deny"}, 1)
		}
		v.round(context.Background(), now.Add(time.Duration(i)*testInterval))
	}
	var got vizv1.Series
	code := getJSON(t, base, vizv1.PathSeries, values("kind", "deploy", "namespace", "shop", "name", "web", "window", "2m", "step", "20s"), &got)
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if got.Step != "20s" || got.Resource.Name != "web" {
		t.Errorf("step %q resource %+v", got.Step, got.Resource)
	}
	// The first round, a baseline, is the start of the data: three points
	// of 20s hold the 12 rounds after it.
	var reqs, denied []uint64
	var rps []float64
	for _, p := range got.Points {
		reqs = append(reqs, p.Requests)
		rps = append(rps, p.RPS)
		if p.Denied != nil {
			denied = append(denied, *p.Denied)
		}
	}
	if diff := cmp.Diff([]uint64{40, 40, 40}, reqs); diff != "" {
		t.Errorf("requests per point (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint64{4, 4, 4}, denied); diff != "" {
		t.Errorf("denials per point (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]float64{2, 2, 2}, rps, approx); diff != "" {
		t.Errorf("rps per point (-want +got):\n%s", diff)
	}
	if n := len(got.Points); n > 0 && !got.Points[n-1].Time.Equal(now.Add(12*testInterval)) {
		t.Errorf("last point at %v, want the last round", got.Points[n-1].Time)
	}

	// A step that is not a multiple of the interval is rounded up to one.
	getJSON(t, base, vizv1.PathSeries, values("kind", "pod", "namespace", "shop", "name", "web-5d8f7c-b", "step", "7s"), &got)
	if got.Step != "10s" {
		t.Errorf("step 7s answered as %q, want 10s", got.Step)
	}
}

func TestAPIErrors(t *testing.T) {
	s := newShop(t)
	_, base := s.start(t, nil)
	tests := []struct {
		name     string
		path     string
		q        url.Values
		wantCode int
		wantMsg  string
	}{
		{name: "no kind", path: vizv1.PathStat, q: values("namespace", "shop"), wantCode: 400, wantMsg: "kind is required: deploy, pod, svc or ns"},
		{name: "bad kind", path: vizv1.PathStat, q: values("kind", "cronjob"), wantCode: 400, wantMsg: `unknown kind "cronjob": use deploy, pod, svc or ns`},
		{name: "unknown parameter", path: vizv1.PathStat, q: values("kind", "deploy", "ns", "shop"), wantCode: 400, wantMsg: `unknown parameter "ns": /api/v1/stat takes kind, namespace, name, from, to, window`},
		{name: "window too long", path: vizv1.PathStat, q: values("kind", "deploy", "window", "1h"), wantCode: 400, wantMsg: "window 1h: must be between 5s and 16m"},
		{name: "window not a duration", path: vizv1.PathStat, q: values("kind", "deploy", "window", "5"), wantCode: 400, wantMsg: "use Go's syntax"},
		{name: "bad namespace", path: vizv1.PathStat, q: values("kind", "deploy", "namespace", "Shop!"), wantCode: 400, wantMsg: "not a valid namespace"},
		{name: "from and to", path: vizv1.PathStat, q: values("kind", "deploy", "namespace", "shop", "from", "deploy/web", "to", "svc/backend"), wantCode: 400, wantMsg: "at most one"},
		{name: "from without namespace", path: vizv1.PathStat, q: values("kind", "deploy", "from", "deploy/web"), wantCode: 400, wantMsg: "need a namespace"},
		{name: "to a pod", path: vizv1.PathStat, q: values("kind", "deploy", "namespace", "shop", "to", "po/web-5d8f7c-a"), wantCode: 400, wantMsg: "deploy or svc it goes to"},
		{name: "pods from", path: vizv1.PathStat, q: values("kind", "pod", "namespace", "shop", "from", "deploy/web"), wantCode: 400, wantMsg: "not by pod"},
		{name: "from a missing deployment", path: vizv1.PathStat, q: values("kind", "deploy", "namespace", "shop", "from", "deploy/nope"), wantCode: 404, wantMsg: "deployment/nope not found in namespace shop"},
		{name: "missing deployment", path: vizv1.PathStat, q: values("kind", "deploy", "namespace", "shop", "name", "nope"), wantCode: 404, wantMsg: "deployment/nope not found in namespace shop"},
		{name: "series without name", path: vizv1.PathSeries, q: values("kind", "deploy", "namespace", "shop"), wantCode: 400, wantMsg: "kind and name are required"},
		{name: "series step too short", path: vizv1.PathSeries, q: values("kind", "deploy", "namespace", "shop", "name", "web", "step", "1s"), wantCode: 400, wantMsg: "step 1s: must be between 5s and 10m"},
		{name: "series of a missing pod", path: vizv1.PathSeries, q: values("kind", "pod", "namespace", "shop", "name", "nope"), wantCode: 404, wantMsg: "pod/nope not found"},
		{name: "edges bad window", path: vizv1.PathEdges, q: values("window", "-1m"), wantCode: 400, wantMsg: "must be between"},
		{name: "routes without kind", path: vizv1.PathRoutes, q: values("namespace", "shop"), wantCode: 400, wantMsg: "kind is required: deploy, pod, svc or ns"},
		{name: "routes of a service", path: vizv1.PathRoutes, q: values("kind", "svc", "namespace", "shop", "name", "web"), wantCode: 400, wantMsg: "kind svc: routes are counted by the clients' proxies, and a service sends nothing; use the deploy, pod or ns"},
		{name: "routes with a direction", path: vizv1.PathRoutes, q: values("kind", "deploy", "direction", "inbound"), wantCode: 400, wantMsg: `unknown parameter "direction": /api/v1/routes takes kind, namespace, name, window`},
		{name: "routes with stat's from", path: vizv1.PathRoutes, q: values("kind", "deploy", "namespace", "shop", "from", "deploy/web"), wantCode: 400, wantMsg: `unknown parameter "from": /api/v1/routes takes kind, namespace, name, window`},
		{name: "routes window too long", path: vizv1.PathRoutes, q: values("kind", "deploy", "window", "1h"), wantCode: 400, wantMsg: "window 1h: must be between 5s and 16m"},
		{name: "routes bad name", path: vizv1.PathRoutes, q: values("kind", "deploy", "name", "Web"), wantCode: 400, wantMsg: "is not a valid name"},
		{name: "routes of a missing deployment", path: vizv1.PathRoutes, q: values("kind", "deploy", "namespace", "shop", "name", "nope"), wantCode: 404, wantMsg: "deployment/nope not found in namespace shop"},
		{name: "routes of a missing namespace", path: vizv1.PathRoutes, q: values("kind", "ns", "name", "nope"), wantCode: 404, wantMsg: "namespace/nope not found"},
		// Tap needs the caller's right to tap, which only the tap API
		// checks: the plain API refuses it, whatever the query.
		{name: "tap", path: vizv1.PathTap, q: values("namespace", "shop", "resource", "deploy/web"), wantCode: 404, wantMsg: "tap is not served here: mesh viz tap reaches it through the Kubernetes API"},
		{name: "unknown path", path: "/api/v1/top", wantCode: 404, wantMsg: "the viz API serves /api/v1/stat, /api/v1/edges, /api/v1/routes and /api/v1/series"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got vizv1.Error
			code := getJSON(t, base, tc.path, tc.q, &got)
			if code != tc.wantCode || !strings.Contains(got.Error, tc.wantMsg) {
				t.Errorf("%d %q, want %d with %q", code, got.Error, tc.wantCode, tc.wantMsg)
			}
		})
	}

	resp, err := http.Post(base+vizv1.PathStat, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
		t.Errorf("POST: %d, Allow %q; want 405 with Allow", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// TestNotReady checks the API says what it waits for before its caches
// have synced.
func TestNotReady(t *testing.T) {
	v, base := newShop(t).start(t, nil)
	if err := v.Ready(); err != nil {
		t.Errorf("Ready with its caches synced: %v", err)
	}
	v.ready.Store(false)
	if err := v.Ready(); err == nil || !strings.Contains(err.Error(), "pod cache") {
		t.Errorf("Ready before its caches synced: %v, want what it waits for", err)
	}
	var got vizv1.Error
	if code := getJSON(t, base, vizv1.PathStat, values("kind", "deploy"), &got); code != http.StatusServiceUnavailable || !strings.Contains(got.Error, "pod cache") {
		t.Errorf("%d %q, want 503 saying what it waits for", code, got.Error)
	}
}
