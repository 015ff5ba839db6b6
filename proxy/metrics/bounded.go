package metrics

import (
	"sync/atomic"
)

// The caps that bound the traffic series (docs/metrics.md derives the
// bound on series per proxy from them). Label values are chosen by clients
// (authority, target_addr through port sweeps) or churn with the cluster
// (target_addr and dst_* behind a headless Service, identities, route_*
// as routes come and go), and every label set is a handful of series held
// in memory until it expires.
const (
	// maxLabelValues bounds the distinct values of each capped label in
	// use at once; later values are exported as "other" until a label set
	// holding one expires.
	maxLabelValues = 100
	// maxLabelSets bounds the label sets of each traffic kind (HTTP, TCP)
	// at once; past it, new traffic is counted under its direction's
	// overflow set, every other label "other".
	maxLabelSets = 250
)

// The most series each kind of label set exports.
const (
	// routeSeries: a request counter, a response counter per status
	// class and classification, and the histogram's buckets, +Inf, _sum
	// and _count.
	routeSeries = 1 + len(statusClasses)*len(classifications) + len(latencyBuckets) + 3
	// connSeries: opened, closed, open now, bytes read and written.
	connSeries = 5
	// directions is how many Direction values there are.
	directions = 2
)

// MaxSeries bounds the series of the families this package declares, for
// one proxy, whatever its clients do: each kind's label sets (at most
// maxLabelSets, and one overflow set per direction) times their series,
// plus the small families. docs/metrics.md derives it; the proxy's other
// series (runtime, controller connections) are few and fixed.
const MaxSeries = (maxLabelSets+directions)*(routeSeries+connSeries) +
	directions*unreachedReasons +
	retrySeries +
	maxDetections + directions +
	2*(maxAuthzSets+authzDecisions) +
	2 + // the inbound policy watch
	1 // tap drops

// other is the value of a label a cap folded.
const other = "other"

// valueSet bounds the distinct values of one label: the values some live
// label set holds, each with the number of label sets holding it. The
// empty value (a label that does not apply) and "other" are always
// allowed and not counted. Guarded by Metrics.mu.
type valueSet struct {
	refs map[string]int
}

func newValueSet() *valueSet { return &valueSet{refs: map[string]int{}} }

// exported returns the value v is exported as: itself if a label set holds
// it or there is room for it, else "other". It changes nothing, so a read
// lock is enough.
func (s *valueSet) exported(v string) string {
	if v == "" || v == other {
		return v
	}
	if _, ok := s.refs[v]; ok || len(s.refs) < maxLabelValues {
		return v
	}
	return other
}

// hold notes one more label set holding v.
func (s *valueSet) hold(v string) {
	if v != "" && v != other {
		s.refs[v]++
	}
}

// release notes one label set fewer holding v; the last frees its slot.
func (s *valueSet) release(v string) {
	if n := s.refs[v]; n > 1 {
		s.refs[v] = n - 1
	} else {
		delete(s.refs, v)
	}
}

// labelKey is the values of a label set in the families' label order;
// positions past a kind's labels are empty. Comparable, so a lookup costs
// a hash and no allocation.
type labelKey [12]string

// activity is what expiry reads of a label set.
type activity struct {
	// lastUsed is when the label set was last looked up or last finished
	// a request or connection, in the clock's unix nanoseconds.
	lastUsed atomic.Int64
	// busy counts requests in flight and connections open under the
	// label set: it never expires while they would count into it.
	busy atomic.Int64
}

func (a *activity) state() *activity { return a }

// entry is a label set's series.
type entry interface{ state() *activity }

// group is the label sets of one kind of traffic (HTTP or TCP), shared by
// its families. Its maps are guarded by Metrics.mu; an entry's series are
// updated outside the lock.
type group[E entry] struct {
	// values caps each label position; nil for direction, which the proxy
	// sets, not the client.
	values []*valueSet
	sets   map[labelKey]E
	// regular counts the sets other than the per-direction overflow sets.
	regular int
	// create makes the series of a new label set; remove deletes them
	// from their vectors. Both are called with Metrics.mu held.
	create func(labels []string) E
	remove func(e E, labels []string)
}

func newGroup[E entry](values []*valueSet, create func([]string) E, remove func(E, []string)) *group[E] {
	return &group[E]{values: values, sets: map[labelKey]E{}, create: create, remove: remove}
}

// capped returns the label set raw is exported as, and whether a label was
// folded into "other" for want of room.
func (g *group[E]) capped(raw labelKey) (labelKey, bool) {
	key, folded := raw, false
	for i, vs := range g.values {
		if vs == nil {
			continue
		}
		if key[i] = vs.exported(raw[i]); key[i] != raw[i] {
			folded = true
		}
	}
	return key, folded
}

// overflow is the label set of direction dir's traffic past maxLabelSets.
func (g *group[E]) overflow(dir string) labelKey {
	var key labelKey
	key[0] = dir
	for i := 1; i < len(g.values); i++ {
		key[i] = other
	}
	return key
}

// get returns the series raw is counted under, creating them if need be,
// and marks them used at now. hold adds one to their busy count before
// the lock is released, so that no sweep can expire them in between.
func (g *group[E]) get(m *Metrics, raw labelKey, now int64, hold bool) E {
	m.mu.RLock()
	e, ok := g.sets[raw]
	if !ok {
		key, _ := g.capped(raw)
		if e, ok = g.sets[key]; !ok && g.regular >= maxLabelSets {
			e, ok = g.sets[g.overflow(raw[0])]
		}
	}
	if ok {
		use(e, now, hold)
		m.mu.RUnlock()
		return e
	}
	m.mu.RUnlock()

	m.mu.Lock()
	defer m.mu.Unlock()
	e = g.admit(m, raw, now)
	use(e, now, hold)
	return e
}

func use(e entry, now int64, hold bool) {
	a := e.state()
	a.lastUsed.Store(now)
	if hold {
		a.busy.Add(1)
	}
}

// admit finds or creates the series of raw. Called with Metrics.mu held.
func (g *group[E]) admit(m *Metrics, raw labelKey, now int64) E {
	key, folded := g.capped(raw)
	if e, ok := g.sets[key]; ok {
		return e
	}
	if (folded || g.regular >= maxLabelSets) && m.sweepLocked(now, false) {
		// Label sets idle long enough may have freed room.
		key, _ = g.capped(raw)
		if e, ok := g.sets[key]; ok {
			return e
		}
	}
	overflow := g.overflow(raw[0])
	if g.regular >= maxLabelSets {
		key = overflow
		if e, ok := g.sets[key]; ok {
			return e
		}
	}
	if key != overflow {
		g.regular++
		for i, vs := range g.values {
			if vs != nil {
				vs.hold(key[i])
			}
		}
	}
	e := g.create(key[:len(g.values)])
	g.sets[key] = e
	return e
}

// sweep deletes the label sets unused since before deadline with nothing
// in flight, and frees their label values. Called with Metrics.mu held.
func (g *group[E]) sweep(deadline int64) {
	for key, e := range g.sets {
		a := e.state()
		if a.busy.Load() > 0 || a.lastUsed.Load() > deadline {
			continue
		}
		delete(g.sets, key)
		if key != g.overflow(key[0]) {
			g.regular--
			for i, vs := range g.values {
				if vs != nil {
					vs.release(key[i])
				}
			}
		}
		g.remove(e, key[:len(g.values)])
	}
}
