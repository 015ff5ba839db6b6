package loadgen

import (
	"math"
	"time"
)

// histogram counts latencies in logarithmic buckets, each 10% wider than
// the one before, so quantiles are exact to within 10% in constant memory
// however long loadgen runs. The zero value is empty and ready; not safe
// for concurrent use.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
}

const (
	histMin     = 10 * time.Microsecond // bucket 0 holds everything up to this
	histGrowth  = 1.1
	histBuckets = 200 // the last one, from about 30 minutes up, is open-ended
)

func (h *histogram) add(d time.Duration) {
	i := 0
	if d > histMin {
		i = int(math.Ceil(math.Log(float64(d)/float64(histMin)) / math.Log(histGrowth)))
	}
	h.counts[min(i, histBuckets-1)]++
	h.n++
}

// quantile returns the upper bound of the bucket holding the q-quantile
// (0 < q <= 1), or 0 for an empty histogram.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= max(rank, 1) {
			return time.Duration(float64(histMin) * math.Pow(histGrowth, float64(i)))
		}
	}
	return time.Duration(math.MaxInt64)
}

// short rounds d to about three significant digits for the summary lines.
func short(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
