package viz

import (
	"cmp"
	"net/http"
	"slices"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// routesParams are the parsed parameters of a routes request.
type routesParams struct {
	target
	// directions holds the series directions asked for: inbound,
	// outbound or both.
	directions []string
}

func (v *Viz) parseRoutes(r *http.Request) (routesParams, error) {
	q, err := query(r, "kind", "namespace", "name", "direction", "window")
	if err != nil {
		return routesParams{}, err
	}
	var p routesParams
	if p.target, err = v.parseTarget(q); err != nil {
		return p, err
	}
	// Routes are counted by the resource's own proxies.
	if p.Kind == kindService {
		return p, badRequest("kind svc: a service has no proxies to count its routes; use deploy, pod or ns (also sts, ds, job, rs), e.g. the deploy behind the service")
	}
	switch d := q.Get("direction"); d {
	case "", vizv1.DirectionInbound:
		p.directions = []string{inbound}
	case vizv1.DirectionOutbound:
		p.directions = []string{outbound}
	case vizv1.DirectionAll:
		p.directions = []string{inbound, outbound}
	default:
		return p, badRequest("direction %q: use inbound, outbound or all", d)
	}
	return p, nil
}

// routeKey is one route of a row: the requests of one authority in one
// direction, and outbound to one destination workload (the zero
// Resource when the proxy did not know it).
type routeKey struct {
	row       int
	direction string
	authority string
	dst       vizv1.Resource
}

// routeOf returns the route series k counts in: its direction is asked
// for and its scraped pod is in one of the rows index holds.
func (p routesParams) routeOf(k *seriesKey, index map[rowKey]int) (routeKey, bool) {
	if !slices.Contains(p.directions, k.Direction) {
		return routeKey{}, false
	}
	src, ok := srcKey(p.Kind, k)
	if !ok {
		return routeKey{}, false
	}
	i, ok := index[src]
	if !ok {
		return routeKey{}, false
	}
	rk := routeKey{row: i, direction: k.Direction, authority: k.Authority}
	if e, ok := edgeOf(k); ok {
		rk.dst = e.Dst
	}
	return rk, true
}

func (v *Viz) serveRoutes(w http.ResponseWriter, r *http.Request) error {
	p, err := v.parseRoutes(r)
	if err != nil {
		return err
	}
	rows, err := v.targetRows(p.target)
	if err != nil {
		return err
	}
	index := rowIndex(rows)
	accs := map[routeKey]*accum{}
	win := v.store.sumInto(p.Window, v.cfg.Interval, func(k *seriesKey) *accum {
		rk, ok := p.routeOf(k, index)
		if !ok {
			return nil
		}
		a := accs[rk]
		if a == nil {
			a = &accum{}
			accs[rk] = a
		}
		return a
	})
	list := vizv1.RouteList{Window: p.WindowText, Collected: win.To, Routes: make([]vizv1.Route, 0, len(accs))}
	for k, a := range accs {
		// TCP series, which have no authority, and routes idle in the
		// window leave an accum without requests.
		if a.requests == 0 {
			continue
		}
		rt := vizv1.Route{Resource: rows[k.row].resource(), Direction: k.direction, Authority: k.authority, Stats: a.stats(win.Secs)}
		if k.dst != (vizv1.Resource{}) {
			rt.Dst = &k.dst
		}
		// An HTTP label set without an authority is the same as its
		// connections' TCP one, whose figures are not the route's.
		rt.TCPConnections, rt.ReadBytesPerSec, rt.WriteBytesPerSec = 0, 0, 0
		list.Routes = append(list.Routes, rt)
	}
	slices.SortFunc(list.Routes, compareRoutes)
	writeJSON(w, http.StatusOK, list)
	return nil
}

// compareRoutes orders routes as RouteList says.
func compareRoutes(a, b vizv1.Route) int {
	var none vizv1.Resource
	return cmp.Or(
		compareResource(a.Resource, b.Resource),
		cmp.Compare(a.Direction, b.Direction),
		cmp.Compare(a.Authority, b.Authority),
		compareResource(*cmp.Or(a.Dst, &none), *cmp.Or(b.Dst, &none)),
	)
}
