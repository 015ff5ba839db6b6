package httpproxy

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/route"
)

// fakeClock is a budget's clock that tests move by hand.
type fakeClock struct{ now atomic.Int64 }

func (c *fakeClock) read() time.Duration     { return time.Duration(c.now.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.now.Add(int64(d)) }

func clockedBudget(b route.Budget) (*RetryBudget, *fakeClock) {
	c := &fakeClock{}
	rb := NewRetryBudget(b)
	rb.clock = c.read
	rb.start.Store(0)
	return rb, c
}

// withdrawAll takes tokens until there is none, and says how many it got
// (at most limit).
func withdrawAll(rb *RetryBudget, limit int) int {
	n := 0
	for n < limit && rb.Withdraw() {
		n++
	}
	return n
}

// TestRetryBudget: the reserve and the deposits give the retries the
// budget promises over a TTL, and expire with it.
func TestRetryBudget(t *testing.T) {
	t.Run("reserve", func(t *testing.T) {
		rb, clock := clockedBudget(route.Budget{MinPerSecond: 10, TTL: 10 * time.Second})
		if got := withdrawAll(rb, 1000); got != 100 {
			t.Errorf("%d retries from a reserve of 10/s over 10s, want 100", got)
		}
		clock.advance(5 * time.Second)
		if rb.Withdraw() {
			t.Error("a retry halfway through the TTL, with the reserve spent")
		}
		clock.advance(5*time.Second + time.Second) // the withdrawals expired
		if got := withdrawAll(rb, 1000); got != 100 {
			t.Errorf("%d retries once the withdrawals expired, want 100", got)
		}
	})
	t.Run("ratio", func(t *testing.T) {
		rb, clock := clockedBudget(route.Budget{Ratio: 0.2, TTL: 10 * time.Second})
		if rb.Withdraw() {
			t.Error("a retry from an empty budget")
		}
		for range 100 {
			rb.Deposit()
		}
		if got := withdrawAll(rb, 1000); got != 20 {
			t.Errorf("%d retries after 100 requests at 20%%, want 20", got)
		}
		for range 50 {
			rb.Deposit()
		}
		clock.advance(11 * time.Second) // deposits and withdrawals all expired
		if rb.Withdraw() {
			t.Error("a retry from deposits older than the TTL")
		}
	})
	t.Run("sliding", func(t *testing.T) {
		// Deposits expire slot by slot: those of the first second go
		// first.
		rb, clock := clockedBudget(route.Budget{Ratio: 1, TTL: 10 * time.Second})
		for range 10 {
			rb.Deposit()
		}
		clock.advance(5 * time.Second)
		for range 10 {
			rb.Deposit()
		}
		clock.advance(6 * time.Second) // the first ten expired, the others not
		if got := withdrawAll(rb, 1000); got != 10 {
			t.Errorf("%d retries, want the 10 of the deposits younger than the TTL", got)
		}
	})
	t.Run("none", func(t *testing.T) {
		rb, _ := clockedBudget(route.Budget{TTL: 10 * time.Second})
		for range 100 {
			rb.Deposit()
		}
		if rb.Withdraw() {
			t.Error("a retry from a budget of no ratio and no reserve")
		}
	})
}

// TestRetryBudgetConcurrent: concurrent requests and retries never take
// more than the budget holds. Run it with -race.
func TestRetryBudgetConcurrent(t *testing.T) {
	rb := NewRetryBudget(route.Budget{Ratio: 0.1, MinPerSecond: 1, TTL: time.Minute})
	var retries atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				rb.Deposit()
				if rb.Withdraw() {
					retries.Add(1)
				}
			}
		})
	}
	wg.Wait()
	// 8,000 requests at 10 %, plus the reserve of 60.
	if got := retries.Load(); got > 860 || got < 800 {
		t.Errorf("%d retries, want 860 at most (and close to it)", got)
	}
}

// TestRetryBudgets: requests to one backend under one configuration share
// a budget; another backend or configuration has its own; budgets unused
// for long are let go once there are many, those in use kept.
func TestRetryBudgets(t *testing.T) {
	var bs RetryBudgets
	b := route.DefaultBudget
	a := bs.Get("web.shop.svc.cluster.local:80", b)
	if bs.Get("web.shop.svc.cluster.local:80", b) != a {
		t.Error("two budgets for one backend")
	}
	if bs.Get("api.shop.svc.cluster.local:80", b) == a {
		t.Error("one budget for two backends")
	}
	other := b
	other.Ratio = 0.5
	if bs.Get("web.shop.svc.cluster.local:80", other) == a {
		t.Error("one budget for two configurations")
	}
	a.used.Store(int64(sinceEpoch() - 2*time.Minute)) // long unused
	for i := range maxIdleBudgets {
		bs.Get(strconv.Itoa(i), b)
	}
	if bs.Len() != maxIdleBudgets+2 {
		t.Errorf("%d budgets kept, want the %d in use", bs.Len(), maxIdleBudgets+2)
	}
	if bs.Get("web.shop.svc.cluster.local:80", b) == a {
		t.Error("a budget unused for long was kept past the bound")
	}
}
