package balance

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentPickAndUpdate runs pickers against a stream of Updates; run
// it with -race. It checks that no Pick ever holds a drained endpoint, that
// every removed endpoint drains once its picks are done, and that no
// pending count is lost or doubled.
func TestConcurrentPickAndUpdate(t *testing.T) {
	const (
		pickers      = 8
		picksEach    = 10000
		updatesAtMin = 200
	)
	sets := [][]Endpoint{
		endpoints("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"),
		endpoints("10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"),
		endpoints("10.0.0.4:80"),
		nil,
		endpoints("10.0.0.1:80", "10.0.0.4:80"),
	}
	var drains sync.Map // address → *atomic.Int64
	b := newBalancer(t, Config{
		MaxFailures: 2, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		OnDrained: func(ep Endpoint) {
			n, _ := drains.LoadOrStore(ep.Addr, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
		},
	}, sets[0])

	ctx, stop := context.WithCancel(t.Context())
	var updates atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil || i < updatesAtMin; i++ {
			if err := b.Update(sets[i%len(sets)]); err != nil {
				t.Errorf("Update: %v", err)
				return
			}
			updates.Add(1)
		}
	})
	var pickersDone sync.WaitGroup
	for g := range pickers {
		pickersDone.Go(func() {
			for i := range picksEach {
				pickOnce(t, b, g, i)
			}
		})
	}
	pickersDone.Wait()
	stop()
	wg.Wait()
	t.Logf("%d updates during %d picks", updates.Load(), pickers*picksEach)

	mustUpdate(t, b)
	if got := b.Snapshot(); len(got) != 0 {
		t.Errorf("Snapshot after emptying the set with nothing in flight = %+v, want empty", got)
	}
	for _, ep := range sets[0] {
		n, ok := drains.Load(ep.Addr)
		if !ok || n.(*atomic.Int64).Load() == 0 {
			t.Errorf("%v never reported drained", ep.Addr)
		}
	}
}

// pickOnce makes one pick and finishes it, failing some so failure accrual
// runs too, and checks the endpoint cannot drain while it is held.
func pickOnce(t *testing.T, b *PeakEWMA, g, i int) {
	p, ok := b.Pick()
	if !ok {
		return
	}
	if p.e.st.life.Load() == drained {
		t.Errorf("Pick returned drained endpoint %v", p.Endpoint().Addr)
	}
	var err error
	if (g+i)%5 == 0 {
		err = errors.New("503")
	}
	if i%100 == 0 {
		_ = b.Snapshot()
	}
	p.Observe(time.Duration(1+i%7)*time.Millisecond, err)
	p.Done()
}

// TestPickDoesNotAllocate guards the hot path: Pick, Observe and Done make
// no heap allocations.
func TestPickDoesNotAllocate(t *testing.T) {
	for _, n := range []int{1, 3, 100} {
		t.Run(fmt.Sprintf("endpoints=%d", n), func(t *testing.T) {
			b := newBalancer(t, Config{}, manyEndpoints(n))
			allocs := testing.AllocsPerRun(1000, func() {
				p, _ := b.Pick()
				p.Observe(time.Millisecond, nil)
				p.Done()
			})
			if allocs != 0 {
				t.Errorf("Pick+Observe+Done allocates %v times, want 0", allocs)
			}
		})
	}
}

// manyEndpoints returns n distinct endpoints 10.x.y.z:80.
func manyEndpoints(n int) []Endpoint {
	eps := make([]Endpoint, n)
	for i := range eps {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		eps[i] = Endpoint{Addr: netip.AddrPortFrom(ip, 80), Weight: 1}
	}
	return eps
}
