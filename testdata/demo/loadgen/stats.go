package loadgen

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Summary is what loadgen saw over a period.
type Summary struct {
	Elapsed   time.Duration
	Requests  int
	Successes int // 2xx answers
	Failures  int // other answers and transport errors
	P50, P99  time.Duration
	// Statuses counts answers by HTTP status code, and transport errors
	// as "error".
	Statuses map[string]int
	// LastError describes the last failure, if any.
	LastError string
}

// String formats s as one logfmt line.
func (s Summary) String() string {
	var b strings.Builder
	rps := 0.0
	if s.Elapsed > 0 {
		rps = float64(s.Requests) / s.Elapsed.Seconds()
	}
	fmt.Fprintf(&b, "elapsed=%s requests=%d successes=%d failures=%d rps=%.1f p50=%s p99=%s",
		s.Elapsed.Round(time.Millisecond), s.Requests, s.Successes, s.Failures, rps, short(s.P50), short(s.P99))
	var codes []string
	for _, k := range slices.Sorted(maps.Keys(s.Statuses)) {
		codes = append(codes, k+":"+strconv.Itoa(s.Statuses[k]))
	}
	fmt.Fprintf(&b, " statuses=%s", strings.Join(codes, ","))
	if s.LastError != "" {
		fmt.Fprintf(&b, " last_error=%s", strconv.Quote(s.LastError))
	}
	return b.String()
}

// window accumulates one period's results.
type window struct {
	start     time.Time
	hist      histogram
	successes int
	failures  int
	statuses  map[string]int
	lastError string
}

func newWindow(now time.Time) *window {
	return &window{start: now, statuses: make(map[string]int)}
}

func (w *window) add(status string, ok bool, latency time.Duration, errText string) {
	w.hist.add(latency)
	w.statuses[status]++
	if ok {
		w.successes++
	} else {
		w.failures++
		w.lastError = errText
	}
}

func (w *window) summary(now time.Time) Summary {
	return Summary{
		Elapsed: now.Sub(w.start), Requests: w.successes + w.failures,
		Successes: w.successes, Failures: w.failures,
		P50: w.hist.quantile(0.5), P99: w.hist.quantile(0.99),
		Statuses: maps.Clone(w.statuses), LastError: w.lastError,
	}
}

// stats holds the running totals and the current interval; safe for
// concurrent use, mu guards both windows.
type stats struct {
	mu              sync.Mutex
	total, interval *window
}

func newStats(now time.Time) *stats {
	return &stats{total: newWindow(now), interval: newWindow(now)}
}

func (s *stats) add(status string, ok bool, latency time.Duration, errText string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total.add(status, ok, latency, errText)
	s.interval.add(status, ok, latency, errText)
}

// rotate returns the summary of the interval that ends now and starts the
// next one.
func (s *stats) rotate(now time.Time) Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := s.interval.summary(now)
	s.interval = newWindow(now)
	return sum
}

func (s *stats) totals(now time.Time) Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total.summary(now)
}
