package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/discovery"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/route"
)

// router sends outbound requests and connections to the endpoints the
// controller names for their original destination, chosen by peak-EWMA.
// A destination the controller says the mesh does not know keeps its
// original address: the cluster's own Service routing still works then.
//
// A destination the controller could not answer for (down at first use,
// or failing) is the dangerous case: it may be a meshed pod, and sending
// it plain text would silently drop mesh TLS and the identity the server
// requires. Inside the cluster's networks such a request fails instead;
// outside them nothing can be meshed, so it goes out as it came.
type router struct {
	cache *discovery.Cache
	// clusterNetworks hold every address that could be a meshed endpoint.
	clusterNetworks []netip.Prefix
	// unavailable counts what failed because the controller could not
	// answer, by protocol ("http" or "tcp").
	unavailable *prometheus.CounterVec
	// self holds the pod's own addresses. An endpoint at one of them is
	// this pod (a client of its own Service): the proxy's connection to
	// it is its own, which iptables lets go straight to the application,
	// never through the inbound proxy that would terminate mesh TLS. So it
	// goes in plain text; the inbound policy has nothing to decide there,
	// as the pod reaches its own application over loopback anyway.
	self map[netip.Addr]bool
}

func newRouter(cache *discovery.Cache, clusterNetworks []netip.Prefix, reg prometheus.Registerer) (*router, error) {
	r := &router{
		cache: cache, clusterNetworks: clusterNetworks,
		unavailable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_proxy_outbound_discovery_unavailable_total",
			Help: "Outbound requests (protocol=http) and connections (protocol=tcp) to an address inside the cluster networks that failed because the controller could not say whether it is meshed; none of them went out in plain text.",
		}, []string{"protocol"}),
	}
	if err := reg.Register(r.unavailable); err != nil {
		return nil, fmt.Errorf("router metrics: %w", err)
	}
	r.self = localAddrs()
	return r, nil
}

// localAddrs are the addresses of the network namespace's interfaces,
// read once: a pod's addresses do not change while it lives.
func localAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().IsLoopback() {
			out[p.Addr().Unmap()] = true
		}
	}
	return out
}

// identity is the mesh TLS identity a connection to an endpoint at addr
// must prove: meta's, but none when the endpoint is this pod (see self).
func (r *router) identity(addr netip.Addr, meta discovery.EndpointMeta) string {
	if r.self[addr.Unmap()] {
		return ""
	}
	return meta.Identity
}

// errForward means "send it to the original destination".
var errForward = errors.New("not a mesh destination")

// inCluster reports whether a could be a meshed endpoint.
func (r *router) inCluster(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range r.clusterNetworks {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// pick chooses an endpoint of target. It returns errForward when target
// is not for the mesh to balance, httpproxy.ErrNoEndpoints when it is but
// nothing is ready, and httpproxy.ErrUnavailable when the controller could
// not say which, for a target inside the cluster networks.
func (r *router) pick(ctx context.Context, target netip.AddrPort, protocol string) (balance.Pick, error) {
	d, err := r.cache.Get(ctx, target.String())
	switch {
	case err == nil:
	case errors.Is(err, discovery.ErrNotFound), !r.inCluster(target.Addr()):
		return balance.Pick{}, errForward
	default:
		r.unavailable.WithLabelValues(protocol).Inc()
		return balance.Pick{}, fmt.Errorf("%w: %w", httpproxy.ErrUnavailable, err)
	}
	p, ok := d.Pick()
	if !ok {
		return balance.Pick{}, httpproxy.ErrNoEndpoints
	}
	return p, nil
}

// pickBackend chooses an endpoint of a route's backend, a Service port
// the controller named: unlike an original destination, it is never
// forwarded as addressed, so a backend the controller does not know has
// no endpoints (the Gateway API's 500 for a rule whose backends are all
// invalid is the controller's to send, as a Fail).
func (r *router) pickBackend(ctx context.Context, authority string) (balance.Pick, error) {
	d, err := r.cache.Get(ctx, authority)
	switch {
	case errors.Is(err, discovery.ErrNotFound):
		return balance.Pick{}, fmt.Errorf("%w: backend %s: %w", httpproxy.ErrNoEndpoints, authority, err)
	case err != nil:
		r.unavailable.WithLabelValues("http").Inc()
		return balance.Pick{}, fmt.Errorf("%w: backend %s: %w", httpproxy.ErrUnavailable, authority, err)
	}
	p, ok := d.Pick()
	if !ok {
		return balance.Pick{}, httpproxy.ErrNoEndpoints
	}
	return p, nil
}

// routes is target's route table (docs/traffic.md): nil when the
// controller sent none for it, or does not know it. Only the outbound side
// has a router, so inbound requests are never routed.
func (r *router) routes(target netip.AddrPort) *route.Table {
	d, err := r.cache.Get(context.Background(), target.String())
	if err != nil {
		return nil
	}
	return d.Routes()
}

// httpPicker is the per-request balancing of the HTTP path: the pick is
// held until the response has ended, so pending counts whole exchanges.
func (r *router) httpPicker(ctx context.Context, target netip.AddrPort, backend string) (httpproxy.Endpoint, error) {
	var p balance.Pick
	var err error
	if backend == "" {
		p, err = r.pick(ctx, target, "http")
	} else {
		p, err = r.pickBackend(ctx, backend)
	}
	if err != nil {
		return httpproxy.Endpoint{}, err
	}
	meta, _ := discovery.Meta(p.Endpoint())
	return httpproxy.Endpoint{
		Addr:     p.Endpoint().Addr,
		Identity: r.identity(p.Endpoint().Addr.Addr(), meta),
		Dst:      dstOf(meta),
		Report: func(rtt time.Duration, err error) {
			p.Observe(rtt, err)
			p.Done()
		},
	}, nil
}

// destinationsJSON is GET /destinations on the admin port: what the proxy
// knows of each destination it asked about, its route table and what its
// balancer thinks of each endpoint.
func (r *router) destinationsJSON(w http.ResponseWriter, _ *http.Request) {
	out := []destinationView{}
	for _, d := range r.cache.Destinations() {
		meta := map[netip.AddrPort]discovery.EndpointMeta{}
		for _, ep := range d.Endpoints() {
			if m, ok := discovery.Meta(ep); ok {
				meta[ep.Addr] = m
			}
		}
		fa := d.FailureAccrual()
		dst := destinationView{
			Authority: d.Authority(), NotFound: d.NotFound(), Endpoints: []endpointView{},
			Routes: routesViewOf(d.Routes()),
			Balancer: accrualView{Disabled: fa.MaxFailures < 0, MaxFailures: max(fa.MaxFailures, 0),
				MinBackoff: durationView(fa.MinBackoff), MaxBackoff: durationView(fa.MaxBackoff)},
		}
		for _, st := range d.Stats() {
			m := meta[st.Addr]
			ep := endpointView{
				Addr: st.Addr.String(), Identity: m.Identity, Zone: m.Zone, Labels: m.Labels,
				RTTms: float64(st.RTT) / float64(time.Millisecond), Pending: st.Pending,
				Failures: st.Failures, Ejected: st.Ejected, Draining: st.Draining,
			}
			if m.Hint != 0 {
				ep.Hint = m.Hint.String()
			}
			dst.Endpoints = append(dst.Endpoints, ep)
		}
		out = append(out, dst)
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

// destinationView and the types below are the JSON of /destinations.
type destinationView struct {
	Authority string         `json:"authority"`
	NotFound  bool           `json:"not_found"`
	Endpoints []endpointView `json:"endpoints"`
	Routes    *routesView    `json:"routes,omitempty"`
	// Balancer is the failure accrual the balancer applies now: the
	// proxy's own, or what the route table says.
	Balancer accrualView `json:"balancer_failure_accrual"`
}

type endpointView struct {
	Addr     string            `json:"addr"`
	Identity string            `json:"identity,omitempty"`
	Hint     string            `json:"protocol_hint,omitempty"`
	Zone     string            `json:"zone,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	RTTms    float64           `json:"rtt_estimate_ms"`
	Pending  int64             `json:"pending"`
	Failures int               `json:"consecutive_failures"`
	Ejected  bool              `json:"ejected"`
	Draining bool              `json:"draining"`
}

type routesView struct {
	Version uint64   `json:"version"`
	Rules   []string `json:"rules"` // kind/namespace/name rule, in precedence order
	// Default is the Service's own rule, which every request takes when
	// Rules is empty; absent when the Service sets no policy.
	Default *ruleView `json:"default_rule,omitempty"`
	// FailureAccrual is what the table asks of the balancer, the fields
	// it leaves to the proxy absent; absent when it asks nothing.
	FailureAccrual *accrualView `json:"failure_accrual,omitempty"`
}

// ruleView is a rule's policy: its timeouts and retries.
type ruleView struct {
	Route                 string     `json:"route"` // kind/namespace/name
	RequestTimeout        string     `json:"request_timeout,omitempty"`
	BackendRequestTimeout string     `json:"backend_request_timeout,omitempty"`
	ResponseTimeout       string     `json:"response_timeout,omitempty"`
	IdleTimeout           string     `json:"idle_timeout,omitempty"`
	Retry                 *retryView `json:"retry,omitempty"`
}

type retryView struct {
	HTTP          []string `json:"http,omitempty"` // status ranges, "500-599"
	GRPC          []int    `json:"grpc,omitempty"`
	Limit         int      `json:"limit"`
	PerTryTimeout string   `json:"per_try_timeout,omitempty"`
}

type accrualView struct {
	Disabled    bool   `json:"disabled,omitempty"`
	MaxFailures int    `json:"max_failures,omitempty"`
	MinBackoff  string `json:"min_backoff,omitempty"`
	MaxBackoff  string `json:"max_backoff,omitempty"`
}

// routesViewOf is the view of t; nil for none.
func routesViewOf(t *route.Table) *routesView {
	if t == nil {
		return nil
	}
	v := &routesView{Version: t.Version(), Rules: []string{}}
	for _, rule := range slices.Concat(t.HTTPRules(), t.GRPCRules()) {
		v.Rules = append(v.Rules, fmt.Sprintf("%s/%s/%s %s", rule.Route.Kind, rule.Route.Namespace, rule.Route.Name, rule.Name))
	}
	if def := t.Default(); def != nil {
		v.Default = &ruleView{
			Route:          fmt.Sprintf("%s/%s/%s", def.Route.Kind, def.Route.Namespace, def.Route.Name),
			RequestTimeout: durationView(def.RequestTimeout), BackendRequestTimeout: durationView(def.BackendRequestTimeout),
			ResponseTimeout: durationView(def.ResponseTimeout), IdleTimeout: durationView(def.IdleTimeout),
		}
		if rp := def.Retry; rp != nil {
			rv := &retryView{GRPC: rp.GRPC, Limit: rp.Limit, PerTryTimeout: durationView(rp.PerTryTimeout)}
			for _, sr := range rp.HTTP {
				rv.HTTP = append(rv.HTTP, fmt.Sprintf("%d-%d", sr.Min, sr.Max))
			}
			v.Default.Retry = rv
		}
	}
	if fa := t.FailureAccrual(); fa != (route.FailureAccrual{}) {
		v.FailureAccrual = &accrualView{Disabled: fa.Disabled, MaxFailures: fa.MaxFailures,
			MinBackoff: durationView(fa.MinBackoff), MaxBackoff: durationView(fa.MaxBackoff)}
	}
	return v
}

// durationView is d as Go writes it ("1m30s"), "" for zero.
func durationView(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// dstOf is the metrics view of an endpoint the destination service
// described: its namespace, its workload as kind/name (named by the
// controller exactly as mesh viz groups pods), its Service.
func dstOf(m discovery.EndpointMeta) metrics.Dst {
	l := m.Labels
	return metrics.Dst{Namespace: l["namespace"], Workload: l["workload"], Service: l["service"]}
}
