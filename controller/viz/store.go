package viz

import (
	"encoding/binary"
	"maps"
	"math"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// store keeps what the scrapes saw: a ring of steps, one per scrape round,
// each holding the deltas of the series that did something in it, and per
// pod the raw values of its last scrape, the baseline of the next delta.
//
// Memory is bounded twice: steps older than the retention are dropped, and
// the baselines hold at most maxSeries label sets (a pod's new label sets
// beyond it are not stored, and counted in dropped). A step holds a
// sample only for a series that changed or has connections open, so an
// idle series costs its baseline alone.
//
// Its methods are safe for concurrent use: apply takes mu for writing,
// the visits for reading.
type store struct {
	retention time.Duration
	maxSeries int

	mu      sync.RWMutex
	steps   []step // oldest first, within retention of the newest
	start   time.Time
	pods    map[types.UID]*podState
	nseries int // label sets in pods
	samples int // in steps
	keys    map[seriesKey]*seriesKey
	bounds  map[string]*[]float64 // histogram bounds, interned
	rounds  int                   // since keys was last compacted
}

// step is one scrape round: every sample's deltas end at At.
type step struct {
	At      time.Time
	Samples []sample
}

// podState is a pod's baseline.
type podState struct {
	info podInfo
	// start is the proxy process's start, Unix seconds; a change means it
	// restarted, and its counters with it.
	start float64
	// ok is whether the last scrape succeeded; the series of a pod whose
	// scrape failed are stale, as in Prometheus, and left out of the
	// figures "at the last scrape" until it succeeds again.
	ok     bool
	series map[labels]*counters
}

// scrapeResult is one pod's scrape as apply takes it. series is nil when
// the scrape failed.
type scrapeResult struct {
	pod podInfo
	// start is process_start_time_seconds; 0 when not exported.
	start  float64
	series map[labels]*counters
	err    error
}

func newStore(retention time.Duration, maxSeries int) *store {
	return &store{
		retention: retention,
		maxSeries: maxSeries,
		pods:      map[types.UID]*podState{},
		keys:      map[seriesKey]*seriesKey{},
		bounds:    map[string]*[]float64{},
	}
}

// applyStats says what apply did, for the metrics.
type applyStats struct {
	series  int // label sets held after the round
	samples int // samples held after the round
	dropped int // new label sets not stored for want of room
}

// apply records the round of scrapes at at. live are the UIDs of every
// pod the round meant to scrape: the baselines of other pods are dropped
// (their history stays until it ages out).
func (s *store) apply(at time.Time, results []scrapeResult, live map[types.UID]bool) applyStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.start.IsZero() {
		s.start = at
	}
	for uid, p := range s.pods {
		if !live[uid] {
			s.nseries -= len(p.series)
			delete(s.pods, uid)
		}
	}
	var st applyStats
	cur := step{At: at}
	for i := range results {
		st.dropped += s.applyPod(at, &results[i], &cur)
	}
	s.steps = append(s.steps, cur)
	s.samples += len(cur.Samples)
	s.expire(at)
	if s.rounds++; s.rounds >= len(s.steps) {
		s.compactKeys()
		s.rounds = 0
	}
	st.series, st.samples = s.nseries, s.samples
	return st
}

// applyPod turns one pod's scrape into samples of cur and makes it the
// pod's baseline. It returns how many label sets it had no room for.
func (s *store) applyPod(at time.Time, r *scrapeResult, cur *step) (dropped int) {
	p := s.pods[r.pod.UID]
	if p == nil {
		p = &podState{}
		s.pods[r.pod.UID] = p
	}
	p.info = r.pod
	if r.series == nil {
		p.ok = false
		return 0
	}
	first := p.series == nil
	restarted := !first && r.start != 0 && p.start != 0 && r.start != p.start
	// On a pod's first scrape its counters hold everything since its
	// proxy started. Counted now, it would all land in this step as if it
	// had happened in it, so it only sets the baseline, unless the proxy
	// started after the store did and within the retention: then every
	// count belongs in the store's window, and a new pod's first seconds
	// of traffic are not lost.
	baselineOnly := first && !s.youngProxy(at, r)

	// Room for the pod's label sets: those it had, and what is left.
	known := 0
	for l := range r.series {
		if _, ok := p.series[l]; ok {
			known++
		}
	}
	free := s.maxSeries - (s.nseries - len(p.series)) - known
	next := make(map[labels]*counters, len(r.series))
	for l, now := range r.series {
		old, ok := p.series[l]
		if !ok {
			if free <= 0 {
				dropped++
				continue
			}
			free--
		}
		next[l] = now
		if baselineOnly {
			continue
		}
		if old == nil {
			old = &counters{} // a label set appears with its first count
		}
		smp := newSample(now, old, restarted)
		if smp.empty() {
			continue
		}
		if len(smp.Buckets) > 0 {
			smp.Bounds = s.internBounds(now.Latency.Bounds)
		}
		smp.key = s.intern(seriesKey{
			Namespace: r.pod.Namespace, Pod: r.pod.Name, Workload: r.pod.Workload, ID: r.pod.ID, labels: l,
		})
		cur.Samples = append(cur.Samples, smp)
	}
	s.nseries += len(next) - len(p.series)
	p.series = next
	p.ok = true
	if r.start != 0 {
		p.start = r.start
	}
	return dropped
}

// youngProxy reports whether r's proxy started after the store's first
// round and less than the retention before at.
func (s *store) youngProxy(at time.Time, r *scrapeResult) bool {
	started := r.pod.Started
	if r.start > 0 {
		started = time.Unix(0, int64(r.start*1e9))
	}
	return !started.IsZero() && !started.Before(s.start) && at.Sub(started) < s.retention
}

// expire drops the steps that left the retention by at. Called with mu
// held.
func (s *store) expire(at time.Time) {
	n := 0
	for n < len(s.steps) && !s.steps[n].At.After(at.Add(-s.retention)) {
		n++
	}
	for _, st := range s.steps[:n] {
		s.samples -= len(st.Samples)
	}
	if n > 0 {
		clear(s.steps[:n]) // let the samples go
		s.steps = append(s.steps[:0], s.steps[n:]...)
	}
}

// intern returns the one *seriesKey equal to k. Called with mu held.
func (s *store) intern(k seriesKey) *seriesKey {
	if p, ok := s.keys[k]; ok {
		return p
	}
	p := &k
	s.keys[k] = p
	return p
}

// internBounds returns the one *[]float64 equal to b. Histograms of one
// proxy version share their bounds, so there are few. Called with mu
// held.
func (s *store) internBounds(b []float64) *[]float64 {
	key := make([]byte, 0, 8*len(b))
	for _, f := range b {
		key = binary.LittleEndian.AppendUint64(key, math.Float64bits(f))
	}
	if p, ok := s.bounds[string(key)]; ok {
		return p
	}
	p := &b
	s.bounds[string(key)] = p
	return p
}

// compactKeys forgets the keys and bounds no step refers to any more,
// which pods gone for longer than the retention leave behind. Called with
// mu held, once per turn of the ring, so it costs a pass over the samples
// every retention.
func (s *store) compactKeys() {
	keys := make(map[seriesKey]*seriesKey, len(s.keys))
	used := map[*[]float64]bool{}
	for i := range s.steps {
		for j := range s.steps[i].Samples {
			smp := &s.steps[i].Samples[j]
			keys[*smp.key] = smp.key
			if smp.Bounds != nil {
				used[smp.Bounds] = true
			}
		}
	}
	s.keys = keys
	maps.DeleteFunc(s.bounds, func(_ string, b *[]float64) bool { return !used[b] })
}
