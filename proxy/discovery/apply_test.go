package discovery

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/proxy/balance"
)

// newDetached returns a Destination of a cache that is not running, to
// which a test applies updates by hand.
func newDetached(t testing.TB) *Destination {
	t.Helper()
	c, err := New(Config{Client: unusedClient{}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	d, err := c.newDestination("web.shop.svc.cluster.local:80", time.Now())
	if err != nil {
		t.Fatalf("newDestination: %v", err)
	}
	return d
}

func TestApply(t *testing.T) {
	unknown := &destinationv1.Update{}
	tests := []struct {
		name string
		// streams are the updates of successive streams: the first update of
		// each starts from an empty set.
		streams [][]*destinationv1.Update
		want    []string
	}{
		{
			name:    "full set",
			streams: [][]*destinationv1.Update{{add("10.0.0.2:8080", "10.0.0.1:8080")}},
			want:    []string{"10.0.0.1:8080", "10.0.0.2:8080"},
		},
		{
			name: "add and remove",
			streams: [][]*destinationv1.Update{{
				add("10.0.0.1:8080", "10.0.0.2:8080"),
				add("10.0.0.3:8080"),
				remove("10.0.0.1:8080"),
			}},
			want: []string{"10.0.0.2:8080", "10.0.0.3:8080"},
		},
		{
			name:    "remove of an address not held",
			streams: [][]*destinationv1.Update{{add("10.0.0.1:8080"), remove("10.0.0.9:8080")}},
			want:    []string{"10.0.0.1:8080"},
		},
		{
			name:    "no endpoints empties",
			streams: [][]*destinationv1.Update{{add("10.0.0.1:8080", "10.0.0.2:8080"), noEndpoints()}},
		},
		{
			name:    "add after no endpoints",
			streams: [][]*destinationv1.Update{{noEndpoints(), add("10.0.0.1:8080")}},
			want:    []string{"10.0.0.1:8080"},
		},
		{
			name: "new stream replaces rather than merges",
			streams: [][]*destinationv1.Update{
				{add("10.0.0.1:8080", "10.0.0.2:8080")},
				{add("10.0.0.3:8080")},
			},
			want: []string{"10.0.0.3:8080"},
		},
		{
			name: "new stream starting with no endpoints",
			streams: [][]*destinationv1.Update{
				{add("10.0.0.1:8080")},
				{noEndpoints()},
			},
		},
		{
			name: "update of unknown kind changes nothing, even first on a stream",
			streams: [][]*destinationv1.Update{
				{add("10.0.0.1:8080")},
				{unknown},
			},
			want: []string{"10.0.0.1:8080"},
		},
		{
			name: "malformed addresses skipped",
			streams: [][]*destinationv1.Update{{add(
				"10.0.0.1:8080", "web-0", "10.0.0.2", "10.0.0.3:0", "10.0.0.4:99999",
				"", "fd00::5:80", "[fd00::6]:8080", "10.0.0.7:8080",
			)}},
			want: []string{"10.0.0.1:8080", "10.0.0.7:8080", "[fd00::6]:8080"},
		},
		{
			name: "malformed removal skipped, the rest applies",
			streams: [][]*destinationv1.Update{{
				add("10.0.0.1:8080", "10.0.0.2:8080"),
				remove("nonsense", "10.0.0.1:8080"),
			}},
			want: []string{"10.0.0.2:8080"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDetached(t)
			for _, stream := range tc.streams {
				fresh := true
				for _, u := range stream {
					if d.apply(u, fresh) {
						fresh = false
					}
				}
			}
			if diff := cmp.Diff(tc.want, addrsOf(d), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
			if _, ok := d.Pick(); ok != (len(tc.want) > 0) {
				t.Errorf("Pick reported %v with %d endpoints", ok, len(tc.want))
			}
		})
	}
}

func TestApplyKeepsMetadata(t *testing.T) {
	d := newDetached(t)
	d.apply(add("10.0.0.1:8080"), true)
	moved := endpointAt("10.0.0.1:8080")
	moved.Identity = "spiffe://cluster.local/ns/shop/sa/web-v2"
	moved.ProtocolHint = destinationv1.ProtocolHint_PROTOCOL_HINT_OPAQUE
	moved.Zone = "zone-b"
	moved.Weight = 5000
	d.apply(&destinationv1.Update{Kind: &destinationv1.Update_Add{
		Add: &destinationv1.AddSet{Endpoints: []*destinationv1.Endpoint{moved}},
	}}, false)

	want := []balance.Endpoint{{
		Addr:   netip.MustParseAddrPort("10.0.0.1:8080"),
		Weight: 5000,
		Metadata: EndpointMeta{
			Identity: "spiffe://cluster.local/ns/shop/sa/web-v2",
			Hint:     destinationv1.ProtocolHint_PROTOCOL_HINT_OPAQUE,
			Labels:   map[string]string{"namespace": "shop", "service": "web", "pod": "web-10.0.0.1:8080"},
			Zone:     "zone-b",
		},
	}}
	equateAddrs := cmpopts.EquateComparable(netip.AddrPort{})
	if diff := cmp.Diff(want, d.Endpoints(), equateAddrs); diff != "" {
		t.Errorf("Endpoints (-want +got):\n%s", diff)
	}
	p, ok := d.Pick()
	if !ok {
		t.Fatal("Pick found no endpoint")
	}
	defer p.Done()
	meta, ok := Meta(p.Endpoint())
	if !ok || meta.Identity != "spiffe://cluster.local/ns/shop/sa/web-v2" {
		t.Errorf("Meta(picked) = %+v, %v; want the replaced identity", meta, ok)
	}
}

func TestApplyDrains(t *testing.T) {
	var drained drainLog
	c, err := New(Config{Client: unusedClient{}, OnDrained: drained.record})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	d, err := c.newDestination("web:80", time.Now())
	if err != nil {
		t.Fatalf("newDestination: %v", err)
	}
	d.apply(add("10.0.0.1:8080", "10.0.0.2:8080"), true)
	// A new stream's full set without 10.0.0.1 drains it, at once since
	// nothing is in flight; 10.0.0.2 stays.
	d.apply(add("10.0.0.2:8080"), true)
	if diff := cmp.Diff([]string{"web:80 10.0.0.1:8080"}, drained.sorted()); diff != "" {
		t.Errorf("drained (-want +got):\n%s", diff)
	}
}

func TestNewRefusesConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "no client", cfg: Config{}},
		{name: "negative initial wait", cfg: Config{Client: unusedClient{}, InitialWait: -time.Second}},
		{name: "negative idle timeout", cfg: Config{Client: unusedClient{}, IdleTimeout: -time.Second}},
		{name: "max backoff below min", cfg: Config{Client: unusedClient{}, MinBackoff: time.Second, MaxBackoff: time.Millisecond}},
		{name: "balancer OnDrained", cfg: Config{Client: unusedClient{}, Balance: balance.Config{OnDrained: func(balance.Endpoint) {}}}},
		{name: "bad balancer config", cfg: Config{Client: unusedClient{}, Balance: balance.Config{Jitter: 2}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New: %v, want ErrInvalidConfig", err)
			}
		})
	}
}
