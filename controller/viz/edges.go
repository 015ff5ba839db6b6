package viz

import (
	"cmp"
	"net/http"
	"slices"
	"time"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// edgeKey is a pair of workloads that talk.
type edgeKey struct {
	Src, Dst vizv1.Resource
}

// edgeAcc sums an edge's samples. plain and tls weigh its activity
// (responses, connections opened, closed and open) by whether the
// server proved an identity.
type edgeAcc struct {
	accum
	srcIDs, dstIDs map[string]uint64
	plain, tls     uint64
}

// edgeOf returns the edge of outbound series k: from the scraped pod's
// workload to dst_workload. Destinations the mesh does not know (no
// dst_workload) make no edge.
func edgeOf(k *seriesKey) (edgeKey, bool) {
	if k.Direction != outbound || k.DstNamespace == "" {
		return edgeKey{}, false
	}
	dst, ok := splitWorkload(k.DstWorkload)
	if !ok {
		return edgeKey{}, false
	}
	return edgeKey{
		Src: vizv1.Resource{Kind: k.Workload.Kind, Namespace: k.Namespace, Name: k.Workload.Name},
		Dst: vizv1.Resource{Kind: dst.Kind, Namespace: k.DstNamespace, Name: dst.Name},
	}, true
}

// edges returns the edges with traffic in the window d, or connections
// open at its end, whose source or destination is in ns ("": all).
func (s *store) edges(ns string, d, interval time.Duration) ([]vizv1.Edge, window) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	w := s.windowLocked(d, interval)
	accs := map[edgeKey]*edgeAcc{}
	s.visitLocked(w, func(smp *sample, last bool) {
		k, ok := edgeOf(smp.key)
		if !ok || ns != "" && k.Src.Namespace != ns && k.Dst.Namespace != ns {
			return
		}
		a := accs[k]
		if a == nil {
			a = &edgeAcc{srcIDs: map[string]uint64{}, dstIDs: map[string]uint64{}}
			accs[k] = a
		}
		a.add(smp, last)
		weight := uint64(smp.Responses) + uint64(smp.TCPOpen) + uint64(smp.TCPClose)
		if last {
			weight += uint64(smp.OpenConns)
		}
		if weight == 0 {
			return // bytes of connections that closed: counted with their close
		}
		a.srcIDs[smp.key.ID] += weight
		if smp.key.ServerID == "" {
			a.plain += weight
		} else {
			a.tls += weight
			a.dstIDs[smp.key.ServerID] += weight
		}
	})
	s.latestLocked(func(k *seriesKey, c *counters) {
		if e, ok := edgeOf(k); ok && accs[e] != nil {
			accs[e].total += c.Responses
		}
	})
	edges := make([]vizv1.Edge, 0, len(accs))
	for k, a := range accs {
		if a.plain+a.tls == 0 && a.requests == 0 {
			continue
		}
		edges = append(edges, vizv1.Edge{
			Src: k.Src, Dst: k.Dst,
			SrcID: mostWeighed(a.srcIDs), DstID: mostWeighed(a.dstIDs),
			MTLS:  a.plain == 0 && a.tls > 0,
			Stats: a.stats(w.Secs),
		})
	}
	slices.SortFunc(edges, func(a, b vizv1.Edge) int {
		return cmp.Or(compareResource(a.Src, b.Src), compareResource(a.Dst, b.Dst))
	})
	return edges, w
}

func compareResource(a, b vizv1.Resource) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind))
}

// mostWeighed returns the key of m with the largest weight, the smallest
// key among equals; "" for an empty m. An edge's pods normally share one
// identity, which this returns; during a change of ServiceAccount it
// returns the one that carried most of the traffic.
func mostWeighed(m map[string]uint64) string {
	best, bestW := "", uint64(0)
	for k, w := range m {
		if w > bestW || w == bestW && k < best {
			best, bestW = k, w
		}
	}
	return best
}

func (v *Viz) serveEdges(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "namespace", "window")
	if err != nil {
		return err
	}
	ns, err := namespaceParam(q)
	if err != nil {
		return err
	}
	d, err := duration(q, "window", defaultStatWindow, v.cfg.Interval, v.cfg.Retention)
	if err != nil {
		return err
	}
	edges, win := v.store.edges(ns, d, v.cfg.Interval)
	writeJSON(w, http.StatusOK, vizv1.EdgeList{
		Window: cmp.Or(q.Get("window"), formatDuration(defaultStatWindow)), Collected: win.To, Edges: edges,
	})
	return nil
}
