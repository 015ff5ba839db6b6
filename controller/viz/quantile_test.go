package viz

import (
	"math"
	"testing"
)

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name    string
		q       float64
		buckets []cumBucket
		want    float64
		wantOK  bool
	}{
		{
			name: "interpolated inside a bucket", q: 0.5,
			buckets: []cumBucket{{0.01, 0}, {0.02, 10}, {inf, 10}},
			want:    0.015, wantOK: true,
		},
		{
			name: "lowest bucket starts at zero", q: 0.5,
			buckets: []cumBucket{{0.001, 10}, {0.0025, 10}, {inf, 10}},
			want:    0.0005, wantOK: true,
		},
		{
			name: "rank past the buckets before", q: 0.99,
			buckets: []cumBucket{{0.01, 50}, {0.02, 90}, {0.05, 100}, {inf, 100}},
			want:    0.047, wantOK: true,
		},
		{
			name: "+Inf bucket gives its lower bound", q: 0.5,
			buckets: []cumBucket{{0.1, 0}, {inf, 10}},
			want:    0.1, wantOK: true,
		},
		{
			name: "rank on a bucket's upper edge", q: 0.5,
			buckets: []cumBucket{{0.01, 5}, {0.02, 10}, {inf, 10}},
			want:    0.01, wantOK: true,
		},
		{
			name: "q=0 below every observation", q: 0,
			buckets: []cumBucket{{0.01, 0}, {0.02, 10}, {inf, 10}},
			want:    0, wantOK: true,
		},
		{
			name: "no observation", q: 0.5,
			buckets: []cumBucket{{0.01, 0}, {inf, 0}},
		},
		{
			name: "only +Inf", q: 0.5,
			buckets: []cumBucket{{inf, 10}},
		},
		{
			name: "no +Inf", q: 0.5,
			buckets: []cumBucket{{0.01, 1}, {0.02, 2}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := quantile(tc.q, tc.buckets)
			if ok != tc.wantOK || math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("quantile(%v) = %v, %v; want %v, %v", tc.q, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// TestCumulateMerges checks that histograms with different bounds merge
// into the union of their bounds, as Prometheus' sum by (le) does.
func TestCumulateMerges(t *testing.T) {
	h := cumulate(map[float64]uint64{0.1: 5, 0.2: 5})
	want := []cumBucket{{0.1, 5}, {0.2, 10}, {math.Inf(1), 10}}
	if len(h) != len(want) {
		t.Fatalf("cumulate = %v, want %v", h, want)
	}
	for i := range want {
		if h[i] != want[i] {
			t.Fatalf("cumulate = %v, want %v", h, want)
		}
	}
	if got, _ := quantile(0.75, h); math.Abs(got-0.15) > 1e-12 {
		t.Errorf("p75 = %v, want 0.15", got)
	}
}

func TestHistogramDelta(t *testing.T) {
	bounds := []float64{0.01, 0.1, math.Inf(1)}
	old := histogram{Bounds: bounds, Counts: []float64{1, 3, 4}}
	tests := []struct {
		name  string
		now   histogram
		reset bool
		want  []bucketCount
	}{
		{name: "growth", now: histogram{Bounds: bounds, Counts: []float64{2, 6, 8}}, want: []bucketCount{{0.01, 1}, {0.1, 2}, {math.Inf(1), 1}}},
		{name: "nothing new", now: old},
		{name: "a bucket went down: reset", now: histogram{Bounds: bounds, Counts: []float64{0, 2, 2}}, want: []bucketCount{{0.1, 2}}},
		{name: "process restarted", now: histogram{Bounds: bounds, Counts: []float64{5, 5, 5}}, reset: true, want: []bucketCount{{0.01, 5}}},
		{name: "other buckets: reset", now: histogram{Bounds: []float64{0.05, math.Inf(1)}, Counts: []float64{3, 3}}, want: []bucketCount{{0.05, 3}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.now.delta(old, tc.reset)
			if len(got) != len(tc.want) {
				t.Fatalf("delta = %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("delta = %v, want %v", got, tc.want)
				}
			}
		})
	}
}
