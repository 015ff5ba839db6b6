package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"time"

	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/discovery"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// router sends outbound requests and connections to the endpoints the
// controller names for their original destination, chosen by peak-EWMA.
// A destination the mesh does not know, or a controller that has not
// answered yet, leaves the original destination in place: the cluster's
// own Service routing still works then.
type router struct {
	cache *discovery.Cache
}

// errForward means "send it to the original destination".
var errForward = errors.New("not a mesh destination")

// pick chooses an endpoint of target. It returns errForward when target
// is not for the mesh to balance, httpproxy.ErrNoEndpoints when it is but
// nothing is ready.
func (r *router) pick(ctx context.Context, target netip.AddrPort) (balance.Pick, error) {
	d, err := r.cache.Get(ctx, target.String())
	if err != nil {
		return balance.Pick{}, errForward
	}
	p, ok := d.Pick()
	if !ok {
		return balance.Pick{}, httpproxy.ErrNoEndpoints
	}
	return p, nil
}

// httpPicker is the per-request balancing of the HTTP path: the pick is
// held until the response has ended, so pending counts whole exchanges.
func (r *router) httpPicker(ctx context.Context, target netip.AddrPort) (httpproxy.Endpoint, error) {
	p, err := r.pick(ctx, target)
	if err != nil {
		return httpproxy.Endpoint{}, err
	}
	meta, _ := discovery.Meta(p.Endpoint())
	return httpproxy.Endpoint{
		Addr:     p.Endpoint().Addr,
		Identity: meta.Identity,
		Dst:      dstOf(meta),
		Report: func(rtt time.Duration, err error) {
			p.Observe(rtt, err)
			p.Done()
		},
	}, nil
}

// destinationsJSON is GET /destinations on the admin port: what the proxy
// knows of each destination it asked about, and what its balancer thinks
// of each endpoint.
func (r *router) destinationsJSON(w http.ResponseWriter, _ *http.Request) {
	type endpoint struct {
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
	type destination struct {
		Authority string     `json:"authority"`
		NotFound  bool       `json:"not_found"`
		Endpoints []endpoint `json:"endpoints"`
	}
	out := []destination{}
	for _, d := range r.cache.Destinations() {
		meta := map[netip.AddrPort]discovery.EndpointMeta{}
		for _, ep := range d.Endpoints() {
			if m, ok := discovery.Meta(ep); ok {
				meta[ep.Addr] = m
			}
		}
		dst := destination{Authority: d.Authority(), NotFound: d.NotFound(), Endpoints: []endpoint{}}
		for _, st := range d.Stats() {
			m := meta[st.Addr]
			ep := endpoint{
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

// dstOf is the metrics view of an endpoint the destination service
// described: its namespace, its workload as kind/name (named by the
// controller exactly as mesh viz groups pods), its Service.
func dstOf(m discovery.EndpointMeta) metrics.Dst {
	l := m.Labels
	return metrics.Dst{Namespace: l["namespace"], Workload: l["workload"], Service: l["service"]}
}
