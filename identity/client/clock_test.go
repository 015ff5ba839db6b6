package client_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/identity/client"
)

// fakeClock is a client.Clock that moves only when the test advances it,
// so renewal at 70% of a day-long certificate takes no real time.
type fakeClock struct {
	mu     sync.Mutex // guards the fields below
	now    time.Time
	timers map[*fakeTimer]struct{}
}

type fakeTimer struct {
	clock *fakeClock
	at    time.Time
	ch    chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Now(), timers: make(map[*fakeTimer]struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) client.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.timers[t] = struct{}{}
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	_, ok := t.clock.timers[t]
	delete(t.clock.timers, t)
	return ok
}

// Advance moves the clock by d and fires the timers due by then.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for t := range c.timers {
		if !t.at.After(c.now) {
			t.ch <- c.now
			delete(c.timers, t)
		}
	}
}

// waitTimers waits until exactly n timers are pending and returns how long
// each has left, shortest first. A goroutine that has just been woken
// has not set its next timer yet, so tests wait here before advancing.
func (c *fakeClock) waitTimers(tb testing.TB, n int) []time.Duration {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		var left []time.Duration
		for t := range c.timers {
			left = append(left, t.at.Sub(c.now))
		}
		c.mu.Unlock()
		if len(left) == n {
			slices.Sort(left)
			return left
		}
		if time.Now().After(deadline) {
			tb.Fatalf("waited 10s for %d pending timers, have %d: %v", n, len(left), left)
		}
		time.Sleep(time.Millisecond)
	}
}
