package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/testdata/demo/demotest"
	"github.com/mesh-dev/mesh/testdata/demo/echo"
	"github.com/mesh-dev/mesh/testdata/demo/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// shop is a stand-in for the web front end: a real server whose page lists
// ok (bought with 200) and broken (answered 503), counting each path.
type shop struct {
	mu   sync.Mutex
	hits map[string]int
}

func (s *shop) start(t testing.TB) string {
	s.hits = make(map[string]int)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.Method+" "+r.URL.RequestURI()]++
		s.mu.Unlock()
		switch {
		case r.Method == "GET" && r.URL.Path == "/":
			fmt.Fprint(w, `<form method="post" action="/buy?product=ok"></form>
<form method="post" action="/buy?product=broken"></form>`)
		case r.URL.Query().Get("product") == "broken":
			http.Error(w, "orders unavailable", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestRun(t *testing.T) {
	var s shop
	target := s.start(t)
	var out bytes.Buffer
	cfg := Config{Target: target, Concurrency: 1, Requests: 8, MaxFailures: -1}
	got, err := Run(t.Context(), cfg, &out)
	if err != nil {
		t.Fatal(err)
	}
	// One worker: page, ok, page, broken, page, ok, page, broken.
	wantHits := map[string]int{"GET /": 4, "POST /buy?product=ok": 2, "POST /buy?product=broken": 2}
	if diff := cmp.Diff(wantHits, s.hits); diff != "" {
		t.Errorf("requests the shop saw (-want +got):\n%s", diff)
	}
	want := Summary{Requests: 8, Successes: 6, Failures: 2, Statuses: map[string]int{"200": 6, "503": 2},
		LastError: "POST /buy?product=broken: 503: orders unavailable"}
	if diff := cmp.Diff(want, got, cmpSummary); diff != "" {
		t.Errorf("Run (-want +got):\n%s", diff)
	}
	line := regexp.MustCompile(`^summary=total elapsed=\S+ requests=8 successes=6 failures=2 rps=[0-9.]+ p50=\S+ p99=\S+ statuses=200:6,503:2 last_error="POST /buy\?product=broken: 503: orders unavailable"\n$`)
	if !line.Match(out.Bytes()) {
		t.Errorf("output %q does not match %s", out.String(), line)
	}
}

// cmpSummary ignores the timings, which vary run to run.
var cmpSummary = cmp.FilterPath(func(p cmp.Path) bool {
	switch p.Last().String() {
	case ".Elapsed", ".P50", ".P99":
		return true
	}
	return false
}, cmp.Ignore())

func TestPath(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		wantHits map[string]int
		wantErr  string
	}{
		{name: "zero is the shop's page", path: "",
			wantHits: map[string]int{"GET /": 2, "POST /buy?product=ok": 1, "POST /buy?product=broken": 1}},
		// The stub answers other paths with an empty 200: nothing to buy.
		{name: "a page without products", path: "/health?full=1", wantHits: map[string]int{"GET /health?full=1": 4}},
		{name: "relative", path: "health", wantHits: map[string]int{}, wantErr: `bad path "health"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s shop
			target := s.start(t)
			var out bytes.Buffer
			cfg := Config{Target: target, Path: tc.path, Concurrency: 1, Requests: 4, MaxFailures: -1}
			_, err := Run(t.Context(), cfg, &out)
			if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Run = %v, want an error with %q", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.wantHits, s.hits); diff != "" {
				t.Errorf("requests the shop saw (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEcho loads a real echo server, the way the load balancer's tests do:
// plain GETs of --path, counted by status, failing the run past
// --max-failures.
func TestEcho(t *testing.T) {
	tests := []struct {
		name         string
		fault        fault.Fault
		maxFailures  int
		want         Summary
		wantStatuses string // in the summary line
		wantTooMany  bool
	}{
		{name: "healthy", maxFailures: 0,
			want: Summary{Requests: 6, Successes: 6, Statuses: map[string]int{"200": 6}}, wantStatuses: "statuses=200:6"},
		{name: "failing", fault: fault.Fault{FailRate: 1, FailStatus: 503}, maxFailures: 5,
			want: Summary{Requests: 6, Failures: 6, Statuses: map[string]int{"503": 6},
				LastError: "GET /ping: 503: injected fault from echo-a"},
			wantStatuses: "statuses=503:6", wantTooMany: true},
		{name: "failing, all allowed", fault: fault.Fault{FailRate: 1, FailStatus: 503}, maxFailures: -1,
			want: Summary{Requests: 6, Failures: 6, Statuses: map[string]int{"503": 6},
				LastError: "GET /ping: 503: injected fault from echo-a"},
			wantStatuses: "statuses=503:6"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := demotest.Serve(t, func(ctx context.Context, ln net.Listener) error {
				return echo.Serve(ctx, ln, echo.Config{Name: "echo-a", Fault: tc.fault})
			})
			var out bytes.Buffer
			cfg := Config{Target: target, Path: "/ping", Concurrency: 2, Requests: 6, MaxFailures: tc.maxFailures}
			got, err := Run(t.Context(), cfg, &out)
			if errors.Is(err, ErrTooManyFailures) != tc.wantTooMany {
				t.Errorf("Run = %v, want ErrTooManyFailures: %v", err, tc.wantTooMany)
			}
			if diff := cmp.Diff(tc.want, got, cmpSummary); diff != "" {
				t.Errorf("Run (-want +got):\n%s", diff)
			}
			if line := out.String(); !strings.HasPrefix(line, "summary=total ") || !strings.Contains(line, " "+tc.wantStatuses) {
				t.Errorf("output %q, want a total summary with %s", line, tc.wantStatuses)
			}
		})
	}
}

func TestMaxFailures(t *testing.T) {
	var s shop
	target := s.start(t)
	tests := []struct {
		name        string
		maxFailures int
		wantErr     bool
	}{
		{name: "unlimited", maxFailures: -1},
		{name: "enough", maxFailures: 2},
		{name: "too few", maxFailures: 1, wantErr: true},
		{name: "none allowed", maxFailures: 0, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			cfg := Config{Target: target, Concurrency: 1, Requests: 8, MaxFailures: tc.maxFailures}
			_, err := Run(t.Context(), cfg, &out)
			if gotErr := errors.Is(err, ErrTooManyFailures); gotErr != tc.wantErr {
				t.Errorf("Run = %v, want ErrTooManyFailures: %v", err, tc.wantErr)
			}
		})
	}
}

func TestTargetDown(t *testing.T) {
	var out bytes.Buffer
	cfg := Config{Target: demotest.ClosedAddr(t), Concurrency: 2, Requests: 4, MaxFailures: -1}
	got, err := Run(t.Context(), cfg, &out)
	if err != nil {
		t.Fatal(err)
	}
	if got.Failures != 4 || got.Statuses["error"] != 4 || !strings.Contains(got.LastError, "connection refused") {
		t.Errorf("Run against a closed port = %+v, want 4 connection errors", got)
	}
}

func TestRateAndIntervals(t *testing.T) {
	var s shop
	target := s.start(t)
	var out bytes.Buffer
	// 40 rps for 500ms is about 20 requests, reported every 100ms.
	cfg := Config{Target: target, RPS: 40, Concurrency: 4, Duration: 500 * time.Millisecond,
		Interval: 100 * time.Millisecond, MaxFailures: -1}
	got, err := Run(t.Context(), cfg, &out)
	if err != nil {
		t.Fatal(err)
	}
	if got.Requests < 10 || got.Requests > 22 {
		t.Errorf("%d requests in 500ms at 40 rps, want about 20", got.Requests)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	intervals := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "summary=interval elapsed=") {
			intervals++
		}
	}
	if intervals < 3 || !strings.HasPrefix(lines[len(lines)-1], "summary=total ") {
		t.Errorf("want at least 3 interval lines and a total line last, got:\n%s", out.String())
	}
}

func TestStopsOnCancel(t *testing.T) {
	var s shop
	target := s.start(t)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	var out bytes.Buffer
	start := time.Now()
	got, err := Run(ctx, Config{Target: target, RPS: 100, MaxFailures: -1}, &out)
	if err != nil {
		t.Errorf("Run stopped by its context = %v, want nil", err)
	}
	// Requests in flight finish: none is cut off into a transport error.
	if got.Requests == 0 || got.Statuses["error"] != 0 {
		t.Errorf("Run stopped by its context = %+v, want requests and no transport errors", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run took %s to stop", d)
	}
}

func TestTargetURL(t *testing.T) {
	tests := []struct {
		target  string
		want    string
		wantErr bool
	}{
		{target: "web:8080", want: "http://web:8080"},
		{target: "http://127.0.0.1:1/", want: "http://127.0.0.1:1"},
		{target: "https://shop.example/base", want: "https://shop.example/base"},
		{target: "ftp://web", wantErr: true},
		{target: "", wantErr: true},
		{target: "http://", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			got, err := targetURL(tc.target)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("targetURL(%q) = %q, %v; want %q, error: %v", tc.target, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestHistogram(t *testing.T) {
	tests := []struct {
		name     string
		samples  []time.Duration
		q        float64
		want     time.Duration
		tolerate float64 // relative error allowed
	}{
		{name: "empty", q: 0.5, want: 0},
		{name: "tiny", samples: []time.Duration{time.Microsecond}, q: 0.5, want: histMin},
		{name: "one", samples: []time.Duration{time.Millisecond}, q: 0.99, want: time.Millisecond, tolerate: 0.1},
		{name: "median", samples: []time.Duration{time.Millisecond, 2 * time.Millisecond, 100 * time.Millisecond},
			q: 0.5, want: 2 * time.Millisecond, tolerate: 0.1},
		{name: "p99 of a tail", samples: append(repeat(time.Millisecond, 98), time.Second, time.Second),
			q: 0.99, want: time.Second, tolerate: 0.1},
		{name: "beyond the last bucket", samples: []time.Duration{24 * time.Hour}, q: 0.5,
			want: time.Duration(float64(histMin) * pow11(histBuckets-1)), tolerate: 0.01},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h histogram
			for _, d := range tc.samples {
				h.add(d)
			}
			got := h.quantile(tc.q)
			if got < tc.want || float64(got) > float64(tc.want)*(1+tc.tolerate) {
				t.Errorf("quantile(%v) = %s, want %s up to +%.0f%%", tc.q, got, tc.want, tc.tolerate*100)
			}
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	s := make([]time.Duration, n)
	for i := range s {
		s[i] = d
	}
	return s
}

func pow11(n int) float64 {
	p := 1.0
	for range n {
		p *= histGrowth
	}
	return p
}
