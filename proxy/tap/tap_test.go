package tap

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clock is a settable time for the Hub's rate limits.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newTestHub returns a Hub on a clock that moves only when told to.
func newTestHub(t testing.TB) (*Hub, *clock) {
	t.Helper()
	c := &clock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := NewHub()
	h.now = c.Now
	return h, c
}

func watch(t testing.TB, h *Hub, f Filter) *Watcher {
	t.Helper()
	w, err := h.Watch(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

// drain returns the events queued for w, without waiting.
func drain(w *Watcher) []*Event {
	var out []*Event
	for {
		select {
		case ev := <-w.Events():
			out = append(out, ev)
		default:
			return out
		}
	}
}

func get(path string) Request {
	return Request{
		Direction: "inbound", Src: "10.0.0.1:40000", Dst: "10.0.0.2:8080",
		Method: "GET", Scheme: "http", Authority: "web.shop:8080", Path: path,
	}
}

func TestFilter(t *testing.T) {
	tests := []struct {
		name   string
		filter Filter
		req    Request
		want   bool
	}{
		{name: "zero filter takes all", req: get("/x"), want: true},
		{name: "method matches", filter: Filter{Method: "GET"}, req: get("/"), want: true},
		{name: "method is exact", filter: Filter{Method: "get"}, req: get("/")},
		{name: "other method", filter: Filter{Method: "POST"}, req: get("/")},
		{name: "authority matches", filter: Filter{Authority: "web.shop:8080"}, req: get("/"), want: true},
		{name: "authority is exact", filter: Filter{Authority: "web.shop"}, req: get("/")},
		{name: "path prefix", filter: Filter{PathPrefix: "/api/"}, req: get("/api/v1/items"), want: true},
		{name: "path prefix is whole path", filter: Filter{PathPrefix: "/api"}, req: get("/api"), want: true},
		{name: "path outside prefix", filter: Filter{PathPrefix: "/api/"}, req: get("/apix")},
		{
			name:   "all filters",
			filter: Filter{Method: "GET", Authority: "web.shop:8080", PathPrefix: "/a"},
			req:    get("/ab"), want: true,
		},
		{
			name:   "one filter fails",
			filter: Filter{Method: "GET", Authority: "api.shop:8080", PathPrefix: "/a"},
			req:    get("/ab"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newTestHub(t)
			w := watch(t, h, tc.filter)
			p := h.Request(tc.req)
			p.Response(Response{Status: 200, GRPCStatus: -1, Success: true})
			got := drain(w)
			if !tc.want {
				if p != nil || len(got) != 0 {
					t.Fatalf("request delivered (%d events), want it filtered out", len(got))
				}
				return
			}
			if len(got) != 2 {
				t.Fatalf("got %d events, want request and response", len(got))
			}
			if diff := cmp.Diff(tc.req, *got[0].Request); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
			if got[0].Response != nil || got[1].Response == nil || got[1].Response.Status != 200 {
				t.Errorf("events are not a request then its response: %+v, %+v", got[0], got[1])
			}
			if got[0].ID != got[1].ID || got[0].ID == 0 {
				t.Errorf("ids %d and %d: want the same non-zero id", got[0].ID, got[1].ID)
			}
		})
	}
}

func TestFilterValidate(t *testing.T) {
	long := string(make([]byte, maxFilterLen+1))
	tests := []struct {
		name   string
		filter Filter
	}{
		{name: "negative rate", filter: Filter{MaxRPS: -1}},
		{name: "rate above max", filter: Filter{MaxRPS: MaxRPS + 1}},
		{name: "negative queue", filter: Filter{Queue: -1}},
		{name: "method with space", filter: Filter{Method: "GET /"}},
		{name: "method with control", filter: Filter{Method: "GET\r\n"}},
		{name: "long authority", filter: Filter{Authority: long}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newTestHub(t)
			if _, err := h.Watch(tc.filter); !errors.Is(err, ErrBadFilter) {
				t.Fatalf("Watch(%+v) = %v, want ErrBadFilter", tc.filter, err)
			}
			if n := h.Watchers(); n != 0 {
				t.Errorf("%d watchers after a refused filter", n)
			}
		})
	}
	ok := Filter{Method: "M-SEARCH", MaxRPS: MaxRPS, PathPrefix: "/ü"}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v, want nil", ok, err)
	}
}

// TestRateLimit: a watcher gets at most MaxRPS requests a second, a burst
// of at most one second's worth, and every response of a request it got
// even when its budget is spent.
func TestRateLimit(t *testing.T) {
	h, clk := newTestHub(t)
	w := watch(t, h, Filter{MaxRPS: 5})
	all := watch(t, h, Filter{MaxRPS: MaxRPS})
	publish := func(n int) (taken []*Pending) {
		for range n {
			if p := h.Request(get("/")); p != nil {
				taken = append(taken, p)
			}
		}
		return taken
	}
	count := func(w *Watcher) (reqs, resps int) {
		for _, ev := range drain(w) {
			if ev.Response == nil {
				reqs++
			} else {
				resps++
			}
		}
		return reqs, resps
	}

	pending := publish(20)
	// The budget is spent: the responses must still reach w.
	for _, p := range pending {
		p.Response(Response{Status: 204, GRPCStatus: -1, Success: true})
	}
	if reqs, resps := count(w); reqs != 5 || resps != 5 {
		t.Errorf("limited watcher got %d requests and %d responses, want 5 and 5", reqs, resps)
	}
	if reqs, resps := count(all); reqs != 20 || resps != 20 {
		t.Errorf("unlimited watcher got %d requests and %d responses, want 20 and 20", reqs, resps)
	}

	clk.Advance(200 * time.Millisecond) // one token at 5/s
	publish(3)
	if reqs, _ := count(w); reqs != 1 {
		t.Errorf("after 200ms: got %d requests, want 1", reqs)
	}
	clk.Advance(time.Minute) // the bucket holds one second at most
	publish(20)
	if reqs, _ := count(w); reqs != 5 {
		t.Errorf("after a minute idle: got %d requests, want a burst of 5", reqs)
	}
	if d := w.Dropped(); d != 0 {
		t.Errorf("Dropped() = %d; rate-limited requests are not drops", d)
	}
}

// TestSlowWatcherDrops: a full queue drops events for that watcher only,
// counted, without blocking the publisher; a response whose request was
// dropped is not delivered alone.
func TestSlowWatcherDrops(t *testing.T) {
	h, _ := newTestHub(t)
	slow := watch(t, h, Filter{Queue: 4, MaxRPS: MaxRPS})
	fast := watch(t, h, Filter{MaxRPS: MaxRPS})

	var pending []*Pending
	for range 10 {
		pending = append(pending, h.Request(get("/")))
	}
	if got := len(drain(fast)); got != 10 {
		t.Errorf("fast watcher got %d events, want 10", got)
	}
	if d := slow.Dropped(); d != 6 {
		t.Errorf("slow watcher Dropped() = %d, want 6", d)
	}
	if d := h.Dropped(); d != 6 {
		t.Errorf("hub Dropped() = %d, want 6", d)
	}
	got := drain(slow)
	if len(got) != 4 {
		t.Fatalf("slow watcher got %d events, want 4", len(got))
	}
	delivered := map[uint64]bool{}
	for _, ev := range got {
		delivered[ev.ID] = true
	}
	for _, p := range pending {
		p.Response(Response{Status: 200, GRPCStatus: 0, Success: true})
	}
	got = drain(slow)
	if len(got) != 4 {
		t.Fatalf("slow watcher got %d responses, want the 4 of its requests", len(got))
	}
	for _, ev := range got {
		if ev.Response == nil || !delivered[ev.ID] {
			t.Errorf("response %d delivered without its request", ev.ID)
		}
	}
	if got := len(drain(fast)); got != 10 {
		t.Errorf("fast watcher got %d responses, want 10", got)
	}
}

// TestNobodyWatching: without watchers (none yet, or all closed) Request
// returns nil and allocates nothing; nil Pendings and a nil Hub are safe.
func TestNobodyWatching(t *testing.T) {
	h, _ := newTestHub(t)
	req := get("/")
	if p := h.Request(req); p != nil {
		t.Fatalf("Request with no watcher = %v, want nil", p)
	}
	if n := testing.AllocsPerRun(100, func() { h.Request(req).Response(Response{}) }); n != 0 {
		t.Errorf("Request+Response with no watcher: %v allocs, want 0", n)
	}
	w, err := h.Watch(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if h.Request(req) == nil {
		t.Fatal("Request with a watcher = nil")
	}
	w.Close()
	w.Close() // idempotent
	if p := h.Request(req); p != nil {
		t.Errorf("Request after Close = %v, want nil", p)
	}
	if n := h.Watchers(); n != 0 {
		t.Errorf("Watchers() = %d after Close, want 0", n)
	}
	var nilHub *Hub
	nilHub.Request(req).Response(Response{})
}

// TestResponseAfterClose: a watcher closed between a request and its
// response gets nothing more.
func TestResponseAfterClose(t *testing.T) {
	h, _ := newTestHub(t)
	w, err := h.Watch(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	p := h.Request(get("/"))
	w.Close()
	p.Response(Response{Status: 200})
	if got := drain(w); len(got) != 1 || got[0].Response != nil {
		t.Errorf("got %d events after Close, want only the request before it", len(got))
	}
}

func TestTooManyWatchers(t *testing.T) {
	h, _ := newTestHub(t)
	for range MaxWatchers {
		watch(t, h, Filter{})
	}
	if _, err := h.Watch(Filter{}); !errors.Is(err, ErrTooManyWatchers) {
		t.Fatalf("Watch beyond MaxWatchers = %v, want ErrTooManyWatchers", err)
	}
}

// TestConcurrent publishes from many goroutines while watchers come and
// go; run with -race. Every response a watcher gets follows its request.
func TestConcurrent(t *testing.T) {
	h := NewHub()
	stop := make(chan struct{})
	var published atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				h.Request(get("/")).Response(Response{Status: 200, GRPCStatus: -1})
				published.Add(1)
			}
		})
	}
	for range 20 {
		w, err := h.Watch(Filter{MaxRPS: MaxRPS, Queue: 64})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[uint64]bool{}
		for range 50 {
			ev := <-w.Events()
			if ev.Response == nil {
				seen[ev.ID] = true
			} else if !seen[ev.ID] {
				t.Errorf("response %d before its request", ev.ID)
			}
		}
		w.Close()
	}
	close(stop)
	wg.Wait()
	if published.Load() == 0 {
		t.Fatal("nothing published")
	}
}

// BenchmarkRequest is the cost the HTTP proxy pays per request for tap:
// with nobody watching it must be one atomic load and 0 allocs.
//
//	go test -run XXX -bench Request -benchmem ./proxy/tap/
func BenchmarkRequest(b *testing.B) {
	req := get("/api/v1/items")
	resp := Response{Status: 200, GRPCStatus: -1, Latency: time.Millisecond, Success: true}
	b.Run("no watcher", func(b *testing.B) {
		h := NewHub()
		b.ReportAllocs()
		for b.Loop() {
			h.Request(req).Response(resp)
		}
	})
	b.Run("filtered out", func(b *testing.B) {
		h := NewHub()
		w, err := h.Watch(Filter{PathPrefix: "/other/"})
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		b.ReportAllocs()
		for b.Loop() {
			h.Request(req).Response(resp)
		}
	})
	b.Run("rate limited", func(b *testing.B) {
		h := NewHub()
		w, err := h.Watch(Filter{MaxRPS: 1})
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		b.ReportAllocs()
		for b.Loop() {
			h.Request(req).Response(resp)
		}
	})
	b.Run("delivered", func(b *testing.B) {
		h, clk := newTestHub(b)
		w, err := h.Watch(Filter{MaxRPS: MaxRPS})
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		b.ReportAllocs()
		for b.Loop() {
			clk.Advance(time.Millisecond) // refills the bucket
			h.Request(req).Response(resp)
			<-w.Events()
			<-w.Events()
		}
	})
}
