package discovery

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

const web = "web.shop.svc.cluster.local:80"

func TestUpdatesReachPick(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(cfg *Config) { cfg.Registerer = reg })
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080", "10.0.0.2:8080")}})

	d := mustGet(t, e.cache, web)
	checkBalancer(t, d, []string{"10.0.0.1:8080", "10.0.0.2:8080"})

	e.fake.push(t, web, add("10.0.0.3:8080"))
	eventually(t, "the added endpoint", func() bool { return len(d.Endpoints()) == 3 })
	e.fake.push(t, web, remove("10.0.0.1:8080"))
	want := []string{"10.0.0.2:8080", "10.0.0.3:8080"}
	eventually(t, "the removal", func() bool { return cmp.Equal(want, addrsOf(d)) })
	checkBalancer(t, d, want)

	e.fake.push(t, web, noEndpoints())
	eventually(t, "the set to empty", func() bool { return len(d.Endpoints()) == 0 })
	if _, ok := d.Pick(); ok {
		t.Error("Pick found an endpoint after NoEndpoints")
	}
	// The destination exists: Get returns it, and the caller answers 503.
	if again := mustGet(t, e.cache, web); again != d || again.NotFound() {
		t.Errorf("Get after NoEndpoints = %p (NotFound %v), want the same destination %p", again, again.NotFound(), d)
	}

	e.fake.mu.Lock()
	ns := e.fake.lastReq.GetContextNamespace()
	e.fake.mu.Unlock()
	if ns != "shop" {
		t.Errorf("context namespace sent = %q, want shop", ns)
	}
	m := e.cache.metrics
	for kind, want := range map[string]float64{kindAdd: 2, kindRemove: 1, kindNoEndpoints: 1} {
		if got := testutil.ToFloat64(m.updates.WithLabelValues(kind)); got != want {
			t.Errorf("updates_total{kind=%q} = %v, want %v", kind, got, want)
		}
	}
	if got := testutil.ToFloat64(m.streams); got != 1 {
		t.Errorf("streams = %v, want 1", got)
	}
}

func TestNotFound(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{name: "not found", err: status.Error(codes.NotFound, "no such service")},
		{name: "invalid argument", err: status.Error(codes.InvalidArgument, "bad authority")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A long InitialWait shows the answer does not wait for it.
			e := newEnv(t, func(cfg *Config) { cfg.InitialWait = time.Minute })
			const ext = "api.example.com:443"
			e.fake.set(ext, answer{err: tc.err})

			for i := range 3 {
				start := time.Now()
				if _, err := e.cache.Get(t.Context(), ext); !errors.Is(err, ErrNotFound) {
					t.Fatalf("Get %d: %v, want ErrNotFound", i, err)
				}
				if took := time.Since(start); took > 10*time.Second {
					t.Errorf("Get %d took %v", i, took)
				}
			}
			if n := e.fake.getCount(ext); n != 1 {
				t.Errorf("controller asked %d times, want 1: the answer is cached", n)
			}

			// Once the answer expires the controller is asked again, and
			// the destination may exist by now.
			e.fake.set(ext, answer{updates: []*destinationv1.Update{add("10.0.0.1:443")}})
			e.clock.Advance(DefaultNotFoundTTL)
			d := mustGet(t, e.cache, ext)
			if d.NotFound() || e.fake.getCount(ext) != 2 {
				t.Errorf("after the TTL: NotFound %v, asked %d times; want false, 2", d.NotFound(), e.fake.getCount(ext))
			}
		})
	}
}

func TestNotFoundOnReconnect(t *testing.T) {
	var drained drainLog
	e := newEnv(t, func(cfg *Config) { cfg.OnDrained = drained.record })
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})
	d := mustGet(t, e.cache, web)

	// The Service is deleted while the stream is down.
	e.fake.set(web, answer{err: status.Error(codes.NotFound, "gone")})
	e.fake.end(web, status.Error(codes.Unavailable, "restarting"))
	eventually(t, "NotFound", d.NotFound)
	if _, ok := d.Pick(); ok {
		t.Error("Pick found an endpoint of a destination not found")
	}
	if _, err := e.cache.Get(t.Context(), web); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get: %v, want ErrNotFound", err)
	}
	if diff := cmp.Diff([]string{web + " 10.0.0.1:8080"}, drained.sorted()); diff != "" {
		t.Errorf("drained (-want +got):\n%s", diff)
	}
}

func TestInvalidAuthority(t *testing.T) {
	e := newEnv(t, nil)
	for _, a := range []string{"web", "web:", ":80", "web:0", "web:http", "web:65536", strings.Repeat("a", 300) + ":80"} {
		if _, err := e.cache.Get(t.Context(), a); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%.20q): %v, want ErrNotFound", a, err)
		}
	}
	e.fake.mu.Lock()
	defer e.fake.mu.Unlock()
	if len(e.fake.gets) != 0 {
		t.Errorf("the controller was asked about %v", e.fake.gets)
	}
}

func TestControllerDownKeepsEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(cfg *Config) {
		cfg.Registerer = reg
		cfg.InitialWait = 200 * time.Millisecond
	})
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080", "10.0.0.2:8080")}})
	d := mustGet(t, e.cache, web)

	e.ctrl.stop()
	// While the controller is away the stream waits for the connection
	// (WaitForReady) instead of failing and backing off over and over:
	// the connection fails, the stream is asked again once, and waits.
	eventually(t, "the connection failing", func() bool { return e.conn.GetState() == connectivity.TransientFailure })
	time.Sleep(200 * time.Millisecond) // 4 to 40 of the stream backoffs of this test
	if n := testutil.ToFloat64(e.cache.metrics.reconnects); n < 1 || n > 2 {
		t.Errorf("%v stream reconnects while the controller was away; want 1 or 2, each waiting for the connection", n)
	}
	want := []string{"10.0.0.1:8080", "10.0.0.2:8080"}
	checkBalancer(t, d, want)
	if again := mustGet(t, e.cache, web); again != d {
		t.Error("Get while the controller is down returned another destination")
	}
	// A destination first asked for now gets no answer, and is forwarded
	// to its original address meanwhile.
	if _, err := e.cache.Get(t.Context(), "api.shop.svc.cluster.local:80"); !errors.Is(err, ErrNoAnswer) {
		t.Errorf("Get of a new destination: %v, want ErrNoAnswer", err)
	}

	// The controller comes back on the same address with another set,
	// which replaces the old one.
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.3:8080")}})
	e.ctrl = startController(t, e.fake, e.ctrl.addr)
	eventually(t, "the new set", func() bool { return cmp.Equal([]string{"10.0.0.3:8080"}, addrsOf(d)) })
	checkBalancer(t, d, []string{"10.0.0.3:8080"})
}

func TestResourceExhausted(t *testing.T) {
	// Backoff far longer than the test: whatever reconnects within it did
	// so at once.
	e := newEnv(t, func(cfg *Config) { cfg.MinBackoff, cfg.MaxBackoff = time.Hour, time.Hour })
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})
	d := mustGet(t, e.cache, web)

	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.2:8080")}})
	e.fake.end(web, status.Error(codes.ResourceExhausted, "too slow"))
	eventually(t, "the resubscribed set", func() bool { return cmp.Equal([]string{"10.0.0.2:8080"}, addrsOf(d)) })

	// Falling behind again right away is not answered by a hot loop: the
	// resubscription is immediate once, then backs off.
	e.fake.set(web, answer{err: status.Error(codes.ResourceExhausted, "still too slow")})
	e.fake.end(web, status.Error(codes.ResourceExhausted, "too slow"))
	e.fake.waitGets(t, web, 3)
	e.fake.waitStreams(t, web, 0)
	time.Sleep(100 * time.Millisecond) // time for a fourth stream, which must not come
	if n := e.fake.getCount(web); n != 3 {
		t.Errorf("streams opened = %d, want 3", n)
	}
	if diff := cmp.Diff([]string{"10.0.0.2:8080"}, addrsOf(d)); diff != "" {
		t.Errorf("endpoints while backing off (-want +got):\n%s", diff)
	}
}

func TestIdleEviction(t *testing.T) {
	var drained drainLog
	e := newEnv(t, func(cfg *Config) { cfg.OnDrained = drained.record })
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080", "10.0.0.2:8080")}})
	d := mustGet(t, e.cache, web)
	idle := DefaultIdleTimeout

	// Run sweeps every IdleTimeout/4 of real time, which never comes in
	// this test; it sweeps by hand as the fake clock moves.
	e.cache.sweep() // sees the Get
	e.clock.Advance(idle - time.Minute)
	p, ok := d.Pick()
	if !ok {
		t.Fatal("Pick found no endpoint")
	}
	e.cache.sweep() // sees the Pick
	e.clock.Advance(2 * idle)
	e.cache.sweep() // the Pick is still in flight: a TCP connection in use
	e.fake.waitStreams(t, web, 1)
	p.Done()

	e.clock.Advance(idle - time.Second)
	e.cache.sweep()
	e.fake.waitStreams(t, web, 1)
	if len(drained.sorted()) != 0 {
		t.Fatalf("drained before eviction: %v", drained.sorted())
	}

	e.clock.Advance(time.Second)
	e.cache.sweep()
	e.fake.waitStreams(t, web, 0)
	want := []string{web + " 10.0.0.1:8080", web + " 10.0.0.2:8080"}
	if diff := cmp.Diff(want, drained.sorted()); diff != "" {
		t.Errorf("drained at eviction (-want +got):\n%s", diff)
	}
	if _, ok := d.Pick(); ok {
		t.Error("the evicted destination still picks")
	}

	// Using the destination again opens a new stream.
	if again := mustGet(t, e.cache, web); again == d || len(again.Endpoints()) != 2 {
		t.Errorf("Get after eviction = %p with %v, want a new destination with 2 endpoints", again, addrsOf(again))
	}
	if n := e.fake.getCount(web); n != 2 {
		t.Errorf("streams opened = %d, want 2", n)
	}
}

func TestRunEvicts(t *testing.T) {
	e := newEnv(t, func(cfg *Config) {
		cfg.Now = nil // the real clock, which Run's ticker goes by
		cfg.IdleTimeout = 40 * time.Millisecond
	})
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})
	mustGet(t, e.cache, web)
	e.fake.waitGets(t, web, 1)
	e.fake.waitStreams(t, web, 0)
}

func TestConcurrentGetsShareOneStream(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080")}})

	const callers = 32
	got := make([]*Destination, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { got[i], errs[i] = e.cache.Get(t.Context(), web) })
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("Get %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Errorf("Get %d returned another destination", i)
		}
	}
	if n := e.fake.getCount(web); n != 1 {
		t.Errorf("streams opened = %d, want 1", n)
	}
}

func TestNoAnswer(t *testing.T) {
	const wait = 300 * time.Millisecond
	e := newEnv(t, func(cfg *Config) { cfg.InitialWait = wait })
	// No answer set: the fake holds the stream open and says nothing.

	start := time.Now()
	if _, err := e.cache.Get(t.Context(), web); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Get: %v, want ErrNoAnswer", err)
	}
	if took := time.Since(start); took < wait {
		t.Errorf("Get gave up after %v, before InitialWait %v", took, wait)
	}
	// The wait is counted once per destination: later callers are not
	// delayed again.
	start = time.Now()
	if _, err := e.cache.Get(t.Context(), web); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("second Get: %v, want ErrNoAnswer", err)
	}
	if took := time.Since(start); took >= wait {
		t.Errorf("second Get waited %v", took)
	}

	// The stream stayed open; when the answer comes, Get succeeds.
	e.fake.push(t, web, add("10.0.0.1:8080"))
	eventually(t, "Get to succeed", func() bool {
		_, err := e.cache.Get(t.Context(), web)
		return err == nil
	})
	if n := e.fake.getCount(web); n != 1 {
		t.Errorf("streams opened = %d, want 1", n)
	}
}

func TestMalformedAddressSkipped(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(cfg *Config) { cfg.Registerer = reg })
	e.fake.set(web, answer{updates: []*destinationv1.Update{add("10.0.0.1:8080", "not-an-address", "10.0.0.2")}})
	d := mustGet(t, e.cache, web)
	if diff := cmp.Diff([]string{"10.0.0.1:8080"}, addrsOf(d)); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(e.cache.metrics.malformeds); got != 2 {
		t.Errorf("malformed_endpoints_total = %v, want 2", got)
	}
}

func TestGetAndRunLifecycle(t *testing.T) {
	c, err := New(Config{Client: unusedClient{}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	// Before Run, Get waits for it.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Get(ctx, web); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get before Run: %v, want DeadlineExceeded", err)
	}

	runCtx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	<-c.started
	if err := c.Run(runCtx); err == nil {
		t.Error("second Run returned nil")
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := c.Get(t.Context(), web); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Run: %v, want ErrClosed", err)
	}
}
