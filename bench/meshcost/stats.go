package main

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// latencies sums up the requests of one measured window.
type latencies struct {
	requests, failed int
	// p50 ... max are of the latency from each request's due time to the
	// end of its answer, failed requests included (at the time they
	// failed).
	p50, p99, p999, max time.Duration
	// waited counts the requests due while every connection was busy.
	waited int
	// lateP99 is the 99th percentile of how late the generator wrote the
	// requests that had a free connection when they were due: its own
	// lateness, near zero when the machine let it keep its schedule.
	lateP99 time.Duration
}

// inWindow returns the samples due in [from, to), offsets from the
// schedule's start; samples are in the order they were due.
func inWindow(samples []sample, from, to time.Duration) []sample {
	byDue := func(s sample, t time.Duration) int { return cmp.Compare(s.due, t) }
	i, _ := slices.BinarySearchFunc(samples, from, byDue)
	j, _ := slices.BinarySearchFunc(samples, to, byDue)
	return samples[i:j]
}

// summarize returns the latencies of samples.
func summarize(samples []sample) latencies {
	out := latencies{requests: len(samples)}
	if len(samples) == 0 {
		return out
	}
	lat := make([]time.Duration, len(samples))
	var late []time.Duration
	for i, s := range samples {
		lat[i] = s.latency()
		if !s.ok {
			out.failed++
		}
		if s.waited {
			out.waited++
		} else {
			late = append(late, s.late())
		}
	}
	slices.Sort(lat)
	out.p50, out.p99, out.p999, out.max = rank(lat, 50), rank(lat, 99), rank(lat, 99.9), lat[len(lat)-1]
	if len(late) > 0 {
		slices.Sort(late)
		out.lateP99 = rank(late, 99)
	}
	return out
}

// rank returns the nearest-rank p-th percentile of sorted, which is not
// empty.
func rank(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
