package balance

import (
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
)

// equateAddrs lets go-cmp compare netip values, whose fields are unexported.
var equateAddrs = cmpopts.EquateComparable(netip.AddrPort{}, netip.Addr{})

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a clock tests move by hand. Safe for concurrent use.
type fakeClock struct {
	base time.Time
	off  atomic.Int64 // nanoseconds after base
}

func newFakeClock() *fakeClock {
	return &fakeClock{base: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time { return c.base.Add(time.Duration(c.off.Load())) }

// Advance moves the clock forward by d.
func (c *fakeClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// Set moves the clock to d after its start.
func (c *fakeClock) Set(d time.Duration) { c.off.Store(int64(d)) }

// seededRand is a deterministic Config.Rand for single-goroutine tests; it
// is not safe for concurrent use.
func seededRand(seed uint64) func() uint64 {
	return rand.New(rand.NewPCG(seed, seed+1)).Uint64
}

// endpoints builds an endpoint of weight 1 for each address.
func endpoints(addrs ...string) []Endpoint {
	eps := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = Endpoint{Addr: netip.MustParseAddrPort(a)}
	}
	return eps
}

// newBalancer returns a balancer over eps, failing the test on error.
func newBalancer(t testing.TB, cfg Config, eps []Endpoint) *PeakEWMA {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := b.Update(eps); err != nil {
		t.Fatalf("Update: %v", err)
	}
	return b
}

// statsOf returns the Snapshot entry for addr.
func statsOf(t testing.TB, b *PeakEWMA, addr string) EndpointStats {
	t.Helper()
	want := netip.MustParseAddrPort(addr)
	for _, s := range b.Snapshot() {
		if s.Addr == want {
			return s
		}
	}
	t.Fatalf("Snapshot has no endpoint %s", addr)
	return EndpointStats{}
}

// mustPick picks, failing the test if the set is empty.
func mustPick(t testing.TB, b *PeakEWMA) Pick {
	t.Helper()
	p, ok := b.Pick()
	if !ok {
		t.Fatal("Pick found no endpoint")
	}
	return p
}

// complete reports one finished use of the next picked endpoint.
func complete(t testing.TB, b *PeakEWMA, rtt time.Duration, err error) Endpoint {
	t.Helper()
	p := mustPick(t, b)
	p.Observe(rtt, err)
	p.Done()
	return p.Endpoint()
}
