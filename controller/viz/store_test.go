package viz

import (
	"fmt"
	"testing"
	"time"
	"unsafe"

	"k8s.io/apimachinery/pkg/types"

	"github.com/mesh-dev/mesh/internal/workload"
)

const testInterval = 5 * time.Second

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// round returns the time of the ith scrape round after t0.
func round(i int) time.Time { return t0.Add(time.Duration(i) * testInterval) }

// inboundWeb is an inbound label set of the test pods.
var inboundWeb = labels{Direction: inbound, Authority: "web:80", TargetAddr: "10.0.0.1:8080"}

func testPod(name string, started time.Time) podInfo {
	return podInfo{
		UID: types.UID("uid-" + name), Namespace: "shop", Name: name,
		Workload: workload.Ref{Kind: "deployment", Name: "web"},
		ID:       "spiffe://cluster.local/ns/shop/sa/web", Started: started,
	}
}

// scraped is a successful scrape of pod with one label set.
func scraped(pod podInfo, start time.Time, l labels, c counters) scrapeResult {
	return scrapeResult{pod: pod, start: float64(start.UnixNano()) / 1e9, series: map[labels]*counters{l: &c}}
}

func liveSet(pods ...podInfo) map[types.UID]bool {
	live := map[types.UID]bool{}
	for _, p := range pods {
		live[p.UID] = true
	}
	return live
}

// requests sums the responses of every inbound series in the window d.
func requests(s *store, d time.Duration) (uint64, float64) {
	acc := make([]accum, 1)
	w := s.sum(d, testInterval, acc, func(k *seriesKey) int {
		if k.Direction == inbound {
			return 0
		}
		return -1
	})
	return acc[0].requests, w.Secs
}

func TestStoreDeltas(t *testing.T) {
	longAgo := t0.Add(-time.Hour)
	tests := []struct {
		name string
		// values of the pod's responses counter at rounds 0, 1, 2; -1: the
		// scrape failed.
		values []float64
		// process start time at each round (zero: longAgo).
		starts []time.Time
		want   uint64
	}{
		{name: "first scrape is the baseline", values: []float64{100, 130}, want: 30},
		{name: "missed scrape loses no count", values: []float64{100, -1, 160}, want: 60},
		{name: "counter reset counts the new value", values: []float64{100, 130, 20}, want: 30 + 20},
		{
			name: "process restart counts all of the new value", values: []float64{100, 130, 150},
			starts: []time.Time{longAgo, longAgo, round(2).Add(-time.Second)}, want: 30 + 150,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(DefaultRetention, DefaultMaxSeries)
			pod := testPod("web-1", longAgo)
			for i, v := range tc.values {
				start := longAgo
				if i < len(tc.starts) {
					start = tc.starts[i]
				}
				r := scraped(pod, start, inboundWeb, counters{Responses: v, Successes: v})
				if v < 0 {
					r = scrapeResult{pod: pod, err: fmt.Errorf("refused")}
				}
				s.apply(round(i), []scrapeResult{r}, liveSet(pod))
			}
			if got, _ := requests(s, time.Minute); got != tc.want {
				t.Errorf("requests = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestStoreDenials checks that a pod's denials, alone in their label set,
// are kept as deltas like any counter, and reach the inbound figures only.
func TestStoreDenials(t *testing.T) {
	longAgo := t0.Add(-time.Hour)
	s := newStore(DefaultRetention, DefaultMaxSeries)
	pod := testPod("web-1", longAgo)
	for i, v := range []float64{10, 14, 2} { // the last one after a reset
		s.apply(round(i), []scrapeResult{scraped(pod, longAgo, authzLabels, counters{Denied: v})}, liveSet(pod))
	}
	acc := make([]accum, 1)
	w := s.sum(time.Minute, testInterval, acc, func(k *seriesKey) int {
		if k.Direction == inbound {
			return 0
		}
		return -1
	})
	st := acc[0].inboundStats(w.Secs)
	if st.Denied == nil || *st.Denied != 4+2 || st.DeniedPerSec == nil || *st.DeniedPerSec != 6/w.Secs {
		t.Errorf("denied %v, %v per second; want 6, %v", st.Denied, st.DeniedPerSec, 6/w.Secs)
	}
	if st.Requests != 0 || st.SuccessRate != nil {
		t.Errorf("denials counted as requests: %+v", st)
	}
	if plain := acc[0].stats(w.Secs); plain.Denied != nil || plain.DeniedPerSec != nil {
		t.Errorf("stats has denials %v, %v; only inboundStats should", plain.Denied, plain.DeniedPerSec)
	}
}

// TestStoreYoungProxy checks which first scrapes count from zero: those
// of proxies that started after the store did and within the retention.
func TestStoreYoungProxy(t *testing.T) {
	tests := []struct {
		name       string
		procStart  time.Time // process_start_time_seconds; zero: not exported
		podStarted time.Time
		want       uint64
	}{
		{name: "started after the store", procStart: round(1).Add(-2 * time.Second), want: 7},
		{name: "pod start when the proxy exports none", podStarted: round(1).Add(-2 * time.Second), want: 7},
		{name: "started before the store", procStart: t0.Add(-time.Second), want: 0},
		{name: "no start time known", want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(DefaultRetention, DefaultMaxSeries)
			s.apply(round(0), nil, nil) // the store starts
			pod := testPod("web-2", tc.podStarted)
			r := scrapeResult{pod: pod, series: map[labels]*counters{inboundWeb: {Responses: 7}}}
			if !tc.procStart.IsZero() {
				r.start = float64(tc.procStart.Unix())
			}
			s.apply(round(1), []scrapeResult{r}, liveSet(pod))
			if got, _ := requests(s, time.Minute); got != tc.want {
				t.Errorf("requests = %d, want %d", got, tc.want)
			}
		})
	}

	// A proxy older than the retention that was never scraped (say, its
	// scrapes failed for an hour) sets a baseline: its counts would spread
	// beyond the store's window.
	s := newStore(DefaultRetention, DefaultMaxSeries)
	s.apply(round(0), nil, nil)
	late := round(300) // 25 minutes later
	pod := testPod("web-3", time.Time{})
	s.apply(late, []scrapeResult{scraped(pod, round(1), inboundWeb, counters{Responses: 7})}, liveSet(pod))
	if got, _ := requests(s, time.Minute); got != 0 {
		t.Errorf("proxy older than the retention: requests = %d, want 0", got)
	}
}

// TestStoreWindow checks which rounds a window holds, with rounds a
// little early or late, and the seconds its rates divide by.
func TestStoreWindow(t *testing.T) {
	s := newStore(DefaultRetention, DefaultMaxSeries)
	pod := testPod("web-1", time.Time{})
	longAgo := t0.Add(-time.Hour)
	// 10 responses a round, the round times off by up to 40ms.
	for i := range 40 {
		jitter := time.Duration((i%5)-2) * 20 * time.Millisecond
		r := scraped(pod, longAgo, inboundWeb, counters{Responses: float64(10 * i)})
		s.apply(round(i).Add(jitter), []scrapeResult{r}, liveSet(pod))
	}
	tests := []struct {
		window   time.Duration
		want     uint64
		wantSecs float64
	}{
		{window: testInterval, want: 10, wantSecs: 5},
		{window: time.Minute, want: 120, wantSecs: 60},
		{window: 10 * time.Minute, want: 390, wantSecs: 39*5 + 0.08}, // the store covers less: its age
	}
	for _, tc := range tests {
		got, secs := requests(s, tc.window)
		if got != tc.want || secs != tc.wantSecs {
			t.Errorf("window %s: %d requests over %vs, want %d over %vs", tc.window, got, secs, tc.want, tc.wantSecs)
		}
	}
}

// TestStoreRetention checks that the ring keeps the retention and no more.
func TestStoreRetention(t *testing.T) {
	s := newStore(DefaultRetention, DefaultMaxSeries)
	pod := testPod("web-1", time.Time{})
	n := int(DefaultRetention/testInterval) * 2
	for i := range n {
		r := scraped(pod, t0.Add(-time.Hour), inboundWeb, counters{Responses: float64(i)})
		s.apply(round(i), []scrapeResult{r}, liveSet(pod))
	}
	if max := int(DefaultRetention / testInterval); len(s.steps) != max {
		t.Errorf("%d steps held, want %d", len(s.steps), max)
	}
	if got := s.steps[0].At; !got.After(round(n - 1).Add(-DefaultRetention)) {
		t.Errorf("oldest step at %v, older than the retention", got)
	}
	if s.samples != len(s.steps) {
		t.Errorf("samples = %d, want one per step, %d", s.samples, len(s.steps))
	}
}

// TestStoreMaxSeries checks that the baselines hold at most MaxSeries
// label sets, keeping those already known.
func TestStoreMaxSeries(t *testing.T) {
	s := newStore(DefaultRetention, 3)
	a, b := testPod("web-1", time.Time{}), testPod("web-2", time.Time{})
	many := func(pod podInfo, n int, v float64) scrapeResult {
		r := scrapeResult{pod: pod, series: map[labels]*counters{}}
		for i := range n {
			r.series[labels{Direction: inbound, Authority: fmt.Sprint("a", i)}] = &counters{Responses: v}
		}
		return r
	}
	st := s.apply(round(0), []scrapeResult{many(a, 2, 1)}, liveSet(a, b))
	if st.series != 2 || st.dropped != 0 {
		t.Fatalf("round 0: %+v, want 2 series, none dropped", st)
	}
	st = s.apply(round(1), []scrapeResult{many(a, 2, 2), many(b, 5, 1)}, liveSet(a, b))
	if st.series != 3 || st.dropped != 4 {
		t.Errorf("round 1: %+v, want 3 series, 4 dropped", st)
	}
	// a's label sets stay known while b's take the room left.
	st = s.apply(round(2), []scrapeResult{many(a, 2, 3), many(b, 5, 2)}, liveSet(a, b))
	if st.series != 3 || len(s.pods[a.UID].series) != 2 {
		t.Errorf("round 2: %+v, a holds %d label sets; want 3 series, a's 2 kept", st, len(s.pods[a.UID].series))
	}
	// b goes away: its room is free again.
	st = s.apply(round(3), []scrapeResult{many(a, 4, 4)}, liveSet(a))
	if st.series != 3 || st.dropped != 1 {
		t.Errorf("round 3: %+v, want 3 series, 1 dropped", st)
	}
}

// TestStoreDeletedPod checks that a deleted pod's baseline goes at once
// and its history when it ages out, with the keys it used.
func TestStoreDeletedPod(t *testing.T) {
	s := newStore(DefaultRetention, DefaultMaxSeries)
	a, b := testPod("web-1", time.Time{}), testPod("web-2", time.Time{})
	old := t0.Add(-time.Hour)
	s.apply(round(0), []scrapeResult{scraped(a, old, inboundWeb, counters{}), scraped(b, old, inboundWeb, counters{})}, liveSet(a, b))
	s.apply(round(1), []scrapeResult{scraped(a, old, inboundWeb, counters{Responses: 5}), scraped(b, old, inboundWeb, counters{Responses: 3})}, liveSet(a, b))
	st := s.apply(round(2), []scrapeResult{scraped(a, old, inboundWeb, counters{Responses: 6})}, liveSet(a))
	if st.series != 1 || s.pods[b.UID] != nil {
		t.Errorf("after b's deletion: %d series, b's baseline %v", st.series, s.pods[b.UID])
	}
	if got, _ := requests(s, time.Minute); got != 5+3+1 {
		t.Errorf("requests = %d, want b's history kept: 9", got)
	}
	// Keys are compacted once per turn of the ring: two turns.
	for i := 3; i < 3+2*int(DefaultRetention/testInterval); i++ {
		s.apply(round(i), []scrapeResult{scraped(a, old, inboundWeb, counters{Responses: 6})}, liveSet(a))
	}
	if len(s.keys) != 0 || s.samples != 0 {
		t.Errorf("after the retention: %d keys, %d samples; want none", len(s.keys), s.samples)
	}
}

// TestStoreStale checks that a pod whose last scrape failed leaves the
// figures of the last scrape, as its series go stale in Prometheus.
func TestStoreStale(t *testing.T) {
	s := newStore(DefaultRetention, DefaultMaxSeries)
	pod := testPod("web-1", time.Time{})
	s.apply(round(0), []scrapeResult{scraped(pod, t0.Add(-time.Hour), inboundWeb, counters{Responses: 40})}, liveSet(pod))
	total := func() float64 {
		acc := make([]accum, 1)
		s.sum(time.Minute, testInterval, acc, func(*seriesKey) int { return 0 })
		return acc[0].total
	}
	if got := total(); got != 40 {
		t.Errorf("total = %v, want 40", got)
	}
	s.apply(round(1), []scrapeResult{{pod: pod, err: fmt.Errorf("timeout")}}, liveSet(pod))
	if got := total(); got != 0 {
		t.Errorf("total after a failed scrape = %v, want 0", got)
	}
}

// TestSampleSize pins the size the package doc's memory estimate uses.
func TestSampleSize(t *testing.T) {
	if got := unsafe.Sizeof(sample{}); got != 80 {
		t.Errorf("sample is %d bytes; the package doc says 80", got)
	}
	if got := unsafe.Sizeof(bucketCount{}); got != 16 {
		t.Errorf("bucketCount is %d bytes; the package doc says 16", got)
	}
}
