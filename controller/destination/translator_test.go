package destination

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/testing/protocmp"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/controller/destination/watcher"
)

func set(exists bool, addrs ...string) watcher.Set {
	s := watcher.Set{Exists: exists, Endpoints: map[netip.AddrPort]watcher.Endpoint{}}
	for _, a := range addrs {
		ap := netip.MustParseAddrPort(a)
		s.Endpoints[ap] = watcher.Endpoint{Addr: ap, Namespace: testNS, Labels: map[string]string{"service": "web"}}
	}
	return s
}

func add(addrs ...string) *destinationv1.Update {
	eps := make([]*destinationv1.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = &destinationv1.Endpoint{Address: a, Weight: DefaultWeight, Labels: map[string]string{"service": "web"}}
	}
	return &destinationv1.Update{Kind: &destinationv1.Update_Add{Add: &destinationv1.AddSet{Endpoints: eps}}}
}

func remove(addrs ...string) *destinationv1.Update {
	return &destinationv1.Update{Kind: &destinationv1.Update_Remove{Remove: &destinationv1.RemoveSet{Addresses: addrs}}}
}

func noEndpoints(exists bool) *destinationv1.Update {
	return &destinationv1.Update{Kind: &destinationv1.Update_NoEndpoints{NoEndpoints: &destinationv1.NoEndpoints{Exists: exists}}}
}

func TestTranslatorDiff(t *testing.T) {
	tests := []struct {
		name string
		sets []watcher.Set
		want []*destinationv1.Update
	}{
		{
			name: "full set first, sorted",
			sets: []watcher.Set{set(true, "10.0.0.2:80", "10.0.0.1:80", "[fd00::1]:80")},
			want: []*destinationv1.Update{add("10.0.0.1:80", "10.0.0.2:80", "[fd00::1]:80")},
		},
		{
			name: "empty first is NoEndpoints",
			sets: []watcher.Set{set(true)},
			want: []*destinationv1.Update{noEndpoints(true)},
		},
		{
			name: "add before remove on a rollover",
			sets: []watcher.Set{set(true, "10.0.0.1:80"), set(true, "10.0.0.2:80")},
			want: []*destinationv1.Update{add("10.0.0.1:80"), add("10.0.0.2:80"), remove("10.0.0.1:80")},
		},
		{
			name: "emptied is one NoEndpoints, then gone is another",
			sets: []watcher.Set{set(true, "10.0.0.1:80"), set(true), set(true), set(false)},
			want: []*destinationv1.Update{add("10.0.0.1:80"), noEndpoints(true), noEndpoints(false)},
		},
		{
			name: "unchanged set sends nothing",
			sets: []watcher.Set{set(true, "10.0.0.1:80"), set(true, "10.0.0.1:80")},
			want: []*destinationv1.Update{add("10.0.0.1:80")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTranslator(spiffeid.RequireTrustDomainFromString("cluster.local"), 100)
			for _, s := range tc.sets {
				tr.Update(s)
			}
			var got []*destinationv1.Update
			for len(tr.queue) > 0 {
				got = append(got, <-tr.queue)
			}
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("updates (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTranslatorNeverBlocks: with nobody draining its queue, Update still
// returns at once, however many Sets come; the first that does not fit
// closes overflowed and the rest are dropped.
func TestTranslatorNeverBlocks(t *testing.T) {
	tr := newTranslator(spiffeid.RequireTrustDomainFromString("cluster.local"), 2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 10000 {
			tr.Update(set(true, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 80).String()))
		}
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Update blocked on a full queue")
	}
	select {
	case <-tr.overflowed:
	default:
		t.Error("overflowed is not closed")
	}
	if got := len(tr.queue); got != 2 {
		t.Errorf("queue holds %d updates, want 2 (its size)", got)
	}
}
