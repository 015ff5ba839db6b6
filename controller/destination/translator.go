package destination

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/controller/destination/watcher"
)

// DefaultWeight is every endpoint's weight: large, so that a later policy
// can lower one endpoint's share in fine steps without touching the rest.
const DefaultWeight = 10000

// translator is the watcher.Listener of one stream: it turns each Set into
// the Updates that take the client from what it holds to the Set, and puts
// them on a bounded queue the stream's sender drains.
//
// Update is called by the watcher, serially, with the watcher's lock held,
// from informer goroutines: it never blocks. When the queue is full the
// client has fallen behind; rather than block the informers, or drop an
// update and leave the client with a wrong set, the translator stops and
// closes overflowed, and the stream ends (Linkerd's endpoint_translator does
// the same).
type translator struct {
	td spiffeid.TrustDomain
	// queue is drained by one sender goroutine.
	queue chan *destinationv1.Update
	// overflowed is closed, once, when queue was full.
	overflowed chan struct{}

	// Touched by Update only, which the watcher calls serially.
	started bool                                // an Update was queued
	held    map[netip.AddrPort]watcher.Endpoint // what the client holds
	exists  bool                                // of the last NoEndpoints
	full    bool                                // overflowed is closed
}

func newTranslator(td spiffeid.TrustDomain, queueSize int) *translator {
	return &translator{
		td:         td,
		queue:      make(chan *destinationv1.Update, queueSize),
		overflowed: make(chan struct{}),
	}
}

// Update implements watcher.Listener.
func (t *translator) Update(set watcher.Set) {
	if t.full {
		return
	}
	for _, u := range t.diff(set) {
		select {
		case t.queue <- u:
		default:
			t.full = true
			close(t.overflowed)
			return
		}
	}
}

// diff returns the Updates from what the client holds to set, and records
// set as held: Add first (new endpoints and endpoints whose metadata
// changed), then Remove, so the client never passes through an empty set
// on a rolling update. An empty set is one NoEndpoints, which empties the
// client's set by itself. The first call always returns something: the
// stream starts with the full set.
func (t *translator) diff(set watcher.Set) []*destinationv1.Update {
	if len(set.Endpoints) == 0 {
		if t.started && len(t.held) == 0 && t.exists == set.Exists {
			return nil
		}
		t.started, t.held, t.exists = true, nil, set.Exists
		return []*destinationv1.Update{{Kind: &destinationv1.Update_NoEndpoints{
			NoEndpoints: &destinationv1.NoEndpoints{Exists: set.Exists},
		}}}
	}
	var added []*destinationv1.Endpoint
	for _, addr := range sortedAddrs(set.Endpoints) {
		e := set.Endpoints[addr]
		if old, ok := t.held[addr]; !ok || !old.Equal(e) {
			added = append(added, t.endpoint(e))
		}
	}
	var removed []string
	for _, addr := range sortedAddrs(t.held) {
		if _, ok := set.Endpoints[addr]; !ok {
			removed = append(removed, addr.String())
		}
	}
	t.started, t.held = true, set.Endpoints
	var updates []*destinationv1.Update
	if len(added) > 0 {
		updates = append(updates, &destinationv1.Update{Kind: &destinationv1.Update_Add{
			Add: &destinationv1.AddSet{Endpoints: added},
		}})
	}
	if len(removed) > 0 {
		updates = append(updates, &destinationv1.Update{Kind: &destinationv1.Update_Remove{
			Remove: &destinationv1.RemoveSet{Addresses: removed},
		}})
	}
	return updates
}

// routeLabels are the endpoint labels proxies read, for their metrics'
// dst_namespace, dst_workload and dst_service. The watcher knows more (the
// pod's name, ServiceAccount and owners), but any meshed pod may ask about
// any address, so what a proxy does not use stays here (issue 12).
var routeLabels = []string{watcher.LabelNamespace, watcher.LabelWorkload, watcher.LabelService}

// endpoint is e in the API's terms. The identity is only given for a meshed
// pod: anything else has no certificate to present.
func (t *translator) endpoint(e watcher.Endpoint) *destinationv1.Endpoint {
	pe := &destinationv1.Endpoint{
		Address: e.Addr.String(),
		Weight:  DefaultWeight,
		Zone:    e.Zone,
		Labels:  make(map[string]string, len(routeLabels)),
	}
	for _, k := range routeLabels {
		if v, ok := e.Labels[k]; ok {
			pe.Labels[k] = v
		}
	}
	switch {
	case e.Opaque:
		pe.ProtocolHint = destinationv1.ProtocolHint_PROTOCOL_HINT_OPAQUE
	case e.Meshed:
		pe.ProtocolHint = destinationv1.ProtocolHint_PROTOCOL_HINT_H2
	}
	if e.Meshed && e.ServiceAccount != "" {
		// Kubernetes names are valid SPIFFE path segments; should one
		// not be, the endpoint goes without identity rather than with a
		// wrong one.
		if id, err := spiffeid.FromSegments(t.td, "ns", e.Namespace, "sa", e.ServiceAccount); err == nil {
			pe.Identity = id.String()
		}
	}
	return pe
}

// sortedAddrs returns m's keys in order, so updates are deterministic.
func sortedAddrs(m map[netip.AddrPort]watcher.Endpoint) []netip.AddrPort {
	return slices.SortedFunc(maps.Keys(m), netip.AddrPort.Compare)
}
