package main

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// row is a sample of a round: requests answered at rps, and the proxy's
// CPU in µs per request.
func row(round int, l loadName, k tableKind, requests int, usPerReq float64) sample {
	return sample{
		round: round, load: l, kind: k,
		res:      clientResult{requests: requests, rps: float64(requests) / 5},
		proxyCPU: time.Duration(usPerReq * float64(requests) * float64(time.Microsecond)),
	}
}

func TestSummarize(t *testing.T) {
	samples := []sample{
		// Round 1: the by-path row costs 2 % more than none; round 2 4 %,
		// round 3 (a noisy one, all rows slower) 10 %.
		row(1, http1, noRoutes, 1000, 40), row(1, http1, byPath, 1000, 40.8), row(1, http1, byHeader, 500, 120),
		row(2, http1, byPath, 2000, 41.6), row(2, http1, noRoutes, 2000, 40), row(2, http1, byHeader, 500, 100),
		row(3, http1, byHeader, 500, 200), row(3, http1, noRoutes, 1000, 80), row(3, http1, byPath, 1000, 88),
		// A load not asked for is left out.
		row(1, h2c, noRoutes, 1000, 20),
	}
	got := summarize(samples, []loadName{http1})
	want := []summary{
		{load: http1, kind: noRoutes, rps: 200, perRequest: 40 * time.Microsecond, rounds: 3},
		{load: http1, kind: byPath, rps: 200, perRequest: 41600 * time.Nanosecond, rounds: 3,
			ratio: 1.04, ratioMin: 1.02, ratioMax: 1.10,
			// (40.8k + 83.2k + 88k µs) / 4000 requests against (40k + 80k + 80k µs) / 4000.
			pooled: 212.0 / 200},
		{load: http1, kind: byHeader, rps: 100, perRequest: 120 * time.Microsecond, rounds: 3,
			ratio: 2.5, ratioMin: 2.5, ratioMax: 3},
	}
	// The pooled ratio of the by-header rows: 210k µs / 1500 requests
	// against 200k µs / 4000.
	want[2].pooled = (210e3 / 1500) / (200e3 / 4000.0)
	approx := cmpopts.EquateApprox(1e-9, 0)
	dur := cmp.Comparer(func(a, b time.Duration) bool { return math.Abs(float64(a-b)) <= 1 })
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(summary{}), approx, dur); diff != "" {
		t.Errorf("summarize (-want +got):\n%s", diff)
	}
}

// TestSummarizeWithoutBase: rows whose round has no row without routes
// have no ratio rather than one against nothing.
func TestSummarizeWithoutBase(t *testing.T) {
	got := summarize([]sample{row(1, h2c, byPath, 1000, 20)}, []loadName{h2c})
	if len(got) != 1 || got[0].ratio != 0 || got[0].pooled != 0 || got[0].rounds != 1 {
		t.Errorf("summarize = %+v, want one by-path row without a ratio", got)
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tc := range tests {
		if got := median(tc.xs); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}

func TestShellJoin(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"wrk", "-t1", "http://127.0.1.1:8080/api"}, "wrk -t1 http://127.0.1.1:8080/api"},
		{[]string{"nginx", "-g", "daemon off;"}, "nginx -g 'daemon off;'"},
		{[]string{"iptables", "!", "--uid-owner", "2102"}, "iptables '!' --uid-owner 2102"},
		{[]string{"echo", "it's", ""}, `echo 'it'\''s' ''`},
	}
	for _, tc := range tests {
		if got := shellJoin(tc.args); got != tc.want {
			t.Errorf("shellJoin(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
}
