package balance

import (
	"container/heap"
	"net/netip"
	"testing"
	"time"
)

// TestP2CAvoidsSlowEndpoint simulates steady load on three endpoints, two
// answering in 1ms and one in 51ms, with a fake clock and seeded choices, so
// the result is the same on every run and machine. Round robin would send a
// third of the requests to the slow endpoint; peak-EWMA P2C must send it
// under a tenth.
func TestP2CAvoidsSlowEndpoint(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration // between request arrivals
		duration time.Duration // simulated
	}{
		{name: "light load, 1000 rps", interval: time.Millisecond, duration: time.Minute},
		{name: "heavy load, 5000 rps", interval: 200 * time.Microsecond, duration: 30 * time.Second},
	}
	latency := map[netip.AddrPort]time.Duration{
		netip.MustParseAddrPort("10.0.0.1:80"): time.Millisecond,
		netip.MustParseAddrPort("10.0.0.2:80"): time.Millisecond,
		netip.MustParseAddrPort("10.0.0.3:80"): 51 * time.Millisecond,
	}
	slow := netip.MustParseAddrPort("10.0.0.3:80")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			b := newBalancer(t, Config{Now: clock.Now, Rand: seededRand(1)},
				endpoints("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
			counts := simulate(t, b, clock, simulation{
				interval: tc.interval, duration: tc.duration, latency: latency,
			})
			total := 0
			for _, n := range counts {
				total += n
			}
			share := float64(counts[slow]) / float64(total)
			t.Logf("picks per endpoint %v, slow share %.2f%%", counts, 100*share)
			if share >= 0.10 {
				t.Errorf("slow endpoint got %.1f%% of %d picks, want under 10%%", 100*share, total)
			}
			for _, s := range b.Snapshot() {
				if s.Pending != 0 {
					t.Errorf("%v has %d pending after the simulation, want 0", s.Addr, s.Pending)
				}
			}
		})
	}
}

// TestP2CWinsBackRecoveredEndpoint checks that an endpoint which was slow
// gets its share back once it is fast again. Nothing is sent to it while it
// looks slow, so only the idle decay of its estimate lets it be tried again.
func TestP2CWinsBackRecoveredEndpoint(t *testing.T) {
	clock := newFakeClock()
	b := newBalancer(t, Config{Now: clock.Now, Rand: seededRand(2)},
		endpoints("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	latency := map[netip.AddrPort]time.Duration{
		netip.MustParseAddrPort("10.0.0.1:80"): time.Millisecond,
		netip.MustParseAddrPort("10.0.0.2:80"): time.Millisecond,
		netip.MustParseAddrPort("10.0.0.3:80"): 51 * time.Millisecond,
	}
	simulate(t, b, clock, simulation{interval: time.Millisecond, duration: 30 * time.Second, latency: latency})

	recovered := netip.MustParseAddrPort("10.0.0.3:80")
	latency[recovered] = time.Millisecond
	// A minute for the idle decay to bring the 51ms estimate near 1ms (about
	// 40s at tau = 10s), then a minute to measure.
	simulate(t, b, clock, simulation{
		start: 30 * time.Second, interval: time.Millisecond, duration: time.Minute, latency: latency,
	})
	counts := simulate(t, b, clock, simulation{
		start: 90 * time.Second, interval: time.Millisecond, duration: time.Minute, latency: latency,
	})
	share := float64(counts[recovered]) / float64(time.Minute/time.Millisecond)
	t.Logf("picks per endpoint in the last minute %v", counts)
	if share < 0.2 {
		t.Errorf("recovered endpoint got %.1f%% of the picks, want at least 20%%", 100*share)
	}
}

// simulation is a constant-rate load where each endpoint answers with a
// fixed latency.
type simulation struct {
	start    time.Duration // simulated time of the first arrival
	interval time.Duration
	duration time.Duration
	latency  map[netip.AddrPort]time.Duration
}

// completion is a picked request due to finish at a simulated time.
type completion struct {
	at   time.Duration
	rtt  time.Duration
	pick Pick
}

// completionQueue is a min-heap of completions by time (container/heap).
type completionQueue []*completion

func (q completionQueue) Len() int           { return len(q) }
func (q completionQueue) Less(i, j int) bool { return q[i].at < q[j].at }
func (q completionQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *completionQueue) Push(x any)        { *q = append(*q, x.(*completion)) }
func (q *completionQueue) Pop() any {
	old := *q
	c := old[len(old)-1]
	*q = old[:len(old)-1]
	return c
}

// simulate runs s against b on clock and returns the picks per endpoint.
// Before each arrival it finishes, in time order, every request due by then,
// so the balancer sees exactly the pending load a real proxy would.
func simulate(t testing.TB, b *PeakEWMA, clock *fakeClock, s simulation) map[netip.AddrPort]int {
	t.Helper()
	counts := map[netip.AddrPort]int{}
	var q completionQueue
	finishUntil := func(now time.Duration) {
		for q.Len() > 0 && q[0].at <= now {
			c := heap.Pop(&q).(*completion)
			clock.Set(c.at)
			c.pick.Observe(c.rtt, nil)
			c.pick.Done()
		}
	}
	for now := s.start; now < s.start+s.duration; now += s.interval {
		finishUntil(now)
		clock.Set(now)
		p := mustPick(t, b)
		addr := p.Endpoint().Addr
		counts[addr]++
		heap.Push(&q, &completion{at: now + s.latency[addr], rtt: s.latency[addr], pick: p})
	}
	finishUntil(s.start + s.duration + time.Minute)
	return counts
}
