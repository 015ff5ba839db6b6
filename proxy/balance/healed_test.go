package balance

import (
	"testing"
	"time"
)

// TestHealedEndpointGetsItsShareBack: an endpoint that failed fast, was
// ejected and probed back in must take its share again at once, not be
// starved by what it learned while failing.
func TestHealedEndpointGetsItsShareBack(t *testing.T) {
	clock := newFakeClock()
	b := newBalancer(t, Config{Now: clock.Now, Rand: seededRand(7)}, endpoints(badAddr, goodAddr, "10.0.0.3:80"))
	request := func(fail bool) string {
		clock.Advance(20 * time.Millisecond) // 50 requests a second
		p := mustPick(t, b)
		addr := p.Endpoint().Addr.String()
		var err error
		if addr == badAddr && fail {
			err = err503
		}
		p.Observe(2*time.Millisecond, err)
		p.Done()
		return addr
	}
	for range 20 * 50 { // 20s of 503s
		request(true)
	}
	if !statsOf(t, b, badAddr).Ejected {
		t.Fatal("the failing endpoint was not ejected")
	}
	waited := 0
	for statsOf(t, b, badAddr).Ejected { // healed: wait for the probe
		request(false)
		waited++
	}
	got := map[string]int{}
	for range 5 * 50 {
		got[request(false)]++
	}
	t.Logf("probed back after %d requests; the next 250: %v", waited, got)
	if got[badAddr] < 50 {
		t.Errorf("healed endpoint got %d of 250 picks after it was probed back, want about a third", got[badAddr])
	}
}
