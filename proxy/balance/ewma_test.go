package balance

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// approxMillis compares float milliseconds to a microsecond.
var approxMillis = cmpopts.EquateApprox(0, 1e-3)

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// TestRTTEstimate drives one endpoint through response samples on a fake
// clock and checks the peak-EWMA estimate.
func TestRTTEstimate(t *testing.T) {
	type sample struct {
		after time.Duration // clock advance before the response
		rtt   time.Duration
		err   error
	}
	tests := []struct {
		name    string
		cfg     Config
		samples []sample
		want    float64 // milliseconds
	}{
		{name: "new endpoint starts from the default RTT", want: 30},
		{name: "configured default RTT", cfg: Config{DefaultRTT: 100 * time.Millisecond}, want: 100},
		{
			name:    "higher sample replaces the estimate at once",
			samples: []sample{{after: time.Second, rtt: 250 * time.Millisecond}},
			want:    250,
		},
		{
			name:    "lower sample with no time elapsed leaves the estimate",
			samples: []sample{{rtt: 100 * time.Millisecond}, {rtt: 10 * time.Millisecond}},
			want:    100,
		},
		{
			// 100·e⁻¹ + 10·(1 − e⁻¹)
			name:    "lower sample one tau later blends by 1/e",
			samples: []sample{{rtt: 100 * time.Millisecond}, {after: 10 * time.Second, rtt: 10 * time.Millisecond}},
			want:    43.109150,
		},
		{
			// 43.109150·e^−½ + 10·(1 − e^−½)
			name: "blends compound from the previous update",
			samples: []sample{
				{rtt: 100 * time.Millisecond},
				{after: 10 * time.Second, rtt: 10 * time.Millisecond},
				{after: 5 * time.Second, rtt: 10 * time.Millisecond},
			},
			want: 30.081757,
		},
		{
			name:    "lower sample long after replaces the estimate",
			samples: []sample{{rtt: 100 * time.Millisecond}, {after: 10 * time.Minute, rtt: 10 * time.Millisecond}},
			want:    10,
		},
		{
			name:    "configured decay sets tau",
			cfg:     Config{Decay: time.Second},
			samples: []sample{{rtt: 100 * time.Millisecond}, {after: time.Second, rtt: 10 * time.Millisecond}},
			want:    43.109150,
		},
		{
			name:    "failures still give a latency sample",
			samples: []sample{{rtt: 80 * time.Millisecond, err: errors.New("503")}},
			want:    80,
		},
		{
			name:    "a zero rtt is no sample",
			samples: []sample{{after: time.Minute}},
			want:    30,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			tc.cfg.Now = clock.Now
			b := newBalancer(t, tc.cfg, endpoints("10.0.0.1:80"))
			for _, s := range tc.samples {
				clock.Advance(s.after)
				complete(t, b, s.rtt, s.err)
			}
			got := millis(statsOf(t, b, "10.0.0.1:80").RTT)
			if diff := cmp.Diff(tc.want, got, approxMillis); diff != "" {
				t.Errorf("RTT estimate in ms (-want +got):\n%s", diff)
			}
		})
	}
}

// TestObserveOutcome checks which outcomes reach the estimate and failure
// accrual.
func TestObserveOutcome(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want EndpointStats
	}{
		{name: "success", want: EndpointStats{RTT: 80 * time.Millisecond}},
		{name: "failure", err: errors.New("503"), want: EndpointStats{RTT: 80 * time.Millisecond, Failures: 1}},
		{
			name: "client cancellation records nothing",
			err:  context.Canceled,
			want: EndpointStats{RTT: DefaultRTT},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBalancer(t, Config{Now: newFakeClock().Now}, endpoints("10.0.0.1:80"))
			p := mustPick(t, b)
			p.Observe(80*time.Millisecond, tc.err)
			p.Observe(500*time.Millisecond, errors.New("second Observe is ignored"))
			p.Done()
			p.Done()
			got := statsOf(t, b, "10.0.0.1:80")
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(EndpointStats{}, "Addr"), equateAddrs); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCost checks the P2C key: estimate × (pending + 1) / weight, with the
// estimate decaying toward zero only while nothing is pending.
func TestCost(t *testing.T) {
	const tau = float64(10 * time.Second)
	tests := []struct {
		name     string
		estimate time.Duration
		pending  int64
		weight   float64
		idle     time.Duration
		want     float64 // milliseconds
	}{
		{name: "idle endpoint costs its estimate", estimate: 30 * time.Millisecond, weight: 1, want: 30},
		{name: "pending requests multiply", estimate: 30 * time.Millisecond, pending: 3, weight: 1, want: 120},
		{name: "weight divides", estimate: 30 * time.Millisecond, pending: 1, weight: 2, want: 30},
		{
			// 30·e⁻¹
			name: "idle estimate decays toward zero", estimate: 30 * time.Millisecond,
			weight: 1, idle: 10 * time.Second, want: 11.036383,
		},
		{
			name: "pending requests hold off the decay", estimate: 30 * time.Millisecond,
			pending: 1, weight: 1, idle: 10 * time.Second, want: 60,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newEndState(float64(tc.estimate), 0)
			st.pending.Store(tc.pending)
			got := st.cost(int64(tc.idle), tau, tc.weight) / float64(time.Millisecond)
			if diff := cmp.Diff(tc.want, got, approxMillis); diff != "" {
				t.Errorf("cost in ms (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPickPrefersLowerCost checks that the cost, pending load included,
// decides between the two choices.
func TestPickPrefersLowerCost(t *testing.T) {
	tests := []struct {
		name     string
		eps      []Endpoint
		fastRTT  time.Duration // observed on 10.0.0.1:80
		holdFast int           // picks kept pending on 10.0.0.1:80
		wantAddr string
	}{
		{
			name: "lower estimate wins", eps: endpoints("10.0.0.1:80", "10.0.0.2:80"),
			fastRTT: 5 * time.Millisecond, wantAddr: "10.0.0.1:80",
		},
		{
			// 5ms × 7 pending = 35ms > the other's 30ms default
			name: "pending load outweighs a lower estimate", eps: endpoints("10.0.0.1:80", "10.0.0.2:80"),
			fastRTT: 5 * time.Millisecond, holdFast: 6, wantAddr: "10.0.0.2:80",
		},
		{
			// 30ms / 4 < 5ms × 2 pending
			name: "weight lowers the cost",
			eps: []Endpoint{
				{Addr: endpoints("10.0.0.1:80")[0].Addr, Weight: 1},
				{Addr: endpoints("10.0.0.2:80")[0].Addr, Weight: 4},
			},
			fastRTT: 5 * time.Millisecond, holdFast: 1, wantAddr: "10.0.0.2:80",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBalancer(t, Config{Now: newFakeClock().Now, Rand: seededRand(7)}, tc.eps)
			fast := b.snap.Load().entries[0].st
			fast.rtt.Store(math.Float64bits(float64(tc.fastRTT)))
			fast.pending.Store(int64(tc.holdFast))
			for range 20 {
				p := mustPick(t, b)
				got := p.Endpoint().Addr.String()
				p.Done()
				if got != tc.wantAddr {
					t.Fatalf("Pick chose %s, want %s", got, tc.wantAddr)
				}
			}
		})
	}
}
