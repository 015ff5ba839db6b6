package backoff

import (
	"math"
	"sync"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	nominal := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, n := range nominal {
		n *= time.Millisecond
		if got := b.Next(); got < n/2 || got > n {
			t.Errorf("attempt %d waits %v, want within [%v, %v]", i, got, n/2, n)
		}
	}
	if !b.Failing() {
		t.Error("Failing is false after failures")
	}
	b.Reset()
	if b.Failing() {
		t.Error("Failing is true after Reset")
	}
	if got := b.Next(); got < 50*time.Millisecond || got > 100*time.Millisecond {
		t.Errorf("after Reset the wait is %v, want within [50ms, 100ms]", got)
	}
	var zero Backoff
	if got := zero.Next(); got != 0 {
		t.Errorf("the zero Backoff waits %v, want 0", got)
	}
}

// TestDelay pins the schedule, jitter included, for fixed random draws.
func TestDelay(t *testing.T) {
	const (
		sec = time.Second
		big = time.Duration(math.MaxInt64)
	)
	tests := []struct {
		name     string
		min, max time.Duration
		jitter   float64
		bits     uint64 // what Rand returns
		n        int    // consecutive failures
		want     time.Duration
	}{
		{name: "first failure waits Min", min: sec, max: 8 * sec, jitter: -1, n: 1, want: sec},
		{name: "n below 1 counts as 1", min: sec, max: 8 * sec, jitter: -1, n: -5, want: sec},
		{name: "doubles", min: sec, max: 8 * sec, jitter: -1, n: 3, want: 4 * sec},
		{name: "capped", min: sec, max: 8 * sec, jitter: -1, n: 10, want: 8 * sec},
		{name: "no overflow far past the cap", min: sec, max: 8 * sec, jitter: -1, n: math.MaxInt, want: 8 * sec},
		{name: "no overflow below a huge Max", min: sec, max: big, jitter: -1, n: 34, want: sec << 33},
		{name: "a huge Max is reached, not wrapped", min: sec, max: big, jitter: -1, n: 35, want: big},
		{name: "a huge Max holds far past it", min: sec, max: big, jitter: -1, n: 1000, want: big},
		{name: "Min above Max waits Max", min: time.Hour, max: 2 * time.Minute, jitter: -1, n: 1, want: 2 * time.Minute},
		{name: "zero Min waits 0", max: 8 * sec, jitter: -1, n: 3, want: 0},
		{name: "default jitter, draw of zero keeps the full wait", min: sec, max: 8 * sec, bits: 0, n: 2, want: 2 * sec},
		{name: "default jitter, draw of one half", min: sec, max: 8 * sec, bits: 1 << 63, n: 2, want: 1500 * time.Millisecond},
		{name: "default jitter never takes half", min: sec, max: 8 * sec, bits: math.MaxUint64, n: 2, want: sec + 1},
		{name: "jitter applies after the cap", min: sec, max: 8 * sec, jitter: 0.25, bits: 1 << 63, n: 10, want: 7 * sec},
		{name: "jitter above 1 counts as 1", min: sec, max: 8 * sec, jitter: 3, bits: 1 << 63, n: 1, want: sec / 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := Backoff{Min: tc.min, Max: tc.max, Jitter: tc.jitter, Rand: func() uint64 { return tc.bits }}
			if got := b.Delay(tc.n); got != tc.want {
				t.Errorf("Delay(%d) = %v, want %v", tc.n, got, tc.want)
			}
			if b.Failing() {
				t.Error("Delay counted a failure")
			}
		})
	}
}

// TestDelayConcurrent shares one Backoff between goroutines that keep their
// own counts, as the balancer does for its endpoints; the race detector
// fails it if Delay writes anything.
func TestDelayConcurrent(t *testing.T) {
	b := Backoff{Min: time.Millisecond, Max: time.Second}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for n := 1; n <= 100; n++ {
				nominal := min(time.Millisecond<<min(n-1, 20), time.Second)
				if got := b.Delay(n); got < nominal/2 || got > nominal {
					t.Errorf("Delay(%d) = %v, want within [%v, %v]", n, got, nominal/2, nominal)
					return
				}
			}
		})
	}
	wg.Wait()
}
