package balance

import (
	"fmt"
	"testing"
	"time"
)

// TestUnreachableEjectsAtOnce: one use that could not connect takes the
// endpoint out of rotation, where failures of other kinds need MaxFailures
// in a row; its probe brings it back as usual. With accrual off it stays.
func TestUnreachableEjectsAtOnce(t *testing.T) {
	refused := fmt.Errorf("%w: dial tcp %s: connect: connection refused", ErrUnreachable, badAddr)
	t.Run("ejected", func(t *testing.T) {
		clock := newFakeClock()
		b := newBalancer(t, accrualConfig(clock), endpoints(badAddr, goodAddr))
		p := pickAddr(t, b, badAddr)
		p.Observe(0, refused)
		p.Done()
		if s := statsOf(t, b, badAddr); !s.Ejected || s.Failures != 1 {
			t.Fatalf("after one unreachable use: %+v; want ejected", s)
		}
		assertAvoids(t, b, badAddr, 50)

		clock.Advance(time.Second) // accrualConfig's MinBackoff
		probe := mustPick(t, b)
		if got := probe.Endpoint().Addr.String(); got != badAddr {
			t.Fatalf("first pick after the backoff chose %s, want the probe to %s", got, badAddr)
		}
		probe.Observe(time.Millisecond, nil)
		probe.Done()
		if s := statsOf(t, b, badAddr); s.Ejected || s.Failures != 0 {
			t.Errorf("after a successful probe: %+v; want healed", s)
		}
	})
	t.Run("accrual off", func(t *testing.T) {
		cfg := accrualConfig(newFakeClock())
		cfg.MaxFailures = -1
		b := newBalancer(t, cfg, endpoints(badAddr, goodAddr))
		p := pickAddr(t, b, badAddr)
		p.Observe(0, refused)
		p.Done()
		if s := statsOf(t, b, badAddr); s.Ejected {
			t.Errorf("ejected with failure accrual off: %+v", s)
		}
	})
}
