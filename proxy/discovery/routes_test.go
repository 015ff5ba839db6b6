package discovery

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
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
