package detect

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeClock is the cache's now, moved by hand. Not safe for concurrent use.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestCache(size int, ttl time.Duration) (*OpaqueCache, *fakeClock) {
	clk := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := NewOpaqueCache(size, ttl)
	c.now = clk.now
	return c, clk
}

var (
	dstA = netip.MustParseAddrPort("10.0.0.1:3306")
	dstB = netip.MustParseAddrPort("10.0.0.2:3306")
	dstC = netip.MustParseAddrPort("[fd00::3]:25")
)

// contents reports, for each destination, whether c contains it.
func contents(c *OpaqueCache, dsts ...netip.AddrPort) map[netip.AddrPort]bool {
	got := map[netip.AddrPort]bool{}
	for _, d := range dsts {
		got[d] = c.Contains(d)
	}
	return got
}

func TestOpaqueCache(t *testing.T) {
	const ttl = time.Minute
	tests := []struct {
		name string
		size int
		run  func(c *OpaqueCache, clk *fakeClock)
		want map[netip.AddrPort]bool
	}{
		{
			name: "empty",
			size: 4,
			run:  func(*OpaqueCache, *fakeClock) {},
			want: map[netip.AddrPort]bool{dstA: false, dstB: false, dstC: false},
		},
		{
			name: "remembered",
			size: 4,
			run:  func(c *OpaqueCache, _ *fakeClock) { c.Remember(dstA); c.Remember(dstC) },
			want: map[netip.AddrPort]bool{dstA: true, dstB: false, dstC: true},
		},
		{
			name: "still there at the ttl",
			size: 4,
			run:  func(c *OpaqueCache, clk *fakeClock) { c.Remember(dstA); clk.advance(ttl) },
			want: map[netip.AddrPort]bool{dstA: true},
		},
		{
			name: "expired just past the ttl",
			size: 4,
			run: func(c *OpaqueCache, clk *fakeClock) {
				c.Remember(dstA)
				clk.advance(ttl / 2)
				c.Remember(dstB)
				clk.advance(ttl/2 + time.Nanosecond)
			},
			want: map[netip.AddrPort]bool{dstA: false, dstB: true},
		},
		{
			name: "re-Remember refreshes the ttl",
			size: 4,
			run: func(c *OpaqueCache, clk *fakeClock) {
				c.Remember(dstA)
				clk.advance(ttl / 2)
				c.Remember(dstA)
				clk.advance(3 * ttl / 4)
			},
			want: map[netip.AddrPort]bool{dstA: true},
		},
		{
			name: "oldest evicted at size",
			size: 2,
			run:  func(c *OpaqueCache, _ *fakeClock) { c.Remember(dstA); c.Remember(dstB); c.Remember(dstC) },
			want: map[netip.AddrPort]bool{dstA: false, dstB: true, dstC: true},
		},
		{
			name: "re-Remember makes an entry the newest",
			size: 2,
			run: func(c *OpaqueCache, _ *fakeClock) {
				c.Remember(dstA)
				c.Remember(dstB)
				c.Remember(dstA)
				c.Remember(dstC)
			},
			want: map[netip.AddrPort]bool{dstA: true, dstB: false, dstC: true},
		},
		{
			name: "size below one holds one",
			size: 0,
			run:  func(c *OpaqueCache, _ *fakeClock) { c.Remember(dstA); c.Remember(dstB) },
			want: map[netip.AddrPort]bool{dstA: false, dstB: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, clk := newTestCache(tc.size, ttl)
			tc.run(c, clk)
			var dsts []netip.AddrPort
			for d := range tc.want {
				dsts = append(dsts, d)
			}
			if diff := cmp.Diff(tc.want, contents(c, dsts...)); diff != "" {
				t.Errorf("contents mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOpaqueCacheDropsExpired checks that Contains forgets an expired entry
// rather than only hiding it, so it no longer takes up room.
func TestOpaqueCacheDropsExpired(t *testing.T) {
	c, clk := newTestCache(2, time.Second)
	c.Remember(dstA)
	clk.advance(2 * time.Second)
	if c.Contains(dstA) {
		t.Fatal("Contains(expired) = true")
	}
	if n, m := c.order.Len(), len(c.entries); n != 0 || m != 0 {
		t.Errorf("after expiry the cache holds %d entries in order and %d in its map, want none", n, m)
	}
}

// TestOpaqueCacheConcurrent is for the race detector.
func TestOpaqueCacheConcurrent(t *testing.T) {
	c := NewOpaqueCache(8, time.Minute)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(g), byte(i % 16)}), 5432)
				c.Remember(dst)
				c.Contains(dst)
			}
		})
	}
	wg.Wait()
	if n := c.order.Len(); n > 8 {
		t.Errorf("cache of size 8 holds %d entries", n)
	}
}

func TestDefaultOpaquePorts(t *testing.T) {
	got := map[uint16]bool{}
	want := map[uint16]bool{22: true, 25: true, 3306: true, 5432: true, 6379: true, 27017: true, 80: false, 443: false, 8080: false}
	for p := range want {
		got[p] = DefaultOpaquePorts.Contains(p)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DefaultOpaquePorts mismatch (-want +got):\n%s", diff)
	}
}
