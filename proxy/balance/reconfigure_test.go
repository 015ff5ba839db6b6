package balance

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestSetFailureAccrualKeepsState changes the failure accrual of a
// running balancer and checks that endpoints keep their latency estimate
// and their run of failures, and that the new threshold and schedule
// decide the next ejection.
func TestSetFailureAccrualKeepsState(t *testing.T) {
	clock := newFakeClock()
	b := newBalancer(t, accrualConfig(clock), endpoints(badAddr, goodAddr))
	fail := func(n int) {
		t.Helper()
		for range n {
			p := pickAddr(t, b, badAddr)
			p.Observe(time.Millisecond, err503)
			p.Done()
		}
	}
	fail(2) // one short of accrualConfig's 3
	before := b.Snapshot()

	if err := b.SetFailureAccrual(FailureAccrual{MaxFailures: 5, MinBackoff: 3 * time.Second, MaxBackoff: 6 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, b.Snapshot(), equateAddrs); diff != "" {
		t.Errorf("endpoint state changed with the failure accrual (-before +after):\n%s", diff)
	}
	want := FailureAccrual{MaxFailures: 5, MinBackoff: 3 * time.Second, MaxBackoff: 6 * time.Second}
	if got := b.FailureAccrual(); got != want {
		t.Errorf("FailureAccrual() = %+v, want %+v", got, want)
	}

	fail(1) // the third: the old threshold, not the new one
	if s := statsOf(t, b, badAddr); s.Ejected || s.Failures != 3 {
		t.Fatalf("after 3 failures of 5: %+v, want 3 failures and in rotation", s)
	}
	fail(2)
	if s := statsOf(t, b, badAddr); !s.Ejected {
		t.Fatalf("after 5 failures of 5: %+v, want ejected", s)
	}
	// The ejection follows the new schedule: 3s, not accrualConfig's 1s.
	clock.Advance(3*time.Second - time.Millisecond)
	assertAvoids(t, b, badAddr, 50)
	clock.Advance(time.Millisecond)
	if p := mustPick(t, b); p.Endpoint().Addr.String() != badAddr {
		t.Errorf("the first pick after the new backoff chose %s, want the probe to %s", p.Endpoint().Addr, badAddr)
	} else {
		p.Done()
	}
}

// TestSetFailureAccrualOff checks that turning accrual off puts an
// ejected endpoint back at once, ejects none after, and that turning it
// on again with the defaults counts failures from there.
func TestSetFailureAccrualOff(t *testing.T) {
	clock := newFakeClock()
	b := newBalancer(t, accrualConfig(clock), endpoints(badAddr, goodAddr))
	ejectBad(t, b)

	if err := b.SetFailureAccrual(FailureAccrual{MaxFailures: -1}); err != nil {
		t.Fatal(err)
	}
	if s := statsOf(t, b, badAddr); s.Ejected || s.Failures != 0 {
		t.Fatalf("after accrual was turned off: %+v, want in rotation with no failure", s)
	}
	for range 20 {
		p := pickAddr(t, b, badAddr)
		p.Observe(time.Millisecond, err503)
		p.Done()
	}
	if s := statsOf(t, b, badAddr); s.Ejected {
		t.Fatalf("ejected with accrual off: %+v", s)
	}

	if err := b.SetFailureAccrual(FailureAccrual{}); err != nil {
		t.Fatal(err)
	}
	want := FailureAccrual{MaxFailures: DefaultMaxFailures, MinBackoff: DefaultMinBackoff, MaxBackoff: DefaultMaxBackoff}
	if got := b.FailureAccrual(); got != want {
		t.Errorf("FailureAccrual() = %+v, want the defaults %+v", got, want)
	}
	// The failures made while accrual was off still count: 20 in a row.
	p := pickAddr(t, b, badAddr)
	p.Observe(time.Millisecond, err503)
	p.Done()
	if s := statsOf(t, b, badAddr); !s.Ejected {
		t.Errorf("a failure past the default threshold did not eject: %+v", s)
	}
}

// TestSetFailureAccrualOffDuringProbe checks that a probe in flight when
// accrual is turned off cannot eject its endpoint again when it fails.
func TestSetFailureAccrualOffDuringProbe(t *testing.T) {
	clock := newFakeClock()
	b := newBalancer(t, accrualConfig(clock), endpoints(badAddr, goodAddr))
	ejectBad(t, b)
	clock.Advance(time.Second)
	probe := mustPick(t, b)
	if probe.Endpoint().Addr.String() != badAddr {
		t.Fatalf("picked %s, want the probe to %s", probe.Endpoint().Addr, badAddr)
	}
	if err := b.SetFailureAccrual(FailureAccrual{MaxFailures: -1}); err != nil {
		t.Fatal(err)
	}
	probe.Observe(time.Millisecond, err503)
	probe.Done()
	if s := statsOf(t, b, badAddr); s.Ejected {
		t.Errorf("a failed probe ejected its endpoint with accrual off: %+v", s)
	}
}

func TestSetFailureAccrualInvalid(t *testing.T) {
	b := newBalancer(t, accrualConfig(newFakeClock()), endpoints(badAddr))
	before := b.FailureAccrual()
	for name, fa := range map[string]FailureAccrual{
		"negative backoff":          {MinBackoff: -time.Second},
		"max below min":             {MinBackoff: time.Minute, MaxBackoff: time.Second},
		"min above the default max": {MinBackoff: 2 * DefaultMaxBackoff},
	} {
		if err := b.SetFailureAccrual(fa); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: SetFailureAccrual = %v, want ErrInvalidConfig", name, err)
		}
	}
	if got := b.FailureAccrual(); got != before {
		t.Errorf("a refused failure accrual changed it from %+v to %+v", before, got)
	}
}

// TestSetFailureAccrualConcurrent changes the failure accrual while
// pickers report failures, with -race; once accrual is turned off for
// good, no endpoint stays ejected, whatever outcomes were in flight.
func TestSetFailureAccrualConcurrent(t *testing.T) {
	addrs := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
	b := newBalancer(t, Config{MaxFailures: 1, MinBackoff: time.Hour, MaxBackoff: time.Hour}, endpoints(addrs...))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				p, ok := b.Pick()
				if !ok {
					t.Error("Pick found no endpoint")
					return
				}
				p.Observe(time.Millisecond, err503)
				p.Done()
			}
		})
	}
	for i := range 200 {
		fa := FailureAccrual{MaxFailures: 1 + i%3, MinBackoff: time.Hour, MaxBackoff: time.Hour}
		if i%2 == 1 {
			fa.MaxFailures = -1
		}
		if err := b.SetFailureAccrual(fa); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetFailureAccrual(FailureAccrual{MaxFailures: -1}); err != nil {
		t.Fatal(err)
	}
	// Outcomes still arriving after the last change must not eject.
	close(stop)
	wg.Wait()
	for _, s := range b.Snapshot() {
		if s.Ejected {
			t.Errorf("%v ejected with accrual off", s.Addr)
		}
	}
	if len(b.Snapshot()) != len(addrs) {
		t.Errorf("endpoints = %v, want %v", b.Snapshot(), addrs)
	}
}
