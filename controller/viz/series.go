package viz

import (
	"math"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/mesh-dev/mesh/internal/workload"
)

// podInfo is what the controller knows of a pod it scrapes, from its pod
// cache: the proxies do not label their series with their own pod.
type podInfo struct {
	UID       types.UID
	Namespace string
	Name      string
	Workload  workload.Ref
	// ID is the pod's SPIFFE ID, spiffe://<td>/ns/<ns>/sa/<sa>.
	ID string
	// IP is the address its proxy's admin and tap servers listen on.
	IP string
	// Started is when the mesh-proxy container (else the pod) started; the
	// zero time when unknown. The scrape's process_start_time_seconds wins
	// over it.
	Started time.Time
}

// labels is one label set of a proxy's HTTP or TCP series
// (docs/metrics.md), without status_class and classification, which the
// store folds into its response counts. TCP series leave Authority,
// DstService and the route labels empty.
type labels struct {
	Direction    string
	Authority    string
	TargetAddr   string
	DstNamespace string
	DstWorkload  string
	DstService   string
	ClientID     string
	ServerID     string
	// The route rule an outbound request matched: route_kind,
	// route_namespace, route_name and route_rule.
	RouteKind      string
	RouteNamespace string
	RouteName      string
	RouteRule      string
}

// Values of labels.Direction.
const (
	inbound  = "inbound"
	outbound = "outbound"
)

// decisionDeny is the decision label of a refused request or connection.
const decisionDeny = "deny"

// authzLabels is the label set of a pod's denials: inbound, and nothing
// else. Every traffic series carries a target_addr, so none shares it;
// were one to, their counts would still add up, as they are distinct
// counters (as an HTTP label set without authority shares its
// connections' TCP one).
var authzLabels = labels{Direction: inbound}

// seriesKey names one label set of one pod: the unit the store keeps.
// Keys are interned with unique.Make, so samples refer to them with one
// pointer and every copy of a label value is shared.
type seriesKey struct {
	Namespace string // the scraped pod's
	Pod       string
	Workload  workload.Ref
	ID        string // the scraped pod's SPIFFE ID
	labels
}

// counters are the raw values of one label set at one scrape, summed over
// the series the label set spans (status classes, classifications).
type counters struct {
	Responses  float64
	Successes  float64
	Latency    histogram
	TCPOpen    float64
	TCPClose   float64
	ReadBytes  float64
	WriteBytes float64
	// OpenConns is the mesh_proxy_tcp_open_connections gauge.
	OpenConns float64
	// Denied is the inbound requests and connections refused by
	// authorization policy (decision="deny").
	Denied float64
}

// histogram is a cumulative Prometheus histogram: Bounds ascending, the
// last one +Inf; Counts[i] observations at most Bounds[i].
type histogram struct {
	Bounds []float64
	Counts []float64
}

// delta returns the per-bucket (not cumulative) observations h saw since
// old, the nonzero ones only. When the buckets changed or a count went
// down the histogram was reset and all of h counts.
func (h histogram) delta(old histogram, reset bool) []bucketCount {
	if !reset && !slices.Equal(h.Bounds, old.Bounds) {
		reset = true
	}
	if !reset {
		for i := range h.Counts {
			if h.Counts[i] < old.Counts[i] {
				reset = true
				break
			}
		}
	}
	var out []bucketCount
	prev := 0.0
	for i, c := range h.Counts {
		if !reset {
			c -= old.Counts[i]
		}
		if n := c - prev; n > 0 {
			out = append(out, bucketCount{LE: h.Bounds[i], N: clamp32(n)})
		}
		prev = c
	}
	return out
}

// counterDelta is how much a counter grew from old to now: all of now
// when the counter was reset (it went down, or its process restarted).
func counterDelta(now, old float64, reset bool) float64 {
	if reset || now < old {
		return now
	}
	return now - old
}

// sample is what one label set of one pod did in one step: counter deltas
// since the previous scrape, and the gauge at this scrape. Deltas of a
// step fit 32 bits (4e9 responses in a scrape interval); larger ones are
// clamped.
type sample struct {
	key        *seriesKey
	Responses  uint32
	Successes  uint32
	TCPOpen    uint32
	TCPClose   uint32
	OpenConns  uint32
	Denied     uint32 // in the padding before ReadBytes: no extra byte
	ReadBytes  uint64
	WriteBytes uint64
	// Buckets are the latency observations of the step, per bucket (not
	// cumulative), the nonzero ones only; Bounds are all the bounds of
	// the histogram, which give each bucket its lower bound.
	Buckets []bucketCount
	Bounds  *[]float64
}

// bucketCount is how many observations fell in the bucket whose upper
// bound is LE (seconds), above the next lower bound of its histogram.
type bucketCount struct {
	LE float64
	N  uint32
}

// empty reports whether s holds nothing worth keeping.
func (s *sample) empty() bool {
	return s.Responses == 0 && s.TCPOpen == 0 && s.TCPClose == 0 && s.OpenConns == 0 && s.Denied == 0 &&
		s.ReadBytes == 0 && s.WriteBytes == 0 && len(s.Buckets) == 0
}

// newSample returns the deltas from old to now, old being zero on a
// series' first scrape.
// The caller sets key, and Bounds when there are Buckets.
func newSample(now, old *counters, reset bool) sample {
	return sample{
		Responses:  clamp32(counterDelta(now.Responses, old.Responses, reset)),
		Successes:  clamp32(counterDelta(now.Successes, old.Successes, reset)),
		TCPOpen:    clamp32(counterDelta(now.TCPOpen, old.TCPOpen, reset)),
		TCPClose:   clamp32(counterDelta(now.TCPClose, old.TCPClose, reset)),
		OpenConns:  clamp32(now.OpenConns),
		Denied:     clamp32(counterDelta(now.Denied, old.Denied, reset)),
		ReadBytes:  clamp64(counterDelta(now.ReadBytes, old.ReadBytes, reset)),
		WriteBytes: clamp64(counterDelta(now.WriteBytes, old.WriteBytes, reset)),
		Buckets:    now.Latency.delta(old.Latency, reset),
	}
}

func clamp32(f float64) uint32 {
	switch {
	case !(f > 0): // and NaN
		return 0
	case f >= math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(f)
}

func clamp64(f float64) uint64 {
	switch {
	case !(f > 0):
		return 0
	case f >= math.MaxUint64:
		return math.MaxUint64
	}
	return uint64(f)
}
