package balance

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var err503 = errors.New("503 Service Unavailable")

const (
	badAddr  = "10.0.0.1:80"
	goodAddr = "10.0.0.2:80"
)

// accrualConfig ejects after 3 failures for 1s, 2s, then 4s at most,
// without jitter so the schedule is exact.
func accrualConfig(clock *fakeClock) Config {
	return Config{
		Now: clock.Now, Rand: seededRand(3),
		MaxFailures: 3, MinBackoff: time.Second, MaxBackoff: 4 * time.Second, Jitter: -1,
	}
}

// pickAddr picks until addr comes up and returns that Pick; the others are
// done without an outcome.
func pickAddr(t testing.TB, b *PeakEWMA, addr string) Pick {
	t.Helper()
	for range 200 {
		p := mustPick(t, b)
		if p.Endpoint().Addr.String() == addr {
			return p
		}
		p.Done()
	}
	t.Fatalf("Pick never chose %s", addr)
	return Pick{}
}

// failOn reports the outcome of one pick: a 503 from addr, success elsewhere.
func failOn(t testing.TB, b *PeakEWMA, addr string) string {
	t.Helper()
	p := mustPick(t, b)
	got := p.Endpoint().Addr.String()
	var err error
	if got == addr {
		err = err503
	}
	p.Observe(time.Millisecond, err)
	p.Done()
	return got
}

// assertAvoids makes n picks and fails if any chose addr.
func assertAvoids(t testing.TB, b *PeakEWMA, addr string, n int) {
	t.Helper()
	for range n {
		if got := failOn(t, b, addr); got == addr {
			t.Fatalf("Pick chose ejected endpoint %s", addr)
		}
	}
}

// ejectBad sends traffic until badAddr has failed MaxFailures times in a row.
func ejectBad(t testing.TB, b *PeakEWMA) {
	t.Helper()
	for range 3 {
		p := pickAddr(t, b, badAddr)
		p.Observe(time.Millisecond, err503)
		p.Done()
	}
	if s := statsOf(t, b, badAddr); !s.Ejected {
		t.Fatalf("%s not ejected after 3 failures: %+v", badAddr, s)
	}
}

// TestFailureAccrualBackoff walks one endpoint through ejection, failed
// probes with doubling backoff up to the cap, and the probe that heals it.
func TestFailureAccrualBackoff(t *testing.T) {
	clock := newFakeClock()
	b := newBalancer(t, accrualConfig(clock), endpoints(badAddr, goodAddr))
	ejectBad(t, b)
	assertAvoids(t, b, badAddr, 50)

	steps := []struct {
		name       string
		backoff    time.Duration
		probeFails bool
	}{
		{name: "first ejection lasts MinBackoff", backoff: time.Second, probeFails: true},
		{name: "a failed probe doubles the backoff", backoff: 2 * time.Second, probeFails: true},
		{name: "doubling stops at MaxBackoff", backoff: 4 * time.Second, probeFails: true},
		{name: "a successful probe restores the endpoint", backoff: 4 * time.Second},
	}
	for _, step := range steps {
		clock.Advance(step.backoff - time.Millisecond)
		assertAvoids(t, b, badAddr, 50)
		clock.Advance(time.Millisecond)

		probe := mustPick(t, b)
		if got := probe.Endpoint().Addr.String(); got != badAddr {
			t.Fatalf("%s: first pick after the backoff chose %s, want the probe to %s", step.name, got, badAddr)
		}
		// Only one probe at a time: the rest of the traffic goes elsewhere.
		assertAvoids(t, b, badAddr, 50)
		var err error
		if step.probeFails {
			err = err503
		}
		probe.Observe(time.Millisecond, err)
		probe.Done()

		got := statsOf(t, b, badAddr)
		want := EndpointStats{Addr: got.Addr, RTT: got.RTT} // healed
		if step.probeFails {
			// Probes do not add to the run of failures that ejected it.
			want.Failures, want.Ejected = 3, true
		}
		if diff := cmp.Diff(want, got, equateAddrs); diff != "" {
			t.Errorf("%s: stats after the probe (-want +got):\n%s", step.name, diff)
		}
	}
	p := pickAddr(t, b, badAddr) // back in rotation
	p.Done()
}

// TestFailureAccrualCounting checks what counts toward an ejection.
func TestFailureAccrualCounting(t *testing.T) {
	tests := []struct {
		name        string
		maxFailures int
		outcomes    []error // reported in order by picks of badAddr
		wantEjected bool
	}{
		{name: "consecutive failures eject", maxFailures: 3, outcomes: []error{err503, err503, err503}, wantEjected: true},
		{name: "a success resets the count", maxFailures: 3, outcomes: []error{err503, err503, nil, err503, err503}},
		{
			name: "cancellations neither count nor reset", maxFailures: 3,
			outcomes: []error{err503, context.Canceled, err503, context.Canceled, err503}, wantEjected: true,
		},
		{name: "negative MaxFailures turns accrual off", maxFailures: -1, outcomes: repeat(err503, 50)},
		{name: "zero MaxFailures means 7", outcomes: repeat(err503, 6)},
		{name: "the 7th failure ejects by default", outcomes: repeat(err503, 7), wantEjected: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := accrualConfig(newFakeClock())
			cfg.MaxFailures = tc.maxFailures
			b := newBalancer(t, cfg, endpoints(badAddr, goodAddr))
			for _, err := range tc.outcomes {
				p := pickAddr(t, b, badAddr)
				p.Observe(time.Millisecond, err)
				p.Done()
			}
			if got := statsOf(t, b, badAddr).Ejected; got != tc.wantEjected {
				t.Errorf("Ejected = %v, want %v", got, tc.wantEjected)
			}
		})
	}
}

func repeat(err error, n int) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// TestFailureAccrualOnlyProbeDecides checks that outcomes of requests sent
// before the ejection do not end it.
func TestFailureAccrualOnlyProbeDecides(t *testing.T) {
	clock := newFakeClock()
	b := newBalancer(t, accrualConfig(clock), endpoints(badAddr, goodAddr))
	late := pickAddr(t, b, badAddr)
	// Load the good endpoint so that, with late pending, the bad one is
	// still the cheaper choice (30ms × 2 against 30ms × 3).
	for range 2 {
		p := pickAddr(t, b, goodAddr)
		defer p.Done()
	}
	ejectBad(t, b)
	late.Observe(time.Millisecond, nil)
	late.Done()
	if s := statsOf(t, b, badAddr); !s.Ejected {
		t.Errorf("a success sent before the ejection restored the endpoint: %+v", s)
	}
}

// TestFailureAccrualAbandonedProbe checks that a probe ending without an
// outcome lets the next Pick probe again instead of stranding the endpoint.
func TestFailureAccrualAbandonedProbe(t *testing.T) {
	tests := []struct {
		name string
		end  func(*Pick)
	}{
		{name: "Done without Observe", end: func(p *Pick) { p.Done() }},
		{name: "client cancelled", end: func(p *Pick) {
			p.Observe(time.Millisecond, context.Canceled)
			p.Done()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			b := newBalancer(t, accrualConfig(clock), endpoints(badAddr, goodAddr))
			ejectBad(t, b)
			clock.Advance(time.Second)
			probe := mustPick(t, b)
			if got := probe.Endpoint().Addr.String(); got != badAddr {
				t.Fatalf("first pick after the backoff chose %s, want the probe to %s", got, badAddr)
			}
			tc.end(&probe)
			if got := failOn(t, b, ""); got != badAddr {
				t.Fatalf("next pick chose %s, want a new probe to %s", got, badAddr)
			}
			if s := statsOf(t, b, badAddr); s.Ejected {
				t.Errorf("successful probe left the endpoint ejected: %+v", s)
			}
		})
	}
}

// TestAllEjectedStillPicks checks panic mode: with every endpoint ejected,
// Pick still spreads traffic over them, and only probes end the ejections.
func TestAllEjectedStillPicks(t *testing.T) {
	clock := newFakeClock()
	b := newBalancer(t, accrualConfig(clock), endpoints(badAddr, goodAddr))
	for _, addr := range []string{badAddr, goodAddr} {
		for range 3 {
			p := pickAddr(t, b, addr)
			p.Observe(time.Millisecond, err503)
			p.Done()
		}
	}
	counts := map[string]int{}
	for range 100 {
		counts[failOn(t, b, "")]++ // the backends healed; panic picks succeed
	}
	if counts[badAddr] == 0 || counts[goodAddr] == 0 {
		t.Errorf("panic-mode picks %v, want both endpoints used", counts)
	}
	for _, addr := range []string{badAddr, goodAddr} {
		if s := statsOf(t, b, addr); !s.Ejected {
			t.Errorf("%s: a panic-mode success ended the ejection: %+v", addr, s)
		}
	}

	clock.Advance(time.Second)
	for range 2 {
		failOn(t, b, "") // the two probes
	}
	for _, addr := range []string{badAddr, goodAddr} {
		if s := statsOf(t, b, addr); s.Ejected {
			t.Errorf("%s: still ejected after a successful probe: %+v", addr, s)
		}
	}
}

// TestBackoff checks that the Config reaches the ejection schedule: its
// bounds, its jitter (the default one included) and its random source.
func TestBackoff(t *testing.T) {
	tests := []struct {
		name   string
		jitter float64
		bits   uint64 // what Rand returns
		n      int    // consecutive ejections
		want   time.Duration
	}{
		{name: "first ejection lasts MinBackoff", jitter: -1, n: 1, want: time.Second},
		{name: "doubles", jitter: -1, n: 3, want: 4 * time.Second},
		{name: "capped at MaxBackoff", jitter: -1, n: 10, want: 8 * time.Second},
		{name: "default jitter of one half", bits: 1 << 63, n: 2, want: 1500 * time.Millisecond},
		{name: "Rand draws the jitter", jitter: 0.25, bits: 1 << 63, n: 10, want: 7 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := New(Config{
				MinBackoff: time.Second, MaxBackoff: 8 * time.Second, Jitter: tc.jitter,
				Rand: func() uint64 { return tc.bits },
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := b.accrual.Load().ejection.Delay(tc.n); got != tc.want {
				t.Errorf("ejection %d lasts %v, want %v", tc.n, got, tc.want)
			}
		})
	}
}
