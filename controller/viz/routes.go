package viz

import (
	"cmp"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// routeKindService is the route_kind of a request that the Service's own
// retry and timeout policy took, with no route: route_namespace and
// route_name name the Service (docs/metrics.md).
const routeKindService = "Service"

// routesParams are the parsed parameters of a routes request.
type routesParams struct {
	target
}

func (v *Viz) parseRoutes(r *http.Request) (routesParams, error) {
	q, err := query(r, "kind", "namespace", "name", "window")
	if err != nil {
		return routesParams{}, err
	}
	var p routesParams
	if p.target, err = v.parseTarget(q); err != nil {
		return p, err
	}
	// Routes are counted by the proxies of the clients that send the
	// requests.
	if p.Kind == kindService {
		return p, badRequest("kind svc: routes are counted by the clients' proxies, and a service sends nothing; use the deploy, pod or ns (also sts, ds, job, rs) of its clients")
	}
	return p, nil
}

// routeKey is one Route of an answer: the requests one row's pods sent
// through one route rule to one Service. route is the zero Resource for
// requests that matched no route, parent for a Service viz cannot tell.
type routeKey struct {
	row    int
	route  vizv1.Resource
	rule   string
	parent vizv1.Resource
}

// routeRule returns the route and rule outbound series k counts in: the
// zero Resource and "" for requests that matched no route, those of a
// Service's own policy among them.
func routeRule(k *seriesKey) (vizv1.Resource, string) {
	if k.RouteKind == "" || k.RouteKind == routeKindService {
		return vizv1.Resource{}, ""
	}
	return vizv1.Resource{Kind: strings.ToLower(k.RouteKind), Namespace: k.RouteNamespace, Name: k.RouteName}, k.RouteRule
}

// parentFinder tells the Service outbound requests were sent to. It
// remembers what it found per target address and per authority: a
// window's samples name few of them, many times over. It is used from
// one goroutine.
type parentFinder struct {
	services    corelisters.ServiceLister
	byIP        cache.Indexer // by clusterIPIndex
	targets     map[string]vizv1.Resource
	authorities map[[2]string]vizv1.Resource // by client namespace and authority
}

func (v *Viz) parentFinder() *parentFinder {
	return &parentFinder{services: v.services, byIP: v.serviceIndex,
		targets: map[string]vizv1.Resource{}, authorities: map[[2]string]vizv1.Resource{}}
}

// parent returns the Service outbound series k was sent to, the zero
// Resource when it cannot tell. In order: the Service of its Service
// rule; the Service whose cluster IP its target_addr is, that of every
// request to a Service whatever route it took; for requests without a
// route, the Service of the endpoint they went to, as they went to the
// endpoints of the Service they were sent to; and last the Service its
// authority names, for the requests the proxy answered itself, which
// name no target (docs/metrics.md, Bounds).
func (f *parentFinder) parent(k *seriesKey) vizv1.Resource {
	if k.RouteKind == routeKindService && known(k.RouteNamespace) && known(k.RouteName) {
		return serviceResource(k.RouteNamespace, k.RouteName)
	}
	if svc := f.byTarget(k.TargetAddr); svc != (vizv1.Resource{}) {
		return svc
	}
	if k.RouteKind == "" && known(k.DstNamespace) && known(k.DstService) {
		return serviceResource(k.DstNamespace, k.DstService)
	}
	return f.byAuthority(k.Namespace, k.Authority)
}

// known reports whether a label value names something: it is neither
// empty nor the "other" a proxy's cap folded it into.
func known(v string) bool { return v != "" && v != "other" }

func serviceResource(ns, name string) vizv1.Resource {
	return vizv1.Resource{Kind: kindService, Namespace: ns, Name: name}
}

// byTarget returns the Service whose cluster IP is target's ("ip:port"),
// the zero Resource for none.
func (f *parentFinder) byTarget(target string) vizv1.Resource {
	if svc, ok := f.targets[target]; ok {
		return svc
	}
	var svc vizv1.Resource
	if host, _, err := net.SplitHostPort(target); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil {
			svc = f.byClusterIP(ip)
		}
	}
	f.targets[target] = svc
	return svc
}

func (f *parentFinder) byClusterIP(ip netip.Addr) vizv1.Resource {
	objs, err := f.byIP.ByIndex(clusterIPIndex, ip.String())
	if err != nil || len(objs) != 1 {
		return vizv1.Resource{}
	}
	s, ok := objs[0].(*corev1.Service)
	if !ok {
		return vizv1.Resource{}
	}
	return serviceResource(s.Namespace, s.Name)
}

// byAuthority returns the Service that authority names when a client in
// namespace ns sends it, as the cluster's DNS reads it (NAME,
// NAME.NAMESPACE, NAME.NAMESPACE.svc[.cluster domain], with or without a
// port), or whose cluster IP it is; the zero Resource when it names none
// the cache holds.
func (f *parentFinder) byAuthority(ns, authority string) vizv1.Resource {
	memo := [2]string{ns, authority}
	if svc, ok := f.authorities[memo]; ok {
		return svc
	}
	svc := f.resolve(ns, authority)
	f.authorities[memo] = svc
	return svc
}

func (f *parentFinder) resolve(ns, authority string) vizv1.Resource {
	host := authority
	if h, _, err := net.SplitHostPort(authority); err == nil {
		host = h
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return f.byClusterIP(ip)
	}
	parts := strings.Split(strings.ToLower(strings.TrimSuffix(host, ".")), ".")
	switch {
	case len(parts) == 1:
	case len(parts) == 2 || parts[2] == "svc":
		ns = parts[1]
	default:
		return vizv1.Resource{}
	}
	if checkName(parts[0]) != nil || checkNamespace(ns) != nil {
		return vizv1.Resource{}
	}
	if _, err := f.services.Services(ns).Get(parts[0]); err != nil {
		return vizv1.Resource{}
	}
	return serviceResource(ns, parts[0])
}

// clusterIPIndex indexes the service cache by cluster IP, in netip's
// canonical form; headless Services have none.
const clusterIPIndex = "viz.mesh.dev/cluster-ip"

func serviceClusterIPs(obj any) ([]string, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return nil, nil
	}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var out []string
	for _, s := range ips {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip.String())
		}
	}
	return out, nil
}

// routeOf returns the Route outbound series k counts in: its scraped pod
// is in one of the rows index holds.
func (p routesParams) routeOf(k *seriesKey, index map[rowKey]int, parents *parentFinder) (routeKey, bool) {
	if k.Direction != outbound {
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
	rk := routeKey{row: i, parent: parents.parent(k)}
	rk.route, rk.rule = routeRule(k)
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
	parents := v.parentFinder()
	accs := map[routeKey]*accum{}
	win := v.store.sumInto(p.Window, v.cfg.Interval, func(k *seriesKey) *accum {
		rk, ok := p.routeOf(k, index, parents)
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
		// TCP series, which have no route, and routes idle in the window
		// leave an accum without requests.
		if a.requests == 0 {
			continue
		}
		rt := vizv1.Route{Resource: rows[k.row].resource(), Rule: k.rule, Stats: a.stats(win.Secs)}
		if k.route != (vizv1.Resource{}) {
			rt.Route = &k.route
		}
		if k.parent != (vizv1.Resource{}) {
			rt.Parent = &k.parent
		}
		// Requests without a route share their label set with their
		// connections' TCP one when they carry no authority; those
		// figures are not the route's.
		rt.TCPConnections, rt.ReadBytesPerSec, rt.WriteBytesPerSec = 0, 0, 0
		list.Routes = append(list.Routes, rt)
	}
	slices.SortFunc(list.Routes, compareRoutes)
	writeJSON(w, http.StatusOK, list)
	return nil
}

// compareRoutes orders routes as RouteList says.
func compareRoutes(a, b vizv1.Route) int {
	return cmp.Or(
		compareResource(a.Resource, b.Resource),
		compareKnownFirst(a.Parent, b.Parent),
		compareKnownFirst(a.Route, b.Route),
		compareRules(a.Rule, b.Rule),
	)
}

// compareKnownFirst orders resources, nil after the rest.
func compareKnownFirst(a, b *vizv1.Resource) int {
	if a == nil || b == nil {
		return cmp.Compare(boolInt(a == nil), boolInt(b == nil))
	}
	return compareResource(*a, *b)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// compareRules orders rule names, indexes by number ("2" before "10") and
// before names.
func compareRules(a, b string) int {
	na, errA := strconv.ParseUint(a, 10, 32)
	nb, errB := strconv.ParseUint(b, 10, 32)
	switch {
	case errA == nil && errB == nil:
		return cmp.Compare(na, nb)
	case errA == nil || errB == nil:
		return cmp.Compare(boolInt(errA != nil), boolInt(errB != nil))
	}
	return cmp.Compare(a, b)
}
