package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/proxy/discovery"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// fakeDestination stands in for mesh-controller's destination service,
// whose own tests (controller/destination) cover the Kubernetes side: it
// answers each authority with a fixed set of endpoints, NoEndpoints, or
// NOT_FOUND.
type fakeDestination struct {
	destinationv1.UnimplementedDestinationServer
	sets map[string][]string // authority -> endpoint addresses; empty: NoEndpoints
	// identities are the endpoints' SPIFFE IDs, by address; none: unmeshed.
	identities map[string]string
	// tables are the route tables of authorities; none: UNIMPLEMENTED, as
	// from a controller without routes.
	tables map[string]*destinationv1.RouteTable
}

func (f *fakeDestination) Routes(req *destinationv1.GetDestinationRequest, stream grpc.ServerStreamingServer[destinationv1.RouteTable]) error {
	t, ok := f.tables[req.GetAuthority()]
	if !ok {
		return status.Error(codes.Unimplemented, "no routes")
	}
	if err := stream.Send(t); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (f *fakeDestination) Get(req *destinationv1.GetDestinationRequest, stream grpc.ServerStreamingServer[destinationv1.Update]) error {
	addrs, ok := f.sets[req.GetAuthority()]
	if !ok {
		return status.Errorf(codes.NotFound, "%s is not a mesh destination", req.GetAuthority())
	}
	u := &destinationv1.Update{Kind: &destinationv1.Update_NoEndpoints{NoEndpoints: &destinationv1.NoEndpoints{Exists: true}}}
	if len(addrs) > 0 {
		add := &destinationv1.AddSet{}
		for _, a := range addrs {
			add.Endpoints = append(add.Endpoints, &destinationv1.Endpoint{Address: a, Weight: 10000,
				Labels: map[string]string{"pod": "pod-" + a}, Identity: f.identities[a]})
		}
		u = &destinationv1.Update{Kind: &destinationv1.Update_Add{Add: add}}
	}
	if err := stream.Send(u); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// startDestination serves f on loopback and returns its address.
func startDestination(t testing.TB, f *fakeDestination) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	destinationv1.RegisterDestinationServer(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// named answers with its name, after delay.
func named(name string, delay time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		io.WriteString(w, name)
	})
}

// TestOutboundBalancesOverControllerEndpoints sends requests whose original
// destination is a "service" address through the outbound side: they must
// reach the controller's endpoints, never the service address itself, and
// peak-EWMA must keep most of them off the endpoint 50 ms slower.
func TestOutboundBalancesOverControllerEndpoints(t *testing.T) {
	fast1, fast2 := backend(t, named("fast1", 0)), backend(t, named("fast2", 0))
	slow := backend(t, named("slow", 50*time.Millisecond))
	service := backend(t, named("original", 0))
	controller := startDestination(t, &fakeDestination{sets: map[string][]string{service: {fast1, fast2, slow}}})
	p := startProxy(t, service, func(c *Config) { c.DestinationAddr = controller })
	_, out, admin := p.Addrs()

	for _, mode := range []struct {
		name   string
		client *http.Client
	}{{"HTTP/1.1", h1Client(t)}, {"h2c", h2cClient(t)}} {
		t.Run(mode.name, func(t *testing.T) {
			got := map[string]int{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			const workers, each = 4, 60
			for range workers {
				wg.Go(func() {
					for range each {
						res, err := mode.client.Get("http://" + out.String() + "/")
						if err != nil {
							t.Error(err)
							return
						}
						b, _ := io.ReadAll(res.Body)
						res.Body.Close()
						mu.Lock()
						got[fmt.Sprintf("%d %s", res.StatusCode, b)]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			total := workers * each
			t.Logf("%d requests: %v", total, got)
			if got["200 original"] > 0 {
				t.Errorf("%d requests went to the service address instead of an endpoint", got["200 original"])
			}
			if share := float64(got["200 slow"]) / float64(total); share >= 0.10 {
				t.Errorf("the slow endpoint got %.0f%% of requests, want under 10%% (round robin: 33%%)", 100*share)
			}
			if got["200 fast1"]+got["200 fast2"]+got["200 slow"] != total {
				t.Errorf("not every request succeeded at an endpoint: %v", got)
			}
		})
	}

	res, err := http.Get("http://" + admin.String() + "/destinations")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var dests []struct {
		Authority string
		Endpoints []struct {
			Addr    string
			Labels  map[string]string
			RTTms   float64 `json:"rtt_estimate_ms"`
			Ejected bool
		}
	}
	if err := json.NewDecoder(res.Body).Decode(&dests); err != nil {
		t.Fatal(err)
	}
	if len(dests) != 1 || dests[0].Authority != service || len(dests[0].Endpoints) != 3 {
		t.Fatalf("/destinations = %+v, want %s with 3 endpoints", dests, service)
	}
	for _, ep := range dests[0].Endpoints {
		if ep.Labels["pod"] != "pod-"+ep.Addr {
			t.Errorf("endpoint %s lost its labels: %v", ep.Addr, ep.Labels)
		}
		if ep.Addr == slow && ep.RTTms < 40 {
			t.Errorf("slow endpoint's RTT estimate %.1f ms, want about 50", ep.RTTms)
		}
	}
}

// TestOutboundWithoutEndpoints covers the destinations the controller has
// no endpoints for: not a mesh destination goes to the original address,
// a known one with nothing ready gets 503. A controller that is down costs
// the initial wait, and then the request goes to the original address
// only outside the cluster networks: inside them it could be a meshed pod,
// and the proxy answers 503 without sending a byte rather than drop to
// plain text.
func TestOutboundWithoutEndpoints(t *testing.T) {
	var hits atomic.Int64
	service := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "original")
	}))
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := down.Addr().String()
	down.Close() // nothing listens: the controller is down
	// The backends are on loopback: these tests make it a cluster network.
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	tests := []struct {
		name       string
		controller string
		cluster    []netip.Prefix
		wantCode   int
		wantBody   string
		wantHit    bool
	}{
		{name: "not a mesh destination", controller: startDestination(t, &fakeDestination{}), wantCode: 200, wantBody: "original", wantHit: true},
		{name: "not a mesh destination, in the cluster", controller: startDestination(t, &fakeDestination{}), cluster: loopback,
			wantCode: 200, wantBody: "original", wantHit: true},
		{name: "no endpoints", controller: startDestination(t, &fakeDestination{sets: map[string][]string{service: nil}}),
			wantCode: 503, wantBody: "no endpoints available"},
		{name: "controller down, outside the cluster", controller: downAddr, wantCode: 200, wantBody: "original", wantHit: true},
		{name: "controller down, in the cluster", controller: downAddr, cluster: loopback,
			wantCode: 503, wantBody: "never sent in plain text"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hits.Store(0)
			p := startProxy(t, service, func(c *Config) {
				c.DestinationAddr = tc.controller
				c.ClusterNetworks = tc.cluster
			})
			_, out, admin := p.Addrs()
			start := time.Now()
			res, err := h1Client(t).Get("http://" + out.String() + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.wantCode || !strings.Contains(string(b), tc.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", res.StatusCode, b, tc.wantCode, tc.wantBody)
			}
			if got := hits.Load() > 0; got != tc.wantHit {
				t.Errorf("the original address was reached: %v, want %v", got, tc.wantHit)
			}
			if tc.wantCode == 503 && tc.controller == downAddr {
				t.Logf("refused in %v", time.Since(start).Round(time.Millisecond))
				if n := scrapeValue(t, admin.String(), `mesh_proxy_outbound_discovery_unavailable_total{protocol="http"}`); n != 1 {
					t.Errorf("unavailable counter = %v, want 1", n)
				}
			}
		})
	}
}

// TestOutboundOpaqueControllerDown: an opaque connection inside the
// cluster networks whose destination the controller cannot answer for is
// reset, and the target never sees it.
func TestOutboundOpaqueControllerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := down.Addr().String()
	down.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	p := startProxy(t, ln.Addr().String(), func(c *Config) {
		c.DestinationAddr = downAddr
		c.ClusterNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		if err := c.OpaquePorts.UnmarshalText([]byte(port)); err != nil {
			t.Fatal(err)
		}
	})
	_, out, admin := p.Addrs()
	c, err := net.Dial("tcp", out.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("secret"))
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read from a connection whose destination the controller could not answer for succeeded")
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the target accepted %d connections, want none", n)
	}
	if n := scrapeValue(t, admin.String(), `mesh_proxy_outbound_discovery_unavailable_total{protocol="tcp"}`); n != 1 {
		t.Errorf("unavailable counter = %v, want 1", n)
	}
}

// scrapeValue reads one sample, named with its labels exactly as the text
// exposition writes them, from a proxy's /metrics; -1 when absent.
func scrapeValue(t testing.TB, admin, series string) float64 {
	t.Helper()
	res, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}

// TestOutboundOpaqueBalancesPerConnection: opaque TCP connections to a
// service address are spread over the controller's endpoints, one pick
// per connection.
func TestOutboundOpaqueBalancesPerConnection(t *testing.T) {
	greeter := func(name string) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, name)
				c.Close()
			}
		}()
		return ln.Addr().String()
	}
	a, b, service := greeter("a"), greeter("b"), greeter("original")
	controller := startDestination(t, &fakeDestination{sets: map[string][]string{service: {a, b}}})
	_, port, _ := net.SplitHostPort(service)
	p := startProxy(t, service, func(c *Config) {
		c.DestinationAddr = controller
		if err := c.OpaquePorts.UnmarshalText([]byte(port)); err != nil {
			t.Fatal(err)
		}
	})
	_, out, _ := p.Addrs()
	got := map[string]int{}
	for range 40 {
		c, err := net.Dial("tcp", out.String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		got[string(b)]++
	}
	if got["original"] > 0 || got["a"] == 0 || got["b"] == 0 || got["a"]+got["b"] != 40 {
		t.Errorf("40 connections went to %v; want both endpoints, never the service address", got)
	}
}

// TestDstOf: the metrics labels are the destination service's.
func TestDstOf(t *testing.T) {
	got := dstOf(discovery.EndpointMeta{Labels: map[string]string{
		"namespace": "shop", "service": "web", "pod": "web-1", "replicaset": "web-5d9", "deployment": "web", "workload": "deployment/web",
	}})
	if want := (metrics.Dst{Namespace: "shop", Workload: "deployment/web", Service: "web"}); got != want {
		t.Errorf("dstOf = %+v, want %+v", got, want)
	}
	if got := dstOf(discovery.EndpointMeta{}); got != (metrics.Dst{}) {
		t.Errorf("dstOf of an endpoint without labels = %+v, want zero", got)
	}
}

// TestSelfEndpointInPlainText: an endpoint at one of the pod's own
// addresses (a client of its own Service) gets no mesh TLS: iptables lets
// the proxy's own connection go straight to the application, which would
// answer a ClientHello with plain text. Found by the Gateway API
// conformance suite, whose echo pods call their own Service.
func TestSelfEndpointInPlainText(t *testing.T) {
	r := &router{self: map[netip.Addr]bool{netip.MustParseAddr("10.244.0.70"): true}}
	meta := discovery.EndpointMeta{Identity: "spiffe://cluster.local/ns/shop/sa/web"}
	if got := r.identity(netip.MustParseAddr("10.244.0.70"), meta); got != "" {
		t.Errorf("self: identity %q, want none", got)
	}
	if got := r.identity(netip.MustParseAddr("10.244.0.71"), meta); got != meta.Identity {
		t.Errorf("another pod: identity %q, want %q", got, meta.Identity)
	}
	for a := range localAddrs() {
		if a.IsLoopback() {
			t.Errorf("localAddrs holds loopback %s", a)
		}
	}
}

// TestDestinationsShowPolicy checks that /destinations shows a table's
// default rule and failure accrual, and the failure accrual the balancer
// applies because of it.
func TestDestinationsShowPolicy(t *testing.T) {
	ep := backend(t, named("ep", 0))
	service := backend(t, named("original", 0))
	table := &destinationv1.RouteTable{
		Version: 3,
		DefaultRule: &destinationv1.Rule{
			Route:    &destinationv1.Resource{Kind: "Service", Namespace: "shop", Name: "web"},
			Timeouts: &destinationv1.Timeouts{Request: durationpb.New(2 * time.Second)},
			Retry: &destinationv1.Retry{Http: []*destinationv1.StatusRange{{Min: 500, Max: 599}}, Grpc: []uint32{14}, Limit: 2,
				PerTryTimeout: durationpb.New(500 * time.Millisecond)},
		},
		FailureAccrual: &destinationv1.FailureAccrual{MaxFailures: 3, MinBackoff: durationpb.New(5 * time.Minute)},
	}
	controller := startDestination(t, &fakeDestination{sets: map[string][]string{service: {ep}}, tables: map[string]*destinationv1.RouteTable{service: table}})
	p := startProxy(t, service, func(c *Config) { c.DestinationAddr = controller })
	_, out, admin := p.Addrs()
	res, err := h1Client(t).Get("http://" + out.String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "ep" {
		t.Fatalf("the request got %d %q, want the endpoint's answer", res.StatusCode, b)
	}

	res, err = http.Get("http://" + admin.String() + "/destinations")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var got []destinationView
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := []destinationView{{
		Authority: service,
		Endpoints: []endpointView{{Addr: ep}},
		Routes: &routesView{
			Version: 3, Rules: []string{},
			Default: &ruleView{Route: "Service/shop/web", RequestTimeout: "2s",
				Retry: &retryView{HTTP: []string{"500-599"}, GRPC: []int{14}, Limit: 2, PerTryTimeout: "500ms"}},
			FailureAccrual: &accrualView{MaxFailures: 3, MinBackoff: "5m0s"},
		},
		// The default maximum of a minute is raised to the minimum.
		Balancer: accrualView{MaxFailures: 3, MinBackoff: "5m0s", MaxBackoff: "5m0s"},
	}}
	ignore := cmp.FilterPath(func(p cmp.Path) bool {
		switch p.Last().String() {
		case ".Labels", ".RTTms", ".Pending", ".Identity":
			return true
		}
		return false
	}, cmp.Ignore())
	if diff := cmp.Diff(want, got, ignore); diff != "" {
		t.Errorf("/destinations (-want +got):\n%s", diff)
	}
}
