package discovery

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/route"
)

// routeTable is a table of web as the controller sends it: one HTTPRoute
// whose rule sends /<rule> to web's own port.
func routeTable(version uint64, rule string) *destinationv1.RouteTable {
	return &destinationv1.RouteTable{
		Version: version,
		Parent:  &destinationv1.Resource{Kind: "Service", Namespace: "shop", Name: "web", Port: 80},
		HttpRules: []*destinationv1.Rule{{
			Route:    &destinationv1.Resource{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: "shop", Name: "web"},
			RuleName: rule,
			Matches: []*destinationv1.Match{{
				Path: &destinationv1.Match_Prefix{Prefix: "/" + rule},
			}},
			Backends: []*destinationv1.Backend{{Authority: web, Weight: 1}},
		}},
	}
}

// brokenTable is a table route.Compile refuses: its rule has a negative
// timeout.
func brokenTable(version uint64) *destinationv1.RouteTable {
	t := routeTable(version, "broken")
	t.HttpRules[0].Timeouts = &destinationv1.Timeouts{Request: durationpb.New(-time.Second)}
	return t
}

// versionOf is the version of d's table, or -1 when it has none.
func versionOf(d *Destination) int64 {
	t := d.Routes()
	if t == nil {
		return -1
	}
	return int64(t.Version())
}

// waitVersion waits until d's table has version v (-1: none).
func waitVersion(t testing.TB, d *Destination, v int64) {
	t.Helper()
	eventually(t, fmt.Sprintf("route table version %d", v), func() bool { return versionOf(d) == v })
}

func TestRoutesFollowTheStream(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(cfg *Config) { cfg.Registerer = reg })
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})
	e.fake.setRoutes(web, routeAnswer{tables: []*destinationv1.RouteTable{routeTable(1, "a")}})

	// Get waited for the first table.
	d := mustGet(t, e.cache, web)
	if v := versionOf(d); v != 1 {
		t.Fatalf("route table version after Get = %d, want 1", v)
	}
	if got := d.Routes(); got.Empty() {
		t.Error("the table of one rule is Empty")
	}
	e.fake.mu.Lock()
	req := e.fake.lastRouteReq
	e.fake.mu.Unlock()
	if req.GetAuthority() != web || req.GetContextNamespace() != "shop" {
		t.Errorf("Routes asked for %q in %q, want %q in shop", req.GetAuthority(), req.GetContextNamespace(), web)
	}

	// Each table replaces the one before.
	e.fake.pushRoutes(t, web, routeTable(2, "b"))
	waitVersion(t, d, 2)

	// A table that does not compile is refused; the last good one stays.
	if _, err := route.Compile(brokenTable(3)); err == nil {
		t.Fatal("route.Compile accepts brokenTable; the test needs one it refuses")
	}
	m := e.cache.metrics
	e.fake.pushRoutes(t, web, brokenTable(3))
	eventually(t, "the refusal", func() bool { return testutil.ToFloat64(m.routeTables.WithLabelValues(tableRefused)) == 1 })
	if v := versionOf(d); v != 2 {
		t.Errorf("route table version after a broken table = %d, want 2", v)
	}
	e.fake.pushRoutes(t, web, routeTable(4, "c"))
	waitVersion(t, d, 4)

	// An empty table: the Service has no route any more.
	e.fake.pushRoutes(t, web, &destinationv1.RouteTable{Version: 5})
	waitVersion(t, d, 5)
	if !d.Routes().Empty() {
		t.Error("the table of no rule is not Empty")
	}

	if got := testutil.ToFloat64(m.routeTables.WithLabelValues(tableApplied)); got != 4 {
		t.Errorf("route_tables_total{result=applied} = %v, want 4", got)
	}
	if got := testutil.ToFloat64(m.routeStreams); got != 1 {
		t.Errorf("route_streams = %v, want 1", got)
	}
	if n := e.fake.routeCount(web); n != 1 {
		t.Errorf("Routes calls = %d, want 1", n)
	}
}

func TestRoutesKeptWhileControllerAway(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})
	e.fake.setRoutes(web, routeAnswer{tables: []*destinationv1.RouteTable{routeTable(1, "a")}})
	d := mustGet(t, e.cache, web)

	e.ctrl.stop()
	eventually(t, "the connection failing", func() bool { return e.conn.GetState() == connectivity.TransientFailure })
	time.Sleep(200 * time.Millisecond) // 4 to 40 of the stream backoffs of this test
	if v := versionOf(d); v != 1 {
		t.Errorf("route table version while the controller is away = %d, want 1", v)
	}
	// The stream is asked again once or twice and waits for the
	// connection (WaitForReady), rather than failing over and over.
	if n := e.attempts.count(destinationv1.Destination_Routes_FullMethodName) - 1; n < 1 || n > 2 {
		t.Errorf("%d Routes calls while the controller was away; want 1 or 2, each waiting for the connection", n)
	}

	// The controller comes back with another table, whose version starts
	// again: the stream, which waited for the connection, asks again as
	// soon as it is up, and the new table replaces the old.
	old := d.Routes()
	e.fake.setRoutes(web, routeAnswer{tables: []*destinationv1.RouteTable{routeTable(1, "b")}})
	e.ctrl = startController(t, e.fake, e.ctrl.addr)
	eventually(t, "the new table", func() bool { return d.Routes() != old && versionOf(d) == 1 })
	// One call before, one after: none while the controller was away, as
	// the stream waits for the connection rather than failing over and
	// over.
	if n := e.fake.routeCount(web); n != 2 {
		t.Errorf("Routes calls = %d, want 2", n)
	}
}

func TestRoutesNotServed(t *testing.T) {
	tests := []struct {
		name string
		// before is the table the destination had before the answer;
		// nil: the answer is the first.
		before *destinationv1.RouteTable
		ans    routeAnswer
		set    bool // whether ans is set; unset: the fake's UNIMPLEMENTED
	}{
		{name: "unimplemented"},
		{name: "not found", ans: routeAnswer{err: status.Error(codes.NotFound, "a pod IP")}, set: true},
		{name: "invalid argument", ans: routeAnswer{err: status.Error(codes.InvalidArgument, "bad")}, set: true},
		{
			name:   "not found after a table",
			before: routeTable(1, "a"),
			ans:    routeAnswer{err: status.Error(codes.NotFound, "Service deleted")},
			set:    true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const ttl = 400 * time.Millisecond
			e := newEnv(t, func(cfg *Config) { cfg.NotFoundTTL = ttl })
			e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})
			if tc.before != nil {
				e.fake.setRoutes(web, routeAnswer{tables: []*destinationv1.RouteTable{tc.before}})
			} else if tc.set {
				e.fake.setRoutes(web, tc.ans)
			}
			start := time.Now()
			d := mustGet(t, e.cache, web)
			if tc.before != nil {
				waitVersion(t, d, int64(tc.before.GetVersion()))
				start = time.Now()
				e.fake.endRoutes(web, tc.ans.err)
			}
			// One call, answered: the first, or the one that had a table.
			const calls = 1
			e.fake.waitRouteCalls(t, web, calls)
			waitVersion(t, d, -1)
			// The controller would have routes by now, but is not asked
			// again before the TTL: the answer holds that long.
			e.fake.setRoutes(web, routeAnswer{tables: []*destinationv1.RouteTable{routeTable(7, "a")}})
			time.Sleep(ttl / 4)
			if n := e.fake.routeCount(web); n != calls {
				t.Errorf("Routes calls within the TTL = %d, want %d", n, calls)
			}
			if _, err := e.cache.Get(t.Context(), web); err != nil {
				t.Errorf("Get of a destination without routes: %v", err)
			}

			// After it, the controller is asked again.
			waitVersion(t, d, 7)
			if took := time.Since(start); took < ttl {
				t.Errorf("asked again after %v, before the TTL %v", took, ttl)
			}
			if n := e.fake.routeCount(web); n != calls+1 {
				t.Errorf("Routes calls = %d, want %d", n, calls+1)
			}
		})
	}
}

func TestRoutesDefaultTTLDoesNotSpin(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})
	// No routes answer set: UNIMPLEMENTED, as from an older controller.
	d := mustGet(t, e.cache, web)
	e.fake.waitRouteCalls(t, web, 1)
	for range 20 {
		mustGet(t, e.cache, web)
		time.Sleep(10 * time.Millisecond)
	}
	if n := e.fake.routeCount(web); n != 1 {
		t.Errorf("Routes calls = %d, want 1", n)
	}
	if d.Routes() != nil {
		t.Error("a destination of a controller without routes has a table")
	}
}

func TestFirstGetWaitsForRoutes(t *testing.T) {
	t.Run("table on its way", func(t *testing.T) {
		e := newEnv(t, nil) // InitialWait 5s
		e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})
		e.fake.setRoutes(web, routeAnswer{}) // open and silent until pushed

		got := make(chan *Destination, 1)
		go func() {
			d, err := e.cache.Get(t.Context(), web)
			if err != nil {
				t.Errorf("Get: %v", err)
			}
			got <- d
		}()
		e.fake.waitRouteStreams(t, web, 1)
		e.fake.waitStreams(t, web, 1)
		select {
		case <-got:
			t.Fatal("Get returned before the first table")
		case <-time.After(100 * time.Millisecond):
		}
		e.fake.pushRoutes(t, web, routeTable(1, "a"))
		if d := <-got; d == nil || versionOf(d) != 1 {
			t.Fatalf("Get returned %v without the table that came during its wait", d)
		}
	})

	t.Run("no table within InitialWait", func(t *testing.T) {
		const wait = 300 * time.Millisecond
		e := newEnv(t, func(cfg *Config) { cfg.InitialWait = wait })
		e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})
		e.fake.setRoutes(web, routeAnswer{})

		start := time.Now()
		d := mustGet(t, e.cache, web) // late routes are no error
		if took := time.Since(start); took < wait {
			t.Errorf("Get returned after %v, before InitialWait %v", took, wait)
		}
		if d.Routes() != nil {
			t.Error("a table before any came")
		}
		start = time.Now()
		mustGet(t, e.cache, web)
		if took := time.Since(start); took >= wait {
			t.Errorf("second Get waited %v", took)
		}
		// The stream stayed open: the table applies when it comes.
		e.fake.pushRoutes(t, web, routeTable(1, "a"))
		waitVersion(t, d, 1)
	})

	t.Run("failing routes do not hold Get", func(t *testing.T) {
		// A Routes stream that keeps failing while Get answers costs Get
		// nothing: it does not wait out the long InitialWait.
		e := newEnv(t, func(cfg *Config) { cfg.InitialWait = time.Minute })
		e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})
		e.fake.setRoutes(web, routeAnswer{err: status.Error(codes.Internal, "broken")})
		start := time.Now()
		d := mustGet(t, e.cache, web)
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("Get took %v", took)
		}
		if d.Routes() != nil {
			t.Error("a table from a failing stream")
		}
	})

	t.Run("no endpoints answer", func(t *testing.T) {
		// A table alone does not make a destination: Get needs its
		// endpoints.
		const wait = 300 * time.Millisecond
		e := newEnv(t, func(cfg *Config) { cfg.InitialWait = wait })
		e.fake.setRoutes(web, routeAnswer{tables: []*destinationv1.RouteTable{routeTable(1, "a")}})
		if _, err := e.cache.Get(t.Context(), web); !errors.Is(err, ErrNoAnswer) {
			t.Errorf("Get: %v, want ErrNoAnswer", err)
		}
	})
}

func TestEvictionClosesRoutes(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})
	e.fake.setRoutes(web, routeAnswer{tables: []*destinationv1.RouteTable{routeTable(1, "a")}})
	d := mustGet(t, e.cache, web)
	e.fake.waitRouteStreams(t, web, 1)

	e.cache.sweep() // sees the Get
	e.clock.Advance(DefaultIdleTimeout)
	e.cache.sweep()
	e.fake.waitStreams(t, web, 0)
	e.fake.waitRouteStreams(t, web, 0)
	if d.Routes() != nil {
		t.Error("the evicted destination still has a table")
	}

	// Using it again opens both streams anew.
	if again := mustGet(t, e.cache, web); versionOf(again) != 1 {
		t.Errorf("route table version after eviction = %d, want 1", versionOf(again))
	}
	if n := e.fake.routeCount(web); n != 2 {
		t.Errorf("Routes calls = %d, want 2", n)
	}
}

func TestNotFoundClosesRoutes(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})
	e.fake.setRoutes(web, routeAnswer{tables: []*destinationv1.RouteTable{routeTable(1, "a")}})
	d := mustGet(t, e.cache, web)
	e.fake.waitRouteStreams(t, web, 1)

	// The Service is deleted while the Get stream is down: its NOT_FOUND
	// ends the Routes stream too, and the table goes.
	e.fake.set(web, answer{err: status.Error(codes.NotFound, "gone")})
	e.fake.end(web, status.Error(codes.Unavailable, "restarting"))
	eventually(t, "NotFound", d.NotFound)
	e.fake.waitRouteStreams(t, web, 0)
	if d.Routes() != nil {
		t.Error("a destination not found has a table")
	}
}

// TestRoutesFailureAccrual checks that each table's failure accrual
// tunes the destination's balancer in place, endpoints keeping their
// state, and that a table without one, or no table, restores the cache's
// own.
func TestRoutesFailureAccrual(t *testing.T) {
	base := balance.Config{MaxFailures: 5, MinBackoff: 2 * time.Second} // MaxBackoff the default, 1m
	e := newEnv(t, func(cfg *Config) {
		cfg.Balance = base
		cfg.NotFoundTTL = time.Hour
	})
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080", "10.0.0.2:8080")}})
	withAccrual := func(version uint64, fa *destinationv1.FailureAccrual) *destinationv1.RouteTable {
		rt := routeTable(version, "a")
		rt.FailureAccrual = fa
		return rt
	}
	e.fake.setRoutes(web, routeAnswer{tables: []*destinationv1.RouteTable{withAccrual(1, &destinationv1.FailureAccrual{MaxFailures: 3})}})
	d := mustGet(t, e.cache, web)
	if got, want := d.bal.FailureAccrual(), (balance.FailureAccrual{MaxFailures: 3, MinBackoff: 2 * time.Second, MaxBackoff: time.Minute}); got != want {
		t.Errorf("failure accrual after the first table = %+v, want %+v", got, want)
	}
	// An endpoint's state, which the changes below must keep.
	p, ok := d.Pick()
	if !ok {
		t.Fatal("no endpoint")
	}
	p.Observe(time.Millisecond, errors.New("503"))
	p.Done()
	failing := p.Endpoint().Addr

	rtt, failures := statsAt(t, d, failing).RTT, 1
	steps := []struct {
		name    string
		fa      *destinationv1.FailureAccrual
		want    balance.FailureAccrual
		forgets bool // the step clears the endpoint's failures
	}{
		{name: "both backoffs", fa: &destinationv1.FailureAccrual{MinBackoff: durationpb.New(time.Second), MaxBackoff: durationpb.New(10 * time.Second)},
			want: balance.FailureAccrual{MaxFailures: 5, MinBackoff: time.Second, MaxBackoff: 10 * time.Second}},
		{name: "min backoff above the default max raises it", fa: &destinationv1.FailureAccrual{MinBackoff: durationpb.New(5 * time.Minute)},
			want: balance.FailureAccrual{MaxFailures: 5, MinBackoff: 5 * time.Minute, MaxBackoff: 5 * time.Minute}},
		{name: "max backoff below the base min lowers it", fa: &destinationv1.FailureAccrual{MaxBackoff: durationpb.New(500 * time.Millisecond)},
			want: balance.FailureAccrual{MaxFailures: 5, MinBackoff: 500 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}},
		{name: "max failures", fa: &destinationv1.FailureAccrual{MaxFailures: 2},
			want: balance.FailureAccrual{MaxFailures: 2, MinBackoff: 2 * time.Second, MaxBackoff: time.Minute}},
		// Turning accrual off forgets every failure (balance's
		// SetFailureAccrual): from here the endpoint has none.
		{name: "disabled", fa: &destinationv1.FailureAccrual{Disabled: true, MaxFailures: 9}, forgets: true,
			want: balance.FailureAccrual{MaxFailures: -1, MinBackoff: 2 * time.Second, MaxBackoff: time.Minute}},
		{name: "none: the cache's own", fa: nil,
			want: balance.FailureAccrual{MaxFailures: 5, MinBackoff: 2 * time.Second, MaxBackoff: time.Minute}},
	}
	for i, step := range steps {
		e.fake.pushRoutes(t, web, withAccrual(uint64(i+2), step.fa))
		waitVersion(t, d, int64(i+2))
		if got := d.bal.FailureAccrual(); got != step.want {
			t.Errorf("%s: failure accrual = %+v, want %+v", step.name, got, step.want)
		}
		if step.forgets {
			failures = 0
		}
		if s := statsAt(t, d, failing); s.Failures != failures || s.RTT != rtt {
			t.Errorf("%s: %v has %d failures and an estimate of %v, want %d and %v as before", step.name, s.Addr, s.Failures, s.RTT, failures, rtt)
		}
	}

	// No table any more (a controller without routes): the cache's own.
	e.fake.pushRoutes(t, web, withAccrual(20, &destinationv1.FailureAccrual{Disabled: true}))
	waitVersion(t, d, 20)
	e.fake.endRoutes(web, status.Error(codes.Unimplemented, "no routes"))
	waitVersion(t, d, -1)
	if got, want := d.bal.FailureAccrual(), (balance.FailureAccrual{MaxFailures: 5, MinBackoff: 2 * time.Second, MaxBackoff: time.Minute}); got != want {
		t.Errorf("failure accrual without a table = %+v, want the cache's %+v", got, want)
	}
}

func TestAccrualOf(t *testing.T) {
	base := balance.FailureAccrual{MaxFailures: 7, MinBackoff: time.Second}
	tests := []struct {
		name string
		fa   route.FailureAccrual
		want balance.FailureAccrual
	}{
		{name: "nothing set", want: base},
		{name: "disabled", fa: route.FailureAccrual{Disabled: true, MaxFailures: 3}, want: balance.FailureAccrual{MaxFailures: -1, MinBackoff: time.Second}},
		{name: "all set", fa: route.FailureAccrual{MaxFailures: 3, MinBackoff: time.Minute, MaxBackoff: time.Hour},
			want: balance.FailureAccrual{MaxFailures: 3, MinBackoff: time.Minute, MaxBackoff: time.Hour}},
		{name: "min within the default max", fa: route.FailureAccrual{MinBackoff: 30 * time.Second},
			want: balance.FailureAccrual{MaxFailures: 7, MinBackoff: 30 * time.Second}},
		{name: "min above the default max", fa: route.FailureAccrual{MinBackoff: 2 * time.Minute},
			want: balance.FailureAccrual{MaxFailures: 7, MinBackoff: 2 * time.Minute, MaxBackoff: 2 * time.Minute}},
		{name: "max below the base min", fa: route.FailureAccrual{MaxBackoff: 100 * time.Millisecond},
			want: balance.FailureAccrual{MaxFailures: 7, MinBackoff: 100 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := accrualOf(base, tc.fa)
			if got != tc.want {
				t.Errorf("accrualOf(%+v) = %+v, want %+v", tc.fa, got, tc.want)
			}
			if _, err := balance.New(balance.Config{MaxFailures: got.MaxFailures, MinBackoff: got.MinBackoff, MaxBackoff: got.MaxBackoff}); err != nil {
				t.Errorf("the balancer refuses it: %v", err)
			}
		})
	}
}

// statsAt is the balancer's view of d's endpoint at addr.
func statsAt(t testing.TB, d *Destination, addr netip.AddrPort) balance.EndpointStats {
	t.Helper()
	for _, s := range d.Stats() {
		if s.Addr == addr {
			return s
		}
	}
	t.Fatalf("%s has no endpoint %v", d.Authority(), addr)
	return balance.EndpointStats{}
}
