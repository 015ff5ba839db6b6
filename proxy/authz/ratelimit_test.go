package authz

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
)

// The limiters are driven by a fake clock: Admit takes the time, so every
// count below is exact.

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	alice = "spiffe://cluster.local/ns/shop/sa/alice"
	bob   = "spiffe://cluster.local/ns/shop/sa/bob"
	carol = "spiffe://cluster.local/ns/ops/sa/carol"
)

// limiter compiles rl as the limit of Server "web" on port 8080.
func limiter(t testing.TB, rl *inboundv1.RateLimit, opts Options) *Limiter {
	t.Helper()
	p, dropped := Compile(&inboundv1.PodPolicy{Ports: []*inboundv1.PortPolicy{{Port: 8080, Server: "web", RateLimit: rl}}}, opts)
	if len(dropped) > 0 {
		t.Fatalf("dropped: %v", dropped)
	}
	l := p.Limiter(8080)
	if l == nil {
		t.Fatal("no limiter on port 8080")
	}
	return l
}

// admitN sends n requests of c at now and returns how many were admitted
// and the last refusal.
func admitN(c ClientLimit, now time.Time, n int) (admitted int, last Refusal) {
	for range n {
		if r, ok := c.Admit(now); ok {
			admitted++
		} else {
			last = r
		}
	}
	return admitted, last
}

func TestLimiterTotal(t *testing.T) {
	l := limiter(t, &inboundv1.RateLimit{Name: "rl", TotalRps: 100}, Options{})
	c := l.For(alice)

	// A second's worth at once, then the 101st is refused until the next
	// cell, 10ms later.
	if n, _ := admitN(c, t0, 100); n != 100 {
		t.Fatalf("admitted %d of the first 100, want all", n)
	}
	r, ok := c.Admit(t0)
	if want := (Refusal{Scope: ScopeTotal, RetryAfter: 10 * time.Millisecond, RequestsPerSecond: 100}); ok || r != want {
		t.Fatalf("101st: %+v, %v; want refused %+v", r, ok, want)
	}
	if r, ok := c.Admit(t0.Add(9 * time.Millisecond)); ok || r.RetryAfter != time.Millisecond {
		t.Errorf("at 9ms: %+v, %v; want refused for 1ms more", r, ok)
	}
	if n, _ := admitN(c, t0.Add(10*time.Millisecond), 2); n != 1 {
		t.Errorf("at 10ms admitted %d, want 1", n)
	}
	// Other clients share the total.
	if _, ok := l.For("").Admit(t0.Add(10 * time.Millisecond)); ok {
		t.Error("an unauthenticated client got past the exhausted total")
	}
	// An idle second refills the burst, and no more than it.
	if n, _ := admitN(c, t0.Add(2*time.Second), 150); n != 100 {
		t.Errorf("after an idle second admitted %d, want 100", n)
	}
}

// TestLimiterSustained: offered 200 requests per second for 10 s after a
// saturated start, a 100 rps limit admits exactly 100 a second.
func TestLimiterSustained(t *testing.T) {
	c := limiter(t, &inboundv1.RateLimit{TotalRps: 100}, Options{}).For("")
	admitN(c, t0, 200) // the burst goes
	admitted := 0
	for i := range 2000 {
		if _, ok := c.Admit(t0.Add(time.Duration(i+1) * 5 * time.Millisecond)); ok {
			admitted++
		}
	}
	if admitted != 1000 {
		t.Errorf("admitted %d in 10s, want 1000", admitted)
	}
}

func TestLimiterRetryAfter(t *testing.T) {
	tests := []struct {
		rps  uint32
		want time.Duration
	}{
		{rps: 1, want: time.Second},
		{rps: 3, want: 333333334}, // the interval rounds up: never above the rate
		{rps: 1000, want: time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.rps), func(t *testing.T) {
			c := limiter(t, &inboundv1.RateLimit{IdentityRps: tc.rps}, Options{}).For(alice)
			n, r := admitN(c, t0, int(tc.rps)+1)
			if want := (Refusal{Scope: ScopeIdentity, RetryAfter: tc.want, RequestsPerSecond: tc.rps}); n != int(tc.rps) || r != want {
				t.Errorf("admitted %d, refused %+v; want %d, %+v", n, r, tc.rps, want)
			}
		})
	}
}

func TestLimiterPerIdentity(t *testing.T) {
	l := limiter(t, &inboundv1.RateLimit{IdentityRps: 10}, Options{})
	for _, id := range []string{alice, bob} {
		n, r := admitN(l.For(id), t0, 11)
		if n != 10 || r.Scope != ScopeIdentity || r.RetryAfter != 100*time.Millisecond {
			t.Errorf("%s: admitted %d, refused %+v; want 10, then identity for 100ms", id, n, r)
		}
	}
	// Every client without an identity shares one limit, whatever its
	// connection.
	if n, _ := admitN(l.For(""), t0, 6); n != 6 {
		t.Fatalf("unauthenticated: admitted %d of 6", n)
	}
	if n, _ := admitN(l.For(""), t0, 6); n != 4 {
		t.Errorf("another unauthenticated connection: admitted %d, want the 4 left", n)
	}
	if got := l.Identities(); got != 3 {
		t.Errorf("tracks %d identities, want 3 (alice, bob, none)", got)
	}
}

func TestLimiterOverrides(t *testing.T) {
	l := limiter(t, &inboundv1.RateLimit{IdentityRps: 10, Overrides: []*inboundv1.RateLimitOverride{
		{Rps: 50, Identities: []string{alice, "spiffe://cluster.local/ns/ops/*"}},
		{Rps: 2, Identities: []string{alice, bob}}, // alice is the first's
	}}, Options{TrustDomain: "cluster.local"})

	// alice and carol share the first override's 50.
	if n, _ := admitN(l.For(alice), t0, 30); n != 30 {
		t.Errorf("alice: admitted %d of 30", n)
	}
	n, r := admitN(l.For(carol), t0, 30)
	if want := (Refusal{Scope: ScopeOverride, RetryAfter: 20 * time.Millisecond, RequestsPerSecond: 50}); n != 20 || r != want {
		t.Errorf("carol: admitted %d, refused %+v; want the 20 left, then %+v", n, r, want)
	}
	if n, r := admitN(l.For(bob), t0, 3); n != 2 || r.Scope != ScopeOverride || r.RequestsPerSecond != 2 {
		t.Errorf("bob: admitted %d, refused %+v; want 2 of the second override", n, r)
	}
	// Nobody else is named: identity.
	if n, r := admitN(l.For("spiffe://cluster.local/ns/shop/sa/dave"), t0, 11); n != 10 || r.Scope != ScopeIdentity {
		t.Errorf("dave: admitted %d, refused %+v; want 10 by identity", n, r)
	}
	if got := l.Identities(); got != 1 {
		t.Errorf("tracks %d identities, want only dave's: overrides have limits of their own", got)
	}
}

// TestLimiterAllOrNothing: a request must pass every limit of its client,
// and one refused counts against none.
func TestLimiterAllOrNothing(t *testing.T) {
	l := limiter(t, &inboundv1.RateLimit{TotalRps: 10, IdentityRps: 5}, Options{})
	a, b, c := l.For(alice), l.For(bob), l.For(carol)
	if n, r := admitN(a, t0, 8); n != 5 || r.Scope != ScopeIdentity || r.RetryAfter != 200*time.Millisecond {
		t.Fatalf("alice: admitted %d, refused %+v; want 5, then identity", n, r)
	}
	// alice's 3 refused took nothing of the total: bob has its 5.
	if n, _ := admitN(b, t0, 5); n != 5 {
		t.Fatalf("bob: admitted %d of 5", n)
	}
	// bob is past both limits: the longer wait names the scope.
	if r, ok := b.Admit(t0); ok || r.Scope != ScopeIdentity || r.RetryAfter != 200*time.Millisecond {
		t.Errorf("bob's 6th: %+v, %v; want refused by identity for 200ms", r, ok)
	}
	// carol only by the total; her refusals take nothing of her own limit.
	n, r := admitN(c, t0, 20)
	if want := (Refusal{Scope: ScopeTotal, RetryAfter: 100 * time.Millisecond, RequestsPerSecond: 10}); n != 0 || r != want {
		t.Errorf("carol: admitted %d, refused %+v; want none, %+v", n, r, want)
	}
	// 500ms on, the total has 5 again: carol's own 5 are all there.
	if n, _ := admitN(c, t0.Add(500*time.Millisecond), 6); n != 5 {
		t.Errorf("carol at 500ms: admitted %d, want 5", n)
	}
}

// TestLimiterLRU: the identities tracked are bounded; the least recently
// seen goes, and comes back with a full burst.
func TestLimiterLRU(t *testing.T) {
	l := limiter(t, &inboundv1.RateLimit{IdentityRps: 1}, Options{MaxIdentities: 3})
	id := func(s string) string { return "spiffe://cluster.local/ns/shop/sa/" + s }
	admit := func(s string) bool {
		_, ok := l.For(id(s)).Admit(t0)
		return ok
	}
	steps := []struct {
		who  string
		want bool
	}{
		{"a", true}, {"b", true}, {"c", true}, // full
		{"a", false}, // a is now the most recent; b the least
		{"d", true},  // b goes
		{"c", false}, // c is kept; a is now the least recent
		{"b", true},  // back with a fresh burst; a goes
		{"c", false}, {"d", false}, {"b", false},
		{"a", true}, // a was forgotten
	}
	for i, s := range steps {
		if got := admit(s.who); got != s.want {
			t.Errorf("step %d (%s): admitted %v, want %v", i, s.who, got, s.want)
		}
		if n := l.Identities(); n > 3 {
			t.Fatalf("step %d: tracks %d identities, more than 3", i, n)
		}
	}
}

// TestLimiterConcurrent: with -race; concurrent requests at one instant
// are admitted exactly up to the burst.
func TestLimiterConcurrent(t *testing.T) {
	l := limiter(t, &inboundv1.RateLimit{TotalRps: 100, IdentityRps: 100}, Options{MaxIdentities: 4})
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				if _, ok := l.For(fmt.Sprintf("spiffe://cluster.local/ns/shop/sa/c%d", (g+i)%6)).Admit(t0); ok {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != 100 {
		t.Errorf("admitted %d, want the total's 100", got)
	}
	if n := l.Identities(); n != 4 {
		t.Errorf("tracks %d identities, want 4", n)
	}
}

func TestCompileRateLimits(t *testing.T) {
	rl := &inboundv1.RateLimit{Name: "rl", TotalRps: 10}
	msg := &inboundv1.PodPolicy{Ports: []*inboundv1.PortPolicy{
		{Port: 8080, Server: "web", RateLimit: rl},
		{Port: 8081, Server: "web", RateLimit: rl}, // one Server, two ports: one limit
		{Port: 9090, Server: "api"},
	}}
	p, dropped := Compile(msg, Options{})
	if len(dropped) > 0 {
		t.Fatal(dropped)
	}
	web := p.Limiter(8080)
	if web == nil || web != p.Limiter(8081) || web.Name() != "rl" {
		t.Fatalf("limiters %p %p, want one shared, named rl", web, p.Limiter(8081))
	}
	if p.Limiter(9090) != nil || p.Limiter(1) != nil || (*Policy)(nil).Limiter(8080) != nil {
		t.Error("a limiter where no rate limit applies")
	}
	if c := p.Limiter(9090).For(alice); c.Limited() {
		t.Error("the zero ClientLimit limits")
	} else if _, ok := c.Admit(t0); !ok {
		t.Error("the zero ClientLimit refused")
	}

	// The next policy keeps the limiter, and what it counted, while the
	// Server's limit is the same.
	admitN(web.For(alice), t0, 10)
	next, _ := Compile(msg, Options{Previous: p})
	if next.Limiter(8080) != web {
		t.Error("an unchanged limit got a new limiter")
	}
	if _, ok := next.Limiter(8080).For(bob).Admit(t0); ok {
		t.Error("the kept limiter forgot its count")
	}
	changed := &inboundv1.PodPolicy{Ports: []*inboundv1.PortPolicy{{Port: 8080, Server: "web", RateLimit: &inboundv1.RateLimit{Name: "rl", TotalRps: 20}}}}
	if again, _ := Compile(changed, Options{Previous: next}); again.Limiter(8080) == web || again.Limiter(8080) == nil {
		t.Error("a changed limit kept the old limiter")
	}
	if other, _ := Compile(msg, Options{Previous: p, MaxIdentities: 7}); other.Limiter(8080) == web {
		t.Error("a limiter of another identity bound was kept")
	}
}

func TestCompileRateLimitDrops(t *testing.T) {
	tests := []struct {
		name        string
		rl          *inboundv1.RateLimit
		wantLimiter bool
		wantDropped []string
	}{
		{name: "nothing to limit", rl: &inboundv1.RateLimit{Name: "empty"},
			wantDropped: []string{"server web: rate limit empty: sets no limit"}},
		{name: "an override without a rate", wantLimiter: true,
			rl:          &inboundv1.RateLimit{Name: "rl", TotalRps: 5, Overrides: []*inboundv1.RateLimitOverride{{Identities: []string{alice}}}},
			wantDropped: []string{"override 0 has no rate"}},
		{name: "an override whose identities are all invalid, the only limit",
			rl:          &inboundv1.RateLimit{Name: "rl", Overrides: []*inboundv1.RateLimitOverride{{Rps: 5, Identities: []string{"web", "http://x"}}}},
			wantDropped: []string{`pattern "web"`, `pattern "http://x"`, "override 0 matches no client", "sets no limit"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, dropped := Compile(&inboundv1.PodPolicy{Ports: []*inboundv1.PortPolicy{{Port: 8080, Server: "web", RateLimit: tc.rl}}}, Options{})
			if got := p.Limiter(8080) != nil; got != tc.wantLimiter {
				t.Errorf("limiter %v, want %v", got, tc.wantLimiter)
			}
			var got []string
			for _, d := range dropped {
				got = append(got, d.Error())
			}
			if len(got) != len(tc.wantDropped) {
				t.Fatalf("dropped %q, want %d entries like %q", got, len(tc.wantDropped), tc.wantDropped)
			}
			for i, w := range tc.wantDropped {
				if !strings.Contains(got[i], w) {
					t.Errorf("dropped[%d] = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

// BenchmarkAdmit measures a request's rate limit check, total and per
// identity, over a few clients; go test -bench Admit ./proxy/authz.
func BenchmarkAdmit(b *testing.B) {
	l := limiter(b, &inboundv1.RateLimit{TotalRps: 1 << 30, IdentityRps: 1 << 30}, Options{})
	clients := make([]ClientLimit, 16)
	for i := range clients {
		clients[i] = l.For(fmt.Sprintf("spiffe://cluster.local/ns/shop/sa/c%d", i))
	}
	now := t0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		clients[i%len(clients)].Admit(now)
	}
}
