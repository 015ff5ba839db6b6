package viz

import (
	"math"
	"slices"
)

// cumBucket is one bucket of a cumulative histogram: Count observations
// at most LE.
type cumBucket struct {
	LE    float64
	Count float64
}

// cumulate turns per-bucket counts, by upper bound, into a cumulative
// histogram sorted by bound and ending with +Inf. Histograms with
// different bounds merge into the union of their bounds, each
// observation staying under the bound it was counted under, as
// Prometheus' sum by (le) does.
func cumulate(perBucket map[float64]uint64) []cumBucket {
	out := make([]cumBucket, 0, len(perBucket)+1)
	for le, n := range perBucket {
		out = append(out, cumBucket{LE: le, Count: float64(n)})
	}
	slices.SortFunc(out, func(a, b cumBucket) int { return cmpFloat(a.LE, b.LE) })
	if len(out) == 0 || !math.IsInf(out[len(out)-1].LE, 1) {
		out = append(out, cumBucket{LE: math.Inf(1)})
	}
	for i := 1; i < len(out); i++ {
		out[i].Count += out[i-1].Count
	}
	return out
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// quantile returns the q-quantile (0 <= q <= 1) of the observations of a
// cumulative histogram sorted by bound and ending with +Inf, the way
// Prometheus' histogram_quantile does: it finds the bucket holding the
// rank q×count and interpolates linearly between the bucket's bounds, the
// lowest bucket's lower bound being 0. A rank in the +Inf bucket gives
// the highest finite bound, the most that is known. It returns false when
// the histogram holds no observation, or no finite bucket.
func quantile(q float64, buckets []cumBucket) (float64, bool) {
	n := len(buckets)
	if n < 2 || !math.IsInf(buckets[n-1].LE, 1) || math.IsNaN(q) {
		return 0, false
	}
	total := buckets[n-1].Count
	if total == 0 {
		return 0, false
	}
	q = min(max(q, 0), 1)
	rank := q * total
	b, _ := slices.BinarySearchFunc(buckets, rank, func(c cumBucket, r float64) int { return cmpFloat(c.Count, r) })
	switch {
	case b >= n-1:
		return buckets[n-2].LE, true
	case b == 0 && buckets[0].LE <= 0:
		return buckets[0].LE, true
	}
	lower, upper := 0.0, buckets[b].LE
	count := buckets[b].Count
	if b > 0 {
		lower = buckets[b-1].LE
		count -= buckets[b-1].Count
		rank -= buckets[b-1].Count
	}
	if count <= 0 { // q = 0, below every observation
		return lower, true
	}
	return lower + (upper-lower)*(rank/count), true
}
