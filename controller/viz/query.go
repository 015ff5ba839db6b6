package viz

import (
	"slices"
	"time"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// accum sums the samples of a row over a window.
type accum struct {
	requests, successes   uint64
	buckets               map[float64]uint64 // observations per bucket, by upper bound
	bounds                []*[]float64       // of the histograms summed, distinct
	readBytes, writeBytes uint64
	// conns is the open-connections gauge at the window's last step.
	conns uint64
	// total is the raw responses counter at the last scrape.
	total float64
	// denied is the requests and connections refused by policy.
	denied uint64
}

// add counts smp; last says smp is of the window's last step.
func (a *accum) add(smp *sample, last bool) {
	a.requests += uint64(smp.Responses)
	a.successes += uint64(smp.Successes)
	a.readBytes += smp.ReadBytes
	a.writeBytes += smp.WriteBytes
	a.denied += uint64(smp.Denied)
	if last {
		a.conns += uint64(smp.OpenConns)
	}
	if len(smp.Buckets) > 0 && a.buckets == nil {
		a.buckets = map[float64]uint64{}
	}
	for _, b := range smp.Buckets {
		a.buckets[b.LE] += uint64(b.N)
	}
	if smp.Bounds != nil && !slices.Contains(a.bounds, smp.Bounds) {
		a.bounds = append(a.bounds, smp.Bounds)
	}
}

// stats returns the figures of a over secs seconds.
func (a *accum) stats(secs float64) vizv1.Stats {
	s := vizv1.Stats{
		Requests:       a.requests,
		Successes:      a.successes,
		TCPConnections: a.conns,
		TotalRequests:  uint64(a.total),
	}
	if secs > 0 {
		s.RPS = float64(a.requests) / secs
		s.ReadBytesPerSec = float64(a.readBytes) / secs
		s.WriteBytesPerSec = float64(a.writeBytes) / secs
	}
	if a.requests > 0 {
		rate := float64(a.successes) / float64(a.requests)
		s.SuccessRate = &rate
	}
	if len(a.buckets) > 0 {
		// Empty buckets give the others their lower bounds.
		for _, b := range a.bounds {
			for _, le := range *b {
				a.buckets[le] += 0
			}
		}
		h := cumulate(a.buckets)
		s.LatencyP50 = latencyMs(0.5, h)
		s.LatencyP95 = latencyMs(0.95, h)
		s.LatencyP99 = latencyMs(0.99, h)
	}
	return s
}

// inboundStats is stats with the denials, for figures that are the
// inbound traffic of a row's own pods (see vizv1.Stats.Denied).
func (a *accum) inboundStats(secs float64) vizv1.Stats {
	s := a.stats(secs)
	denied := a.denied
	s.Denied = &denied
	rate := 0.0
	if secs > 0 {
		rate = float64(a.denied) / secs
	}
	s.DeniedPerSec = &rate
	return s
}

func latencyMs(q float64, h []cumBucket) *float64 {
	v, ok := quantile(q, h)
	if !ok {
		return nil
	}
	ms := v * 1000
	return &ms
}

// window is what a query covers: the steps (From, To], To being the
// newest scrape round, and how many seconds of traffic they hold.
type window struct {
	From, To time.Time
	Secs     float64
}

// windowLocked returns the window of length d ending at the newest round;
// the zero window when there is none yet. A round belongs to the window
// when it is within d of the newest less half an interval, so rounds
// that run a little late or early do not fall in or out of it. Called
// with mu held.
func (s *store) windowLocked(d, interval time.Duration) window {
	if len(s.steps) == 0 {
		return window{}
	}
	to := s.steps[len(s.steps)-1].At
	w := window{From: to.Add(-d + interval/2), To: to}
	// The first round sets the baselines: data covers the time since.
	covered := min(d, to.Sub(s.start))
	if covered < interval {
		covered = interval
	}
	w.Secs = covered.Seconds()
	return w
}

// rowFunc maps a series to the row it counts in, or to -1.
type rowFunc func(k *seriesKey) int

// sum adds up, per row, the samples of the rounds within d of the newest
// and the responses counters of the last scrape of every pod whose last
// scrape succeeded.
func (s *store) sum(d, interval time.Duration, rows []accum, row rowFunc) window {
	return s.sumInto(d, interval, func(k *seriesKey) *accum {
		if r := row(k); r >= 0 {
			return &rows[r]
		}
		return nil
	})
}

// sumInto is sum into the accum acc returns for a series, nil for none.
// acc is called with the store's read lock held, from one goroutine, and
// must not keep k.
func (s *store) sumInto(d, interval time.Duration, acc func(k *seriesKey) *accum) window {
	s.mu.RLock()
	defer s.mu.RUnlock()
	w := s.windowLocked(d, interval)
	s.visitLocked(w, func(smp *sample, last bool) {
		if a := acc(smp.key); a != nil {
			a.add(smp, last)
		}
	})
	s.latestLocked(func(k *seriesKey, c *counters) {
		if a := acc(k); a != nil {
			a.total += c.Responses
		}
	})
	return w
}

// visitLocked calls fn with every sample of the rounds in w, oldest first;
// last is true for the samples of w's last round. Called with mu held.
func (s *store) visitLocked(w window, fn func(smp *sample, last bool)) {
	for i := len(s.steps) - 1; i >= 0 && s.steps[i].At.After(w.From); i-- {
		st := &s.steps[i]
		last := st.At.Equal(w.To)
		for j := range st.Samples {
			fn(&st.Samples[j], last)
		}
	}
}

// latestLocked calls fn with every label set of the last scrape of every
// pod whose last scrape succeeded. k is valid during the call only.
// Called with mu held.
func (s *store) latestLocked(fn func(k *seriesKey, c *counters)) {
	for _, p := range s.pods {
		if !p.ok {
			continue
		}
		k := seriesKey{Namespace: p.info.Namespace, Pod: p.info.Name, Workload: p.info.Workload, ID: p.info.ID}
		for l, c := range p.series {
			k.labels = l
			fn(&k, c)
		}
	}
}

// point is one step of a series.
type point struct {
	End  time.Time
	Secs float64
	acc  accum
}

// series returns the points of the series that match over the last d,
// one per step, oldest first, from the first that holds data. A round
// belongs to the point whose end it is at or before, within half an
// interval. The last point also carries the responses counters of the
// last scrape.
func (s *store) series(d, step, interval time.Duration, match func(*seriesKey) bool) []point {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.steps) == 0 {
		return nil
	}
	to := s.steps[len(s.steps)-1].At
	n := max(int(d/step), 1)
	points := make([]point, n)
	for j := range points {
		end := to.Add(-time.Duration(n-1-j) * step)
		covered := min(step, end.Sub(s.start))
		if j == n-1 && covered < interval {
			covered = interval
		}
		points[j] = point{End: end, Secs: covered.Seconds()}
	}
	// The last round of each point holds its gauges.
	lastRound := make([]time.Time, n)
	bin := func(at time.Time) int { return n - 1 - int((to.Sub(at)+interval/2)/step) }
	for i := range s.steps {
		if j := bin(s.steps[i].At); j >= 0 && j < n {
			lastRound[j] = s.steps[i].At
		}
	}
	for i := range s.steps {
		st := &s.steps[i]
		j := bin(st.At)
		if j < 0 || j >= n {
			continue
		}
		last := st.At.Equal(lastRound[j])
		for k := range st.Samples {
			if smp := &st.Samples[k]; match(smp.key) {
				points[j].acc.add(smp, last)
			}
		}
	}
	s.latestLocked(func(k *seriesKey, c *counters) {
		if match(k) {
			points[n-1].acc.total += c.Responses
		}
	})
	first := 0
	for first < n && points[first].Secs <= 0 {
		first++
	}
	return points[first:]
}
