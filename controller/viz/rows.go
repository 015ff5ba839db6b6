package viz

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/internal/workload"
)

// rowKey names a row the way series are matched to it: workloads by
// namespace, kind and name; pods and services likewise; namespaces with
// an empty namespace.
type rowKey struct {
	Namespace, Kind, Name string
}

// row is one resource of an answer, with its pods as the cache has them
// now (done pods left out).
type row struct {
	key  rowKey
	pods []*corev1.Pod
}

func (r row) resource() vizv1.Resource {
	return vizv1.Resource{Kind: r.key.Kind, Namespace: r.key.Namespace, Name: r.key.Name}
}

// rows returns the resources of kind in ns ("": every namespace), the
// one called name if name is not "", sorted by namespace and name. Every
// resource the cache knows is a row, with traffic or not; a workload is
// known by its pods, so a Deployment scaled to zero has no row.
func (v *Viz) rows(kind, ns, name string) ([]row, error) {
	var (
		rows []row
		err  error
	)
	switch {
	case kind == kindNamespace:
		rows, err = v.namespaceRows(ns)
	case kind == kindService:
		rows, err = v.serviceRows(ns)
	default:
		rows, err = v.podRows(kind, ns)
	}
	if err != nil {
		return nil, err
	}
	if name != "" {
		rows = slices.DeleteFunc(rows, func(r row) bool { return r.key.Name != name })
	}
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(cmp.Compare(a.key.Namespace, b.key.Namespace), cmp.Compare(a.key.Name, b.key.Name))
	})
	return rows, nil
}

// listPods returns the pods of ns ("": all) that count (not done).
func (v *Viz) listPods(ns string, sel k8slabels.Selector) ([]*corev1.Pod, error) {
	var (
		pods []*corev1.Pod
		err  error
	)
	if ns == "" {
		pods, err = v.pods.List(sel)
	} else {
		pods, err = v.pods.Pods(ns).List(sel)
	}
	return slices.DeleteFunc(pods, func(p *corev1.Pod) bool { return !counted(p) }), err
}

// podRows groups the pods of ns into rows of kind: one per pod, or one
// per workload of that kind.
func (v *Viz) podRows(kind, ns string) ([]row, error) {
	pods, err := v.listPods(ns, everything)
	if err != nil {
		return nil, err
	}
	index := map[rowKey]int{}
	var rows []row
	for _, p := range pods {
		k := rowKey{Namespace: p.Namespace, Kind: kindPod, Name: p.Name}
		if kind != kindPod {
			w := workload.Of(p)
			if w.Kind != kind {
				continue
			}
			k.Kind, k.Name = w.Kind, w.Name
		}
		i, ok := index[k]
		if !ok {
			i = len(rows)
			index[k] = i
			rows = append(rows, row{key: k})
		}
		rows[i].pods = append(rows[i].pods, p)
	}
	return rows, nil
}

// serviceRows returns a row per Service of ns, with the pods its selector
// picks: the pods behind its endpoints. A Service without a selector has
// none the controller can tell.
func (v *Viz) serviceRows(ns string) ([]row, error) {
	var (
		svcs []*corev1.Service
		err  error
	)
	if ns == "" {
		svcs, err = v.services.List(everything)
	} else {
		svcs, err = v.services.Services(ns).List(everything)
	}
	if err != nil {
		return nil, err
	}
	rows := make([]row, 0, len(svcs))
	for _, s := range svcs {
		r := row{key: rowKey{Namespace: s.Namespace, Kind: kindService, Name: s.Name}}
		if len(s.Spec.Selector) > 0 {
			if r.pods, err = v.listPods(s.Namespace, k8slabels.SelectorFromSet(s.Spec.Selector)); err != nil {
				return nil, err
			}
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// namespaceRows returns a row per namespace (only ns unless ns is ""),
// with its pods.
func (v *Viz) namespaceRows(ns string) ([]row, error) {
	nss, err := v.namespaces.List(everything)
	if err != nil {
		return nil, err
	}
	pods, err := v.listPods(ns, everything)
	if err != nil {
		return nil, err
	}
	index := map[string]int{}
	var rows []row
	for _, n := range nss {
		if ns != "" && n.Name != ns {
			continue
		}
		index[n.Name] = len(rows)
		rows = append(rows, row{key: rowKey{Kind: kindNamespace, Name: n.Name}})
	}
	for _, p := range pods {
		if i, ok := index[p.Namespace]; ok {
			rows[i].pods = append(rows[i].pods, p)
		}
	}
	return rows, nil
}

// statRow returns r's row of a StatList, without stats.
func (v *Viz) statRow(r row) vizv1.StatRow {
	out := vizv1.StatRow{Resource: r.resource(), TotalPods: len(r.pods), Identities: v.identities(r.pods)}
	for _, p := range r.pods {
		if meshed(p) {
			out.MeshedPods++
		}
	}
	return out
}

// srcKey returns the row of kind the scraped pod of k is in.
func srcKey(kind string, k *seriesKey) (rowKey, bool) {
	switch {
	case kind == kindPod:
		return rowKey{Namespace: k.Namespace, Kind: kindPod, Name: k.Pod}, true
	case kind == kindNamespace:
		return rowKey{Kind: kindNamespace, Name: k.Namespace}, true
	case k.Workload.Kind == kind:
		return rowKey{Namespace: k.Namespace, Kind: kind, Name: k.Workload.Name}, true
	}
	return rowKey{}, false
}

// dstKey returns the row of kind the destination of outbound k is in:
// a workload (dst_workload) or a service (dst_service).
func dstKey(kind string, k *seriesKey) (rowKey, bool) {
	if k.DstNamespace == "" {
		return rowKey{}, false
	}
	if kind == kindService {
		return rowKey{Namespace: k.DstNamespace, Kind: kindService, Name: k.DstService}, k.DstService != ""
	}
	w, ok := splitWorkload(k.DstWorkload)
	if !ok || w.Kind != kind {
		return rowKey{}, false
	}
	return rowKey{Namespace: k.DstNamespace, Kind: w.Kind, Name: w.Name}, true
}

// grouping says how a stat or series query matches series to rows.
// Without From or To, a workload's, pod's or namespace's rows count the
// inbound traffic of their pods, a service's the outbound traffic of
// every client to it. With From, rows count the outbound traffic of
// From's pods to them; with To, their pods' outbound traffic to To.
// Traffic to a service is HTTP only: TCP series carry no dst_service
// (docs/metrics.md), so a service's TCP figures stay 0.
type grouping struct {
	Kind     string  // of the rows
	From, To *rowKey // at most one
}

// ownInbound reports whether g's rows count the inbound traffic of their
// own pods, the only traffic whose denials are known (vizv1.Stats.Denied).
func (g grouping) ownInbound() bool {
	return g.From == nil && g.To == nil && g.Kind != kindService
}

// rowFunc returns the rowFunc of g over the rows indexed by index.
func (g grouping) rowFunc(index map[rowKey]int) rowFunc {
	lookup := func(k rowKey, ok bool) int {
		if i, found := index[k]; ok && found {
			return i
		}
		return -1
	}
	switch {
	case g.From != nil:
		from := *g.From
		return func(k *seriesKey) int {
			if src, ok := srcKey(from.Kind, k); k.Direction != outbound || !ok || src != from {
				return -1
			}
			return lookup(dstKey(g.Kind, k))
		}
	case g.To != nil:
		to := *g.To
		return func(k *seriesKey) int {
			if dst, ok := dstKey(to.Kind, k); k.Direction != outbound || !ok || dst != to {
				return -1
			}
			return lookup(srcKey(g.Kind, k))
		}
	case g.Kind == kindService:
		return func(k *seriesKey) int {
			if k.Direction != outbound {
				return -1
			}
			return lookup(dstKey(g.Kind, k))
		}
	}
	return func(k *seriesKey) int {
		if k.Direction != inbound {
			return -1
		}
		return lookup(srcKey(g.Kind, k))
	}
}

// rowIndex indexes rows by key.
func rowIndex(rows []row) map[rowKey]int {
	index := make(map[rowKey]int, len(rows))
	for i, r := range rows {
		index[r.key] = i
	}
	return index
}
