package h2

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
	"github.com/mesh-dev/mesh/proxy/route"
)

// The backends' authorities, as the controller names them in a table.
const (
	v1Authority   = "web-v1.shop.svc.cluster.local:80"
	v2Authority   = "web-v2.shop.svc.cluster.local:80"
	grpcAuthority = "grpc.shop.svc.cluster.local:50051"
)

// echoed is what an echo backend saw of a request.
type echoed struct {
	Backend string
	Host    string
	Path    string // with the query
	Header  http.Header
}

// startEcho is an h2c backend serving echo(name).
func startEcho(t testing.TB, name string) string {
	t.Helper()
	return startBackend(t, echo(name))
}

// echo is a backend named name that answers every request with what it
// saw, as JSON, and its name in x-backend.
func echo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Remove-Me", "1")
		w.Header().Add("X-Twice", "a")
		w.Header().Add("X-Twice", "b")
		json.NewEncoder(w).Encode(echoed{Backend: name, Host: r.Host, Path: r.URL.RequestURI(), Header: r.Header})
	})
}

// routedProxy is an outbound proxy whose target (backends[""]) has the
// route table rt, and whose Pick sends a backend authority to the address
// backends maps it to; one it does not map has no endpoints. Pick notes
// the backend of each pick.
type routedProxy struct {
	*testProxy
	mu     sync.Mutex
	picked []string
}

func startRoutedProxy(t testing.TB, rt *destinationv1.RouteTable, backends map[string]string, opts ...func(*Config, *httpproxy.ConnInfo)) *routedProxy {
	t.Helper()
	table, err := route.Compile(rt)
	if err != nil {
		t.Fatal(err)
	}
	rp := &routedProxy{}
	pick := func(_ context.Context, _ netip.AddrPort, backend string) (httpproxy.Endpoint, error) {
		rp.mu.Lock()
		rp.picked = append(rp.picked, backend)
		rp.mu.Unlock()
		addr, ok := backends[backend]
		if !ok {
			return httpproxy.Endpoint{}, httpproxy.ErrNoEndpoints
		}
		return httpproxy.Endpoint{Addr: netip.MustParseAddrPort(addr)}, nil
	}
	routed := func(c *Config, _ *httpproxy.ConnInfo) {
		c.Direction, c.Pick = metrics.Outbound, pick
		c.Routes = func(netip.AddrPort) *route.Table { return table }
	}
	rp.testProxy = startTestProxy(t, backends[""], append([]func(*Config, *httpproxy.ConnInfo){routed}, opts...)...)
	return rp
}

func (rp *routedProxy) picks() []string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return slices.Clone(rp.picked)
}

// Builders of the controller's tables.

func httpTable(rules ...*destinationv1.Rule) *destinationv1.RouteTable {
	return &destinationv1.RouteTable{Version: 1, HttpRules: rules}
}

func rule(name string, m *destinationv1.Match, backends ...*destinationv1.Backend) *destinationv1.Rule {
	r := &destinationv1.Rule{
		Route:    &destinationv1.Resource{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: "shop", Name: "web"},
		RuleName: name, Backends: backends,
	}
	if m != nil {
		r.Matches = []*destinationv1.Match{m}
	}
	return r
}

func backendRef(authority string, weight uint32, filters ...*destinationv1.Filter) *destinationv1.Backend {
	return &destinationv1.Backend{Authority: authority, Weight: weight, Filters: filters}
}

func prefix(p string) *destinationv1.Match {
	return &destinationv1.Match{Path: &destinationv1.Match_Prefix{Prefix: p}}
}

func headers(set, add [][2]string, remove ...string) *destinationv1.HeaderModifier {
	hm := &destinationv1.HeaderModifier{Remove: remove}
	for _, h := range set {
		hm.Set = append(hm.Set, &destinationv1.Header{Name: h[0], Value: h[1]})
	}
	for _, h := range add {
		hm.Add = append(hm.Add, &destinationv1.Header{Name: h[0], Value: h[1]})
	}
	return hm
}

// get sends a GET of path with host and header through p and returns the
// response, its body read.
func get(t testing.TB, client *http.Client, p *routedProxy, host, path string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+p.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, vs := range header {
		req.Header[k] = vs
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

func decodeSeen(t testing.TB, b []byte) echoed {
	t.Helper()
	var s echoed
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("backend's answer %q: %v", b, err)
	}
	return s
}

// TestRouteHeaderMatch: a request with the header the first rule matches
// goes to that rule's backend, others to the catch-all's; neither goes to
// the target itself.
func TestRouteHeaderMatch(t *testing.T) {
	backends := map[string]string{"": startEcho(t, "target"), v1Authority: startEcho(t, "v1"), v2Authority: startEcho(t, "v2")}
	canary := &destinationv1.Match{
		Path:    &destinationv1.Match_Prefix{Prefix: "/"},
		Headers: []*destinationv1.HeaderMatch{{Name: "x-canary", Value: &destinationv1.HeaderMatch_Exact{Exact: "yes"}}},
	}
	p := startRoutedProxy(t, httpTable(rule("0", canary, backendRef(v2Authority, 1)), rule("1", prefix("/"), backendRef(v1Authority, 1))), backends)
	client := h2cClient(t)
	for _, tc := range []struct {
		name   string
		header http.Header
		want   string
	}{
		{name: "header", header: http.Header{"X-Canary": {"yes"}}, want: "v2"},
		{name: "other value", header: http.Header{"X-Canary": {"no"}}, want: "v1"},
		{name: "none", want: "v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, b := get(t, client, p, "web.shop", "/items", tc.header)
			if got := res.Header.Get("X-Backend"); res.StatusCode != 200 || got != tc.want {
				t.Errorf("got %d from %q, want 200 from %q (%s)", res.StatusCode, got, tc.want, b)
			}
		})
	}
}

// TestRouteWeightedSplit: a 90/10 split sends about a tenth of the
// requests to the lighter backend. Over 1,000 requests its share has a
// standard deviation of about one point: ±5 points never flakes.
func TestRouteWeightedSplit(t *testing.T) {
	backends := map[string]string{"": startEcho(t, "target"), v1Authority: startEcho(t, "v1"), v2Authority: startEcho(t, "v2")}
	p := startRoutedProxy(t, httpTable(rule("0", prefix("/"), backendRef(v1Authority, 90), backendRef(v2Authority, 10))), backends)
	client := h2cClient(t)
	const requests = 1000
	n := map[string]int{}
	for range requests {
		res, _ := get(t, client, p, "web.shop", "/", nil)
		n[res.Header.Get("X-Backend")]++
	}
	if n["v1"]+n["v2"] != requests {
		t.Fatalf("answers by backend %v, want all from v1 and v2", n)
	}
	if share := 100 * n["v2"] / requests; share < 5 || share > 15 {
		t.Errorf("v2 took %d%% of the requests (%v), want 10%% ± 5", share, n)
	}
}

// TestRouteHeaderFilters: the rule's request header filter, then its
// backend's, edit what the backend sees; the rule's response header filter
// edits what the client sees.
func TestRouteHeaderFilters(t *testing.T) {
	backends := map[string]string{"": startEcho(t, "target"), v1Authority: startEcho(t, "v1")}
	r := rule("0", prefix("/"), backendRef(v1Authority, 1, &destinationv1.Filter{Kind: &destinationv1.Filter_RequestHeaders{
		RequestHeaders: headers([][2]string{{"x-by-backend", "v1"}, {"x-set", "by-backend"}}, nil),
	}}))
	r.Filters = []*destinationv1.Filter{
		{Kind: &destinationv1.Filter_RequestHeaders{RequestHeaders: headers(
			[][2]string{{"x-set", "rule"}, {"x-new", "1"}},
			[][2]string{{"x-add", "added"}},
			"x-remove")}},
		{Kind: &destinationv1.Filter_ResponseHeaders{ResponseHeaders: headers(
			[][2]string{{"x-twice", "once"}},
			[][2]string{{"x-backend", "also"}},
			"x-remove-me")}},
	}
	p := startRoutedProxy(t, httpTable(r), backends)
	res, b := get(t, h2cClient(t), p, "web.shop", "/", http.Header{
		"X-Set": {"client", "client again"}, "X-Add": {"client"}, "X-Remove": {"gone"}, "X-Keep": {"kept"},
	})
	if res.StatusCode != 200 {
		t.Fatalf("got %d %s", res.StatusCode, b)
	}
	got := decodeSeen(t, b).Header
	wantReq := map[string][]string{
		"X-Set": {"by-backend"}, "X-New": {"1"}, "X-Add": {"client", "added"}, "X-Remove": nil,
		"X-Keep": {"kept"}, "X-By-Backend": {"v1"},
	}
	for name, want := range wantReq {
		if diff := cmp.Diff(want, got[name]); diff != "" {
			t.Errorf("the backend saw %s (-want +got):\n%s", name, diff)
		}
	}
	wantRes := map[string][]string{"X-Twice": {"once"}, "X-Backend": {"v1", "also"}, "X-Remove-Me": nil}
	for name, want := range wantRes {
		if diff := cmp.Diff(want, res.Header[name]); diff != "" {
			t.Errorf("the client saw %s (-want +got):\n%s", name, diff)
		}
	}
}

// TestRouteRedirect: a redirect rule answers itself, with its status and
// the Location it makes of the request's host and path, and no body.
func TestRouteRedirect(t *testing.T) {
	backends := map[string]string{"": startEcho(t, "target")}
	r := rule("0", prefix("/old"))
	r.Filters = []*destinationv1.Filter{{Kind: &destinationv1.Filter_Redirect{Redirect: &destinationv1.Redirect{
		Hostname: "new.example", StatusCode: 301,
		Path: &destinationv1.PathModifier{Replace: &destinationv1.PathModifier_Prefix{Prefix: "/new"}},
	}}}}
	p := startRoutedProxy(t, httpTable(r), backends)
	client := h2cClient(t)
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, b := get(t, client, p, "web.shop", "/old/a?x=1", nil)
	if want := "http://new.example/new/a?x=1"; res.StatusCode != 301 || res.Header.Get("Location") != want || len(b) != 0 {
		t.Errorf("got %d Location %q body %q, want 301 %q and no body", res.StatusCode, res.Header.Get("Location"), b, want)
	}
	if picks := p.picks(); len(picks) != 0 {
		t.Errorf("picked %q for a redirect", picks)
	}
}

// TestRouteRewrite: a URLRewrite's host and path prefix are what the
// backend sees.
func TestRouteRewrite(t *testing.T) {
	backends := map[string]string{"": startEcho(t, "target"), v1Authority: startEcho(t, "v1")}
	r := rule("0", prefix("/v1"), backendRef(v1Authority, 1))
	r.Filters = []*destinationv1.Filter{{Kind: &destinationv1.Filter_Rewrite{Rewrite: &destinationv1.Rewrite{
		Hostname: "api.internal",
		Path:     &destinationv1.PathModifier{Replace: &destinationv1.PathModifier_Prefix{Prefix: "/api"}},
	}}}}
	p := startRoutedProxy(t, httpTable(r), backends)
	res, b := get(t, h2cClient(t), p, "web.shop", "/v1/items?id=7", nil)
	if res.StatusCode != 200 {
		t.Fatalf("got %d %s", res.StatusCode, b)
	}
	s := decodeSeen(t, b)
	if s.Host != "api.internal" || s.Path != "/api/items?id=7" {
		t.Errorf("the backend saw host %q path %q, want \"api.internal\" \"/api/items?id=7\"", s.Host, s.Path)
	}
}

// TestRouteLocalAnswers: the answers a table gives itself, to HTTP and to
// gRPC clients: no rule matching, a rule the controller could not resolve,
// a rule with no backend. Each is counted as a request that reached no
// application.
func TestRouteLocalAnswers(t *testing.T) {
	grpcBackend, _ := startGRPC(t)
	backends := map[string]string{"": grpcBackend}
	failed := rule("1", prefix("/failed"))
	failed.Filters = []*destinationv1.Filter{{Kind: &destinationv1.Filter_Fail{Fail: &destinationv1.Fail{Status: 503, Message: "unresolved backend web-v3"}}}}
	grpcFailed := rule("2", &destinationv1.Match{GrpcService: "grpc.testing.TestService", GrpcMethod: "StreamingOutputCall"})
	grpcFailed.Filters = failed.Filters
	httpRules := httpTable(rule("0", prefix("/only")), failed)
	grpcRules := &destinationv1.RouteTable{Version: 1, GrpcRules: []*destinationv1.Rule{
		rule("0", &destinationv1.Match{GrpcService: "grpc.testing.TestService", GrpcMethod: "UnaryCall"}, backendRef(grpcAuthority, 1)),
		rule("1", &destinationv1.Match{GrpcService: "grpc.testing.TestService", GrpcMethod: "EmptyCall"}),
		grpcFailed,
	}}

	t.Run("HTTP", func(t *testing.T) {
		p := startRoutedProxy(t, httpRules, backends)
		client := h2cClient(t)
		for _, tc := range []struct {
			name, path string
			wantCode   int
			wantBody   string
		}{
			{name: "no match", path: "/other?q=1", wantCode: 404,
				wantBody: "mesh-proxy: no route of web.shop matches GET /other?q=1\n"},
			{name: "fail", path: "/failed", wantCode: 503, wantBody: "mesh-proxy: unresolved backend web-v3\n"},
			{name: "no backend", path: "/only", wantCode: 500, wantBody: "mesh-proxy: route shop/web rule 0 has no backend\n"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				res, b := get(t, client, p, "web.shop", tc.path, nil)
				if res.StatusCode != tc.wantCode || string(b) != tc.wantBody {
					t.Errorf("got %d %q, want %d %q", res.StatusCode, b, tc.wantCode, tc.wantBody)
				}
			})
		}
		if picks := p.picks(); len(picks) != 0 {
			t.Errorf("picked %q for requests the table answered", picks)
		}
		rec := httptest.NewRecorder()
		p.m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		fams, err := metricstest.Parse(bytes.NewReader(rec.Body.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		total, atTarget := fams.Sum("mesh_proxy_http_requests_total"), fams.Sum("mesh_proxy_http_requests_total", "target_addr", grpcBackend)
		if total != 3 || atTarget != 0 {
			t.Errorf("requests counted: %v, %v of them at the target; want 3, none at the target (they reached none)", total, atTarget)
		}
	})
	t.Run("gRPC", func(t *testing.T) {
		p := startRoutedProxy(t, grpcRules, map[string]string{"": grpcBackend, grpcAuthority: grpcBackend})
		client := grpcClient(t, p.addr)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Errorf("the routed call: %v", err)
		}
		_, err := client.EmptyCall(ctx, &testpb.Empty{}) // its rule has no backend
		if st := status.Convert(err); st.Code() != codes.Unknown || st.Message() != "mesh-proxy: route shop/web rule 1 has no backend" {
			t.Errorf("no backend: got %v, want Unknown (HTTP 500)", err)
		}
		stream, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "mesh-proxy: unresolved backend web-v3" {
			t.Errorf("fail: got %v, want Unavailable (HTTP 503)", err)
		}
		_, err = client.UnimplementedCall(ctx, &testpb.Empty{})
		if st := status.Convert(err); st.Code() != codes.Unimplemented || !strings.HasPrefix(st.Message(), "mesh-proxy: no route of ") {
			t.Errorf("no match: got %v, want Unimplemented from the proxy", err)
		}
	})
}

// TestRouteTimeout: a rule's request timeout, shorter than ResponseTimeout,
// bounds the wait for the response head from the request's arrival: the
// client gets 504, gRPC DEADLINE_EXCEEDED, and the backend's request is
// cancelled. Only loose bounds: the answer comes after the timeout and
// well before the backend would have answered.
func TestRouteTimeout(t *testing.T) {
	const timeout, slow = 300 * time.Millisecond, 2 * time.Second
	cancelled := make(chan struct{}, 1)
	slowBackend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(slow):
		case <-r.Context().Done():
			cancelled <- struct{}{}
		}
	}))
	grpcBackend, _ := startGRPC(t)
	withTimeout := func(r *destinationv1.Rule) *destinationv1.Rule {
		r.Timeouts = &destinationv1.Timeouts{Request: durationpb.New(timeout)}
		return r
	}
	longer := func(c *Config, _ *httpproxy.ConnInfo) { c.ResponseTimeout = time.Minute }

	t.Run("HTTP", func(t *testing.T) {
		p := startRoutedProxy(t, httpTable(withTimeout(rule("0", prefix("/"), backendRef(v1Authority, 1)))),
			map[string]string{"": slowBackend, v1Authority: slowBackend}, longer)
		start := time.Now()
		res, b := get(t, h2cClient(t), p, "web.shop", "/slow", nil)
		took := time.Since(start)
		if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(b), "no response within 300ms") {
			t.Errorf("got %d %q, want 504 saying no response within 300ms", res.StatusCode, b)
		}
		if took < timeout || took >= slow {
			t.Errorf("answered after %v, want between %v and %v", took, timeout, slow)
		}
		select {
		case <-cancelled:
		case <-time.After(slow):
			t.Error("the backend's request was not cancelled")
		}
	})
	t.Run("connecting", func(t *testing.T) {
		// The timeout runs from the request's arrival, through a connect
		// that takes longer than it.
		hung := unresponsive(t).String()
		p := startRoutedProxy(t, httpTable(withTimeout(rule("0", prefix("/"), backendRef(v1Authority, 1)))),
			map[string]string{"": hung, v1Authority: hung}, longer,
			func(c *Config, _ *httpproxy.ConnInfo) { c.ConnectTimeout = slow / 2 })
		start := time.Now()
		res, b := get(t, h2cClient(t), p, "web.shop", "/", nil)
		took := time.Since(start)
		if res.StatusCode != http.StatusGatewayTimeout || took < timeout || took >= slow/2 {
			t.Errorf("got %d %q after %v, want 504 between %v and %v", res.StatusCode, b, took, timeout, slow/2)
		}
		// The dial ends at its own timeout, and lets the stream go.
		for deadline := time.Now().Add(2 * slow); ; time.Sleep(10 * time.Millisecond) {
			p.pool.mu.Lock()
			dialing := len(p.pool.dials)
			p.pool.mu.Unlock()
			if dialing == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the dial did not end")
			}
		}
	})
	t.Run("gRPC", func(t *testing.T) {
		rt := &destinationv1.RouteTable{Version: 1, GrpcRules: []*destinationv1.Rule{
			withTimeout(rule("0", &destinationv1.Match{GrpcService: "grpc.testing.TestService"}, backendRef(grpcAuthority, 1))),
		}}
		p := startRoutedProxy(t, rt, map[string]string{"": grpcBackend, grpcAuthority: grpcBackend}, longer)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := grpcClient(t, p.addr).UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: -1}) // waits for its deadline
		took := time.Since(start)
		if st := status.Convert(err); st.Code() != codes.DeadlineExceeded || !strings.HasPrefix(st.Message(), "mesh-proxy: ") {
			t.Errorf("got %v, want DeadlineExceeded from the proxy", err)
		}
		if took < timeout || took >= slow {
			t.Errorf("answered after %v, want between %v and %v", took, timeout, slow)
		}
	})
}

// TestRouteRetriesStayInBackend: a request whose backend's first endpoint
// refuses the connection goes to another endpoint of that backend, with
// the head its rule edited, never to the target's own endpoints.
func TestRouteRetriesStayInBackend(t *testing.T) {
	target, v2 := startEcho(t, "target"), startEcho(t, "v2")
	dead := closedPort(t)
	r := rule("0", prefix("/"), backendRef(v2Authority, 1))
	r.Filters = []*destinationv1.Filter{{Kind: &destinationv1.Filter_RequestHeaders{RequestHeaders: headers([][2]string{{"x-routed", "yes"}}, nil)}}}
	table, err := route.Compile(httpTable(r))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var picked []string
	pick := func(_ context.Context, _ netip.AddrPort, backend string) (httpproxy.Endpoint, error) {
		mu.Lock()
		defer mu.Unlock()
		picked = append(picked, backend)
		addr := netip.MustParseAddrPort(target)
		switch {
		case backend == v2Authority && len(picked) == 1:
			addr = dead
		case backend == v2Authority:
			addr = netip.MustParseAddrPort(v2)
		}
		return httpproxy.Endpoint{Addr: addr, Report: func(time.Duration, error) {}}, nil
	}
	p := startTestProxy(t, target, func(c *Config, _ *httpproxy.ConnInfo) {
		c.Direction, c.Pick = metrics.Outbound, pick
		c.Routes = func(netip.AddrPort) *route.Table { return table }
	})
	res, b := get(t, h2cClient(t), &routedProxy{testProxy: p}, "web.shop", "/", nil)
	if res.StatusCode != 200 {
		t.Fatalf("got %d %s", res.StatusCode, b)
	}
	if s := decodeSeen(t, b); s.Backend != "v2" || s.Header.Get("X-Routed") != "yes" {
		t.Errorf("answered by %q with x-routed %q, want v2 with \"yes\"", s.Backend, s.Header.Get("X-Routed"))
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{v2Authority, v2Authority}, picked); diff != "" {
		t.Errorf("picks (-want +got):\n%s", diff)
	}
}

// TestRouteResentAsRouted: a request its backend's connection turned away
// unprocessed (GOAWAY below its stream) goes again, on a new connection,
// with the head its rule made and to the same backend, picked once.
func TestRouteResentAsRouted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	later := &connListener{conns: make(chan net.Conn, 4), done: make(chan struct{}), addr: ln.Addr()}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protocols, Handler: echo("v2")}
	go srv.Serve(later)
	t.Cleanup(func() { srv.Close() })
	go func() {
		for first := true; ; first = false {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !first {
				later.conns <- c
				continue
			}
			go goAwayFirstStream(c)
		}
	}()
	r := rule("0", prefix("/v1"), backendRef(v2Authority, 1))
	r.Filters = []*destinationv1.Filter{
		{Kind: &destinationv1.Filter_RequestHeaders{RequestHeaders: headers([][2]string{{"x-routed", "yes"}}, nil)}},
		{Kind: &destinationv1.Filter_Rewrite{Rewrite: &destinationv1.Rewrite{
			Path: &destinationv1.PathModifier{Replace: &destinationv1.PathModifier_Prefix{Prefix: "/v2"}},
		}}},
	}
	p := startRoutedProxy(t, httpTable(r), map[string]string{"": startEcho(t, "target"), v2Authority: ln.Addr().String()})
	res, b := get(t, h2cClient(t), p, "web.shop", "/v1/a", nil)
	if res.StatusCode != 200 {
		t.Fatalf("got %d %s", res.StatusCode, b)
	}
	if s := decodeSeen(t, b); s.Path != "/v2/a" || s.Header.Get("X-Routed") != "yes" {
		t.Errorf("the backend's second connection saw path %q x-routed %q, want \"/v2/a\" \"yes\"", s.Path, s.Header.Get("X-Routed"))
	}
	if diff := cmp.Diff([]string{v2Authority}, p.picks()); diff != "" {
		t.Errorf("picks (-want +got):\n%s", diff)
	}
}

// goAwayFirstStream speaks HTTP/2 on c as far as its first request, which
// it turns away unprocessed with GOAWAY, and closes c.
func goAwayFirstStream(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		if _, ok := f.(*http2.MetaHeadersFrame); ok {
			fr.WriteGoAway(0, http2.ErrCodeNo, nil)
			time.Sleep(200 * time.Millisecond)
			return
		}
	}
}

// TestRouteEmptyTable: a table with no rules is no table: requests go to
// the target's own endpoints as they are.
func TestRouteEmptyTable(t *testing.T) {
	backends := map[string]string{"": startEcho(t, "target")}
	p := startRoutedProxy(t, &destinationv1.RouteTable{Version: 3}, backends)
	res, b := get(t, h2cClient(t), p, "web.shop", "/anything?x=1", nil)
	if res.StatusCode != 200 {
		t.Fatalf("got %d %s", res.StatusCode, b)
	}
	if s := decodeSeen(t, b); s.Backend != "target" || s.Host != "web.shop" || s.Path != "/anything?x=1" {
		t.Errorf("the target saw %+v, want the request as it was sent", s)
	}
	if diff := cmp.Diff([]string{""}, p.picks()); diff != "" {
		t.Errorf("picks (-want +got):\n%s", diff)
	}
}
