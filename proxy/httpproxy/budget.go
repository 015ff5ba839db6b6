package httpproxy

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mesh-dev/mesh/proxy/route"
)

// A retry budget stops retry storms (docs/traffic.md 3.4): a backend that
// fails every request would otherwise get Limit+1 times the load from
// every client. Each request a retry policy covers deposits Ratio tokens,
// MinPerSecond tokens a second are granted regardless, and both last TTL;
// a retry takes one token, and with none left the failed response goes
// to the client as it is. Over any TTL, retries then stay within
// Ratio × requests + MinPerSecond × TTL. It is the design of Finagle's
// RetryBudget and tower's TpsBudget, which Linkerd's ServiceProfile
// retries used with the defaults route.DefaultBudget holds.
//
// Deposits and withdrawals go into budgetSlots slots of TTL/budgetSlots
// each; the oldest slot is emptied as time moves past it, so what it held
// expires together, up to a slot's width late.

// budgetSlots is how many slots a TTL is cut into.
const budgetSlots = 10

// tokenUnit is one token in the fixed-point units the slots count in, so
// that a Ratio of 0.2 deposits a whole number.
const tokenUnit = 1_000_000

// budgetEpoch makes the budgets' clock monotonic: they read time.Since it.
var budgetEpoch = time.Now()

// RetryBudget is the retry budget of one backend as seen by one client
// proxy. Deposits are lock-free; withdrawals, which only failed attempts
// make, and moving to the next slot take a small mutex. Safe for
// concurrent use.
type RetryBudget struct {
	deposit int64 // per request, in tokenUnits
	reserve int64 // MinPerSecond × TTL, in tokenUnits
	width   int64 // of a slot, in nanoseconds

	mu    sync.Mutex                // guards moving to the next slot, and withdrawals
	start atomic.Int64              // when the current slot began, since budgetEpoch
	cur   atomic.Int32              // the current slot
	slots [budgetSlots]atomic.Int64 // deposits less withdrawals, in tokenUnits

	used atomic.Int64 // when it was last used, since budgetEpoch, for RetryBudgets' expiry

	// clock reads the time since budgetEpoch; tests set it.
	clock func() time.Duration
}

func sinceEpoch() time.Duration { return time.Since(budgetEpoch) }

// NewRetryBudget returns a full budget of b (its MinPerSecond × TTL
// tokens available at once).
func NewRetryBudget(b route.Budget) *RetryBudget {
	ttl := max(b.TTL, budgetSlots*time.Millisecond)
	rb := &RetryBudget{
		deposit: int64(math.Round(b.Ratio * tokenUnit)),
		reserve: int64(math.Round(float64(b.MinPerSecond) * ttl.Seconds() * tokenUnit)),
		width:   int64(ttl / budgetSlots),
		clock:   sinceEpoch,
	}
	now := int64(rb.clock())
	rb.start.Store(now)
	rb.used.Store(now)
	return rb
}

// Deposit records a request the policy covers: its share of a retry.
func (rb *RetryBudget) Deposit() {
	now := int64(rb.clock())
	rb.advance(now)
	rb.used.Store(now)
	if rb.deposit > 0 {
		rb.slots[rb.cur.Load()].Add(rb.deposit)
	}
}

// Withdraw takes a token for a retry, and reports whether there was one.
func (rb *RetryBudget) Withdraw() bool {
	now := int64(rb.clock())
	rb.advance(now)
	rb.mu.Lock()
	defer rb.mu.Unlock()
	balance := rb.reserve
	for i := range rb.slots {
		balance += rb.slots[i].Load()
	}
	if balance < tokenUnit {
		return false
	}
	rb.slots[rb.cur.Load()].Add(-tokenUnit)
	return true
}

// advance moves to the slot now falls in, emptying those it passes: what
// they held is older than the TTL. A deposit racing with it may land in
// the slot just left, which then expires a slot early; that is all.
func (rb *RetryBudget) advance(now int64) {
	if now-rb.start.Load() < rb.width {
		return
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	start := rb.start.Load()
	n := (now - start) / rb.width
	if n <= 0 {
		return // another goroutine moved on first
	}
	cur := rb.cur.Load()
	for i := range min(n, budgetSlots) {
		rb.slots[(int64(cur)+1+i)%budgetSlots].Store(0)
	}
	rb.cur.Store(int32((int64(cur) + n) % budgetSlots))
	rb.start.Store(start + n*rb.width)
}

// RetryBudgets are a client proxy's retry budgets, one per backend
// authority (a route's backend, or the target of a Service's own policy)
// and budget configuration: every request a retry policy sends to a
// backend shares its budget, whatever its rule. Safe for concurrent use;
// the zero value is empty and ready.
type RetryBudgets struct {
	mu sync.RWMutex
	m  map[budgetKey]*RetryBudget
}

type budgetKey struct {
	authority string
	budget    route.Budget
}

// maxIdleBudgets is how many budgets are kept before those unused for a
// while are let go: authorities come from the controller's tables, so
// they are few, but tables change and the set must not grow for ever.
const maxIdleBudgets = 256

// budgetIdle is how long a budget goes unused before it may be let go,
// at least its TTL: a budget that comes back starts full, as a new one.
const budgetIdle = time.Minute

// Get returns the budget of the requests to authority under b, making it
// on first use.
func (bs *RetryBudgets) Get(authority string, b route.Budget) *RetryBudget {
	k := budgetKey{authority: authority, budget: b}
	bs.mu.RLock()
	rb := bs.m[k]
	bs.mu.RUnlock()
	if rb != nil {
		return rb
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if rb = bs.m[k]; rb != nil {
		return rb
	}
	if bs.m == nil {
		bs.m = map[budgetKey]*RetryBudget{}
	}
	if len(bs.m) >= maxIdleBudgets {
		bs.expireLocked(int64(sinceEpoch()))
	}
	rb = NewRetryBudget(b)
	bs.m[k] = rb
	return rb
}

// expireLocked lets go the budgets unused for budgetIdle and their TTL.
// Called with mu held.
func (bs *RetryBudgets) expireLocked(now int64) {
	for k, rb := range bs.m {
		if now-rb.used.Load() > int64(max(budgetIdle, k.budget.TTL)) {
			delete(bs.m, k)
		}
	}
}

// Len is how many budgets are kept, for tests and the admin pages.
func (bs *RetryBudgets) Len() int {
	bs.mu.RLock()
	defer bs.mu.RUnlock()
	return len(bs.m)
}
