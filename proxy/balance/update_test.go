package balance

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// drainLog records OnDrained calls. Safe for concurrent use.
type drainLog struct {
	mu    sync.Mutex
	addrs []string
	meta  []any
}

func (l *drainLog) record(ep Endpoint) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs = append(l.addrs, ep.Addr.String())
	l.meta = append(l.meta, ep.Metadata)
}

func (l *drainLog) got() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.addrs...)
}

// addrsOf lists the addresses in a Snapshot, draining ones suffixed "(draining)".
func addrsOf(b *PeakEWMA) []string {
	var out []string
	for _, s := range b.Snapshot() {
		a := s.Addr.String()
		if s.Draining {
			a += " (draining)"
		}
		out = append(out, a)
	}
	return out
}

func TestPickEmptySet(t *testing.T) {
	b, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Pick(); ok {
		t.Error("Pick on a new balancer reported an endpoint")
	}
	if err := b.Update(endpoints("10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	if err := b.Update(nil); err != nil {
		t.Fatal(err)
	}
	p, ok := b.Pick()
	if ok {
		t.Error("Pick after emptying the set reported an endpoint")
	}
	// The zero Pick is inert.
	p.Observe(time.Millisecond, nil)
	p.Done()
	if diff := cmp.Diff(Endpoint{}, p.Endpoint(), equateAddrs); diff != "" {
		t.Errorf("zero Pick endpoint (-want +got):\n%s", diff)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "negative default RTT", cfg: Config{DefaultRTT: -time.Millisecond}},
		{name: "negative decay", cfg: Config{Decay: -time.Second}},
		{name: "negative backoff", cfg: Config{MinBackoff: -time.Second}},
		{name: "max backoff below min", cfg: Config{MinBackoff: time.Minute, MaxBackoff: time.Second}},
		{name: "max backoff below default min", cfg: Config{MaxBackoff: time.Millisecond}},
		{name: "jitter above one", cfg: Config{Jitter: 1.5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New error = %v, want one wrapping ErrInvalidConfig", err)
			}
		})
	}
}

func TestUpdateRejectsBadSet(t *testing.T) {
	tests := []struct {
		name string
		eps  []Endpoint
	}{
		{name: "missing address", eps: []Endpoint{{}}},
		{name: "port zero", eps: []Endpoint{{Addr: netip.MustParseAddrPort("10.0.0.9:0")}}},
		{name: "repeated address", eps: endpoints("10.0.0.9:80", "10.0.0.8:80", "10.0.0.9:80")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBalancer(t, Config{}, endpoints("10.0.0.1:80", "10.0.0.2:80"))
			err := b.Update(tc.eps)
			if !errors.Is(err, ErrInvalidEndpoint) {
				t.Errorf("Update error = %v, want one wrapping ErrInvalidEndpoint", err)
			}
			if diff := cmp.Diff([]string{"10.0.0.1:80", "10.0.0.2:80"}, addrsOf(b)); diff != "" {
				t.Errorf("set after a refused Update (-want +got):\n%s", diff)
			}
		})
	}
}

// TestUpdateKeepsStats checks that runtime state follows the address across
// Updates while configuration comes from the latest one.
func TestUpdateKeepsStats(t *testing.T) {
	clock := newFakeClock()
	b := newBalancer(t, Config{Now: clock.Now}, endpoints("10.0.0.1:80"))
	complete(t, b, 100*time.Millisecond, err503)
	complete(t, b, 100*time.Millisecond, err503)
	held := mustPick(t, b)

	a := netip.MustParseAddrPort("10.0.0.1:80")
	next := []Endpoint{
		{Addr: netip.MustParseAddrPort("10.0.0.2:80"), Weight: 1},
		{Addr: a, Weight: 5, Metadata: "v2"},
	}
	if err := b.Update(next); err != nil {
		t.Fatal(err)
	}
	want := []EndpointStats{
		{Addr: next[0].Addr, Weight: 1, RTT: DefaultRTT},
		{Addr: a, Weight: 5, RTT: 100 * time.Millisecond, Pending: 1, Failures: 2},
	}
	if diff := cmp.Diff(want, b.Snapshot(), equateAddrs); diff != "" {
		t.Errorf("Snapshot after Update (-want +got):\n%s", diff)
	}
	held.Done() // at 100ms × 1 / 5 it is now the cheaper endpoint
	p := pickAddr(t, b, "10.0.0.1:80")
	defer p.Done()
	if got := p.Endpoint().Metadata; got != "v2" {
		t.Errorf("picked endpoint metadata = %v, want the updated v2", got)
	}
}

// TestRemovedEndpointDrains checks that a removed endpoint is never picked,
// that its in-flight picks finish normally, and that OnDrained fires once,
// after the last of them.
func TestRemovedEndpointDrains(t *testing.T) {
	var log drainLog
	clock := newFakeClock()
	b := newBalancer(t, Config{Now: clock.Now, OnDrained: log.record},
		[]Endpoint{{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Metadata: "pool-1"}})
	first, second := mustPick(t, b), mustPick(t, b)

	if err := b.Update(endpoints("10.0.0.2:80")); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"10.0.0.2:80", "10.0.0.1:80 (draining)"}, addrsOf(b)); diff != "" {
		t.Errorf("Snapshot after removal (-want +got):\n%s", diff)
	}
	assertAvoids(t, b, "10.0.0.1:80", 100)

	first.Observe(time.Millisecond, err503)
	first.Done()
	if got := log.got(); len(got) != 0 {
		t.Fatalf("OnDrained fired with a pick still in flight: %v", got)
	}
	second.Observe(time.Millisecond, nil)
	second.Done()
	second.Done()
	if diff := cmp.Diff([]string{"10.0.0.1:80"}, log.got()); diff != "" {
		t.Errorf("OnDrained calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]any{"pool-1"}, log.meta); diff != "" {
		t.Errorf("OnDrained metadata (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"10.0.0.2:80"}, addrsOf(b)); diff != "" {
		t.Errorf("Snapshot after draining (-want +got):\n%s", diff)
	}
}

// TestUpdateDrainLifecycle covers removals with nothing in flight and
// endpoints that come back.
func TestUpdateDrainLifecycle(t *testing.T) {
	tests := []struct {
		name string
		// run drives the balancer, which starts with 10.0.0.1:80 holding a
		// 100ms estimate, and returns the picks it leaves in flight.
		run         func(t *testing.T, b *PeakEWMA) []Pick
		wantDrained []string
		wantRTT     time.Duration // of 10.0.0.1:80 at the end, if present
	}{
		{
			name: "removal with nothing in flight drains in Update",
			run: func(t *testing.T, b *PeakEWMA) []Pick {
				mustUpdate(t, b, "10.0.0.2:80")
				return nil
			},
			wantDrained: []string{"10.0.0.1:80"},
		},
		{
			name: "re-added before draining keeps its state and never drains",
			run: func(t *testing.T, b *PeakEWMA) []Pick {
				p := mustPick(t, b)
				mustUpdate(t, b, "10.0.0.2:80")
				mustUpdate(t, b, "10.0.0.1:80", "10.0.0.2:80")
				return []Pick{p}
			},
			wantRTT: 100 * time.Millisecond,
		},
		{
			name: "re-added after draining starts afresh",
			run: func(t *testing.T, b *PeakEWMA) []Pick {
				mustUpdate(t, b, "10.0.0.2:80")
				mustUpdate(t, b, "10.0.0.1:80", "10.0.0.2:80")
				return nil
			},
			wantDrained: []string{"10.0.0.1:80"},
			wantRTT:     DefaultRTT,
		},
		{
			name: "revived then removed again drains once",
			run: func(t *testing.T, b *PeakEWMA) []Pick {
				p := mustPick(t, b)
				mustUpdate(t, b, "10.0.0.2:80")
				mustUpdate(t, b, "10.0.0.1:80", "10.0.0.2:80")
				mustUpdate(t, b, "10.0.0.2:80")
				return []Pick{p}
			},
			wantDrained: []string{"10.0.0.1:80"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var log drainLog
			b := newBalancer(t, Config{Now: newFakeClock().Now, OnDrained: log.record}, endpoints("10.0.0.1:80"))
			complete(t, b, 100*time.Millisecond, nil)
			for _, p := range tc.run(t, b) {
				p.Done()
			}
			if diff := cmp.Diff(tc.wantDrained, log.got()); diff != "" {
				t.Errorf("OnDrained calls (-want +got):\n%s", diff)
			}
			if tc.wantRTT != 0 {
				if got := statsOf(t, b, "10.0.0.1:80").RTT; got != tc.wantRTT {
					t.Errorf("RTT of 10.0.0.1:80 = %v, want %v", got, tc.wantRTT)
				}
			}
		})
	}
}

// TestOnDrainedMayCallBack checks that OnDrained runs outside the
// balancer's lock, so it may read the balancer.
func TestOnDrainedMayCallBack(t *testing.T) {
	var b *PeakEWMA
	var seen []string
	b = newBalancer(t, Config{OnDrained: func(Endpoint) { seen = addrsOf(b) }}, endpoints("10.0.0.1:80"))
	mustUpdate(t, b, "10.0.0.2:80")
	if diff := cmp.Diff([]string{"10.0.0.2:80"}, seen); diff != "" {
		t.Errorf("Snapshot from OnDrained (-want +got):\n%s", diff)
	}
}

func mustUpdate(t testing.TB, b *PeakEWMA, addrs ...string) {
	t.Helper()
	if err := b.Update(endpoints(addrs...)); err != nil {
		t.Fatalf("Update: %v", err)
	}
}
