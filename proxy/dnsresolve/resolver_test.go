package dnsresolve

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/miekg/dns"
)

func addrs(t testing.TB, ss ...string) []netip.Addr {
	t.Helper()
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// cmpAddr compares netip.Addr values, whose fields are unexported.
var cmpAddr = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// mustLookup looks name up and fails the test on error.
func mustLookup(t testing.TB, r *Resolver, name string) ([]netip.Addr, time.Duration) {
	t.Helper()
	got, ttl, err := r.LookupHost(t.Context(), name)
	if err != nil {
		t.Fatalf("LookupHost(%q): %v", name, err)
	}
	return got, ttl
}

func TestLookupHostAAndAAAA(t *testing.T) {
	srv := startDNS(t)
	srv.setRecords(t,
		"svc.test. 30 IN A 10.0.0.1",
		"svc.test. 20 IN AAAA fd00::1",
		"svc.test. 30 IN A 10.0.0.2",
	)
	r := newTestResolver(t, Config{Now: new(fakeClock).Now}, srv.addr)

	got, ttl := mustLookup(t, r, "svc.test")
	if diff := cmp.Diff(addrs(t, "10.0.0.1", "10.0.0.2", "fd00::1"), got, cmpAddr); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	if ttl != 20*time.Second {
		t.Errorf("ttl = %v, want 20s, the smaller of the A and AAAA TTLs", ttl)
	}
	if diff := cmp.Diff([]string{"svc.test."}, srv.queriesOf("A")); diff != "" {
		t.Errorf("A queries (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"svc.test."}, srv.queriesOf("AAAA")); diff != "" {
		t.Errorf("AAAA queries (-want +got):\n%s", diff)
	}
}

// TestLookupHostTTL checks that an answer is served from the cache until
// its TTL, clamped to [MinTTL, MaxTTL], ends, and asked for again after.
func TestLookupHostTTL(t *testing.T) {
	tests := []struct {
		name      string
		recordTTL int
		wantTTL   time.Duration
	}{
		{name: "record TTL honoured", recordTTL: 30, wantTTL: 30 * time.Second},
		{name: "TTL 0 raised to MinTTL", recordTTL: 0, wantTTL: DefaultMinTTL},
		{name: "a day capped at MaxTTL", recordTTL: 86400, wantTTL: DefaultMaxTTL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startDNS(t)
			srv.setRecords(t, "svc.test. "+strconv.Itoa(tc.recordTTL)+" IN A 10.0.0.1")
			clock := new(fakeClock)
			r := newTestResolver(t, Config{Now: clock.Now}, srv.addr)

			if _, ttl := mustLookup(t, r, "svc.test"); ttl != tc.wantTTL {
				t.Fatalf("first lookup: ttl = %v, want %v", ttl, tc.wantTTL)
			}
			clock.Advance(tc.wantTTL - time.Millisecond)
			if _, ttl := mustLookup(t, r, "svc.test"); ttl != time.Millisecond {
				t.Errorf("cached lookup: ttl = %v, want the 1ms left", ttl)
			}
			if n := len(srv.queriesOf("A")); n != 1 {
				t.Errorf("server saw %d A queries before the TTL ended, want 1", n)
			}
			clock.Advance(time.Millisecond)
			if _, ttl := mustLookup(t, r, "svc.test"); ttl != tc.wantTTL {
				t.Errorf("lookup after expiry: ttl = %v, want %v", ttl, tc.wantTTL)
			}
			if n := len(srv.queriesOf("A")); n != 2 {
				t.Errorf("server saw %d A queries after the TTL ended, want 2", n)
			}
		})
	}
}

// TestLookupHostNegative checks negative caching (RFC 2308 §5): for the
// smaller of the SOA TTL and minimum, capped at NegativeTTL, floored at
// MinTTL when there is no SOA.
func TestLookupHostNegative(t *testing.T) {
	tests := []struct {
		name      string
		records   []string
		soa       [2]uint32 // TTL, minimum; zero means no SOA
		wantRcode int
		wantTTL   time.Duration
		wantMsg   string
	}{
		{
			name: "NXDOMAIN for the SOA minimum", soa: [2]uint32{60, 10},
			wantRcode: dns.RcodeNameError, wantTTL: 10 * time.Second, wantMsg: "no such host (NXDOMAIN)",
		},
		{
			name: "SOA TTL below its minimum", soa: [2]uint32{3, 10},
			wantRcode: dns.RcodeNameError, wantTTL: 3 * time.Second,
		},
		{
			name: "capped at NegativeTTL", soa: [2]uint32{3600, 3600},
			wantRcode: dns.RcodeNameError, wantTTL: DefaultNegativeTTL,
		},
		{
			name:      "no SOA held for MinTTL",
			wantRcode: dns.RcodeNameError, wantTTL: DefaultMinTTL,
		},
		{
			name: "NODATA", records: []string{`missing.test. 60 IN TXT "not an address"`}, soa: [2]uint32{60, 5},
			wantRcode: dns.RcodeSuccess, wantTTL: 5 * time.Second, wantMsg: "no such host (no A or AAAA records)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startDNS(t)
			srv.setRecords(t, tc.records...)
			if tc.soa == [2]uint32{} {
				srv.dropSOA()
			} else {
				srv.setSOA(tc.soa[0], tc.soa[1])
			}
			clock := new(fakeClock)
			r := newTestResolver(t, Config{Now: clock.Now}, srv.addr)

			_, ttl, err := r.LookupHost(t.Context(), "missing.test")
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("LookupHost error = %v, want ErrNotFound", err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not an *Error", err)
			}
			want := Error{Name: "missing.test", Query: "missing.test.", Server: srv.addr, Rcode: tc.wantRcode, Err: ErrNotFound}
			if diff := cmp.Diff(want, *e, cmpopts.EquateErrors()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) || !strings.Contains(err.Error(), srv.addr) {
				t.Errorf("error %q should contain %q and the server %s", err, tc.wantMsg, srv.addr)
			}
			if ttl != tc.wantTTL {
				t.Errorf("ttl = %v, want %v", ttl, tc.wantTTL)
			}

			clock.Advance(tc.wantTTL - time.Millisecond)
			if _, _, err := r.LookupHost(t.Context(), "missing.test"); !errors.Is(err, ErrNotFound) {
				t.Errorf("cached lookup error = %v, want ErrNotFound", err)
			}
			if n := len(srv.queriesOf("A")); n != 1 {
				t.Errorf("server saw %d A queries while the negative answer was cached, want 1", n)
			}
			srv.setRecords(t, "missing.test. 60 IN A 10.0.0.7")
			clock.Advance(time.Millisecond)
			got, _ := mustLookup(t, r, "missing.test")
			if diff := cmp.Diff(addrs(t, "10.0.0.7"), got, cmpAddr); diff != "" {
				t.Errorf("addresses once the negative answer expired (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLookupHostCNAMEChain(t *testing.T) {
	srv := startDNS(t)
	srv.setRecords(t,
		"www.test. 60 IN CNAME edge.test.",
		"edge.test. 20 IN CNAME Origin.Test.",
		"origin.test. 300 IN A 10.0.0.9",
		"origin.test. 300 IN AAAA fd00::9",
	)
	r := newTestResolver(t, Config{Now: new(fakeClock).Now}, srv.addr)

	got, ttl := mustLookup(t, r, "WWW.test")
	if diff := cmp.Diff(addrs(t, "10.0.0.9", "fd00::9"), got, cmpAddr); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	if ttl != 20*time.Second {
		t.Errorf("ttl = %v, want 20s, the smallest along the chain", ttl)
	}
}

// TestLookupHostSearchList checks the libc search rules of resolv.conf(5)
// with the search list of a pod in namespace ns1 and ndots 2.
func TestLookupHostSearchList(t *testing.T) {
	tests := []struct {
		name        string
		lookup      string
		records     []string
		wantQueries []string
		wantErr     error
	}{
		{
			name:        "short name tries the search domains in order",
			lookup:      "api",
			records:     []string{"api.svc.test. 60 IN A 10.0.0.1"},
			wantQueries: []string{"api.ns1.svc.test.", "api.svc.test."},
		},
		{
			name:        "short name falls back to itself last",
			lookup:      "db.example",
			records:     []string{"db.example. 60 IN A 10.0.0.1"},
			wantQueries: []string{"db.example.ns1.svc.test.", "db.example.svc.test.", "db.example."},
		},
		{
			name:        "name with ndots dots is tried as is first",
			lookup:      "api.svc.test",
			records:     []string{"api.svc.test. 60 IN A 10.0.0.1"},
			wantQueries: []string{"api.svc.test."},
		},
		{
			name:        "name with ndots dots then tries the search domains",
			lookup:      "db.ns1.svc",
			records:     []string{"db.ns1.svc.svc.test. 60 IN A 10.0.0.1"},
			wantQueries: []string{"db.ns1.svc.", "db.ns1.svc.ns1.svc.test.", "db.ns1.svc.svc.test."},
		},
		{
			name:        "absolute name skips the search list",
			lookup:      "api.",
			records:     []string{"api.svc.test. 60 IN A 10.0.0.1"},
			wantQueries: []string{"api."},
			wantErr:     ErrNotFound,
		},
		{
			name:        "every candidate missing",
			lookup:      "nope",
			wantQueries: []string{"nope.ns1.svc.test.", "nope.svc.test.", "nope."},
			wantErr:     ErrNotFound,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startDNS(t)
			srv.setRecords(t, tc.records...)
			r := newTestResolver(t, Config{Search: []string{"ns1.svc.test.", "svc.test"}, Ndots: 2}, srv.addr)

			got, _, err := r.LookupHost(t.Context(), tc.lookup)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("LookupHost(%q) error = %v, want %v", tc.lookup, err, tc.wantErr)
			}
			if err == nil && (len(got) != 1 || got[0] != netip.MustParseAddr("10.0.0.1")) {
				t.Errorf("LookupHost(%q) = %v, want [10.0.0.1]", tc.lookup, got)
			}
			if diff := cmp.Diff(tc.wantQueries, srv.queriesOf("A")); diff != "" {
				t.Errorf("A queries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLookupHostTruncatedRetriesOverTCP(t *testing.T) {
	srv := startDNS(t)
	srv.setRecords(t, "big.test. 60 IN A 10.0.0.3")
	srv.setTruncateUDP(true)
	r := newTestResolver(t, Config{}, srv.addr)

	_, _ = mustLookup(t, r, "big.test")
	var gotA []loggedQuery
	for _, q := range srv.queries() {
		if q.Type == "A" {
			gotA = append(gotA, q)
		}
	}
	want := []loggedQuery{{Name: "big.test.", Type: "A", Net: "udp"}, {Name: "big.test.", Type: "A", Net: "tcp"}}
	if diff := cmp.Diff(want, gotA); diff != "" {
		t.Errorf("A queries (-want +got):\n%s", diff)
	}
}

func TestLookupHostServerDown(t *testing.T) {
	down := freeAddr(t)
	r := newTestResolver(t, Config{Timeout: 500 * time.Millisecond}, down)

	_, _, err := r.LookupHost(t.Context(), "svc.test")
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("LookupHost error = %v (%T), want an *Error", err, err)
	}
	if errors.Is(err, ErrNotFound) {
		t.Errorf("error %v is ErrNotFound; an unreachable server proves nothing about the name", err)
	}
	if e.Name != "svc.test" || e.Server != down || e.Rcode != NoResponse {
		t.Errorf("error = %+v, want Name svc.test, Server %s, Rcode NoResponse", e, down)
	}
	if msg := err.Error(); !strings.Contains(msg, "svc.test") || !strings.Contains(msg, down) {
		t.Errorf("error %q should name svc.test and the server %s", msg, down)
	}
}

func TestLookupHostServerFailure(t *testing.T) {
	srv := startDNS(t)
	srv.setRecords(t, "svc.test. 60 IN A 10.0.0.1")
	srv.setRcode(dns.RcodeServerFailure)
	r := newTestResolver(t, Config{Now: new(fakeClock).Now}, srv.addr)

	for i := range 2 {
		_, _, err := r.LookupHost(t.Context(), "svc.test")
		if !errors.Is(err, ErrServerMisbehaving) || !strings.Contains(err.Error(), "SERVFAIL") {
			t.Fatalf("lookup %d: error = %v, want ErrServerMisbehaving with SERVFAIL", i, err)
		}
	}
	if n := len(srv.queriesOf("A")); n != 2 {
		t.Errorf("server saw %d A queries for two lookups, want 2: failures are not cached", n)
	}
}

// TestLookupHostNextServer checks that a server that is down or answers
// SERVFAIL passes the question on to the next.
func TestLookupHostNextServer(t *testing.T) {
	failing := startDNS(t)
	failing.setRcode(dns.RcodeServerFailure)
	good := startDNS(t)
	good.setRecords(t, "svc.test. 60 IN A 10.0.0.1")
	r := newTestResolver(t, Config{Timeout: 500 * time.Millisecond}, freeAddr(t), failing.addr, good.addr)

	got, _ := mustLookup(t, r, "svc.test")
	if diff := cmp.Diff(addrs(t, "10.0.0.1"), got, cmpAddr); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	if n := len(failing.queriesOf("A")); n != 1 {
		t.Errorf("failing server saw %d A queries, want 1", n)
	}
}

// TestLookupHostCoalesces checks that concurrent lookups of one name wait
// for one query instead of sending their own.
func TestLookupHostCoalesces(t *testing.T) {
	srv := startDNS(t)
	srv.setRecords(t, "svc.test. 60 IN A 10.0.0.1")
	release := srv.holdAnswers(t)
	r := newTestResolver(t, Config{}, srv.addr)

	const callers = 10
	results := make(chan error, callers)
	for range callers {
		go func() {
			got, _, err := r.LookupHost(t.Context(), "svc.test")
			if err == nil && (len(got) != 1 || got[0] != netip.MustParseAddr("10.0.0.1")) {
				err = errors.New("wrong addresses")
			}
			results <- err
		}()
	}
	waitFor(t, "all callers to wait for one flight", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		f := r.flights["svc.test"]
		return f != nil && f.waiters == callers
	})
	release()
	for range callers {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
	if n := len(srv.queries()); n != 2 {
		t.Errorf("server saw %d queries, want 2 (one A, one AAAA): %v", n, srv.queries())
	}
}

// TestLookupHostCancel checks that a caller whose context ends stops
// waiting without failing the others, and the query stops with the last.
func TestLookupHostCancel(t *testing.T) {
	srv := startDNS(t)
	srv.setRecords(t, "svc.test. 60 IN A 10.0.0.1")
	release := srv.holdAnswers(t)
	r := newTestResolver(t, Config{}, srv.addr)

	patient := make(chan error, 1)
	go func() {
		_, _, err := r.LookupHost(t.Context(), "svc.test")
		patient <- err
	}()
	waitFor(t, "the first query", func() bool { return len(srv.queries()) > 0 })

	ctx, cancel := context.WithCancel(t.Context())
	impatient := make(chan error, 1)
	go func() {
		_, _, err := r.LookupHost(ctx, "svc.test")
		impatient <- err
	}()
	waitFor(t, "the second caller to join", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.flights["svc.test"] != nil && r.flights["svc.test"].waiters == 2
	})
	cancel()
	if err := <-impatient; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: error = %v, want context.Canceled", err)
	}
	release()
	if err := <-patient; err != nil {
		t.Errorf("other caller: %v", err)
	}

	// With every caller gone the query is abandoned, and the next lookup
	// starts afresh.
	release = srv.holdAnswers(t)
	ctx, cancel = context.WithCancel(t.Context())
	cancel()
	r2 := newTestResolver(t, Config{}, srv.addr)
	if _, _, err := r2.LookupHost(ctx, "svc.test"); !errors.Is(err, context.Canceled) {
		t.Errorf("lookup with a cancelled context: error = %v, want context.Canceled", err)
	}
	release()
	if _, _, err := r2.LookupHost(t.Context(), "svc.test"); err != nil {
		t.Errorf("lookup after an abandoned one: %v", err)
	}
}

func TestLookupHostIPLiteral(t *testing.T) {
	tests := []struct {
		name string
		host string
		want netip.Addr
	}{
		{name: "IPv4", host: "10.1.2.3", want: netip.MustParseAddr("10.1.2.3")},
		{name: "IPv6", host: "fd00::1", want: netip.MustParseAddr("fd00::1")},
		{name: "IPv6 with zone", host: "fe80::1%eth0", want: netip.MustParseAddr("fe80::1%eth0")},
		{name: "IPv4-mapped IPv6", host: "::ffff:10.1.2.3", want: netip.MustParseAddr("::ffff:10.1.2.3")},
	}
	srv := startDNS(t)
	r := newTestResolver(t, Config{}, srv.addr)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ttl := mustLookup(t, r, tc.host)
			if len(got) != 1 || got[0] != tc.want || ttl != 0 {
				t.Errorf("LookupHost(%q) = %v, %v; want [%v], 0", tc.host, got, ttl, tc.want)
			}
		})
	}
	if q := srv.queries(); len(q) != 0 {
		t.Errorf("IP literals caused queries: %v", q)
	}
}

func TestLookupHostInvalidName(t *testing.T) {
	srv := startDNS(t)
	r := newTestResolver(t, Config{}, srv.addr)
	for _, host := range []string{"", ".", "a..b", "-a.test", "a b.test", "[::1]", strings.Repeat("a", 64) + ".test"} {
		_, _, err := r.LookupHost(t.Context(), host)
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("LookupHost(%q) error = %v, want ErrInvalidName", host, err)
		}
	}
	if q := srv.queries(); len(q) != 0 {
		t.Errorf("invalid names caused queries: %v", q)
	}
}

// TestLookupHostCacheSize checks that the cache stays within CacheSize.
func TestLookupHostCacheSize(t *testing.T) {
	srv := startDNS(t)
	srv.setRecords(t, "a.test. 60 IN A 10.0.0.1", "b.test. 60 IN A 10.0.0.2", "c.test. 60 IN A 10.0.0.3")
	r := newTestResolver(t, Config{CacheSize: 2}, srv.addr)
	for _, name := range []string{"a.test", "b.test", "c.test"} {
		mustLookup(t, r, name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cache["c.test"]; !ok || len(r.cache) != 2 {
		t.Errorf("cache holds %d names (c.test present: %v), want 2 including the newest", len(r.cache), ok)
	}
}

func TestNewReadsResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	conf := `# a pod's resolv.conf
nameserver 10.96.0.10
nameserver fd00::10
search shop.svc.cluster.local svc.cluster.local cluster.local
options ndots:5 timeout:3 attempts:4
`
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{ResolvConf: path})
	if err != nil {
		t.Fatal(err)
	}
	type view struct {
		Servers  []string
		Search   []string
		Ndots    int
		Timeout  time.Duration
		Attempts int
	}
	want := view{
		Servers:  []string{"10.96.0.10:53", "[fd00::10]:53"},
		Search:   []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"},
		Ndots:    5,
		Timeout:  3 * time.Second,
		Attempts: 4,
	}
	got := view{r.cfg.servers, r.cfg.search, r.cfg.ndots, r.cfg.timeout, r.cfg.attempts}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("settings from resolv.conf (-want +got):\n%s", diff)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "server without port", cfg: Config{Servers: []string{"10.0.0.1"}}, wantErr: `server "10.0.0.1"`},
		{name: "server by name", cfg: Config{Servers: []string{"dns.test:53"}}, wantErr: `server "dns.test:53"`},
		{name: "MinTTL above MaxTTL", cfg: Config{Servers: []string{"127.0.0.1:53"}, MinTTL: time.Hour}, wantErr: "MinTTL"},
		{name: "negative ndots", cfg: Config{Servers: []string{"127.0.0.1:53"}, Ndots: -1}, wantErr: "Ndots"},
		{name: "missing resolv.conf", cfg: Config{ResolvConf: filepath.Join(t.TempDir(), "none")}, wantErr: "reading"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestLookupHostConcurrentNames runs lookups of several names at once, for
// the race detector.
func TestLookupHostConcurrentNames(t *testing.T) {
	srv := startDNS(t)
	srv.setRecords(t, "a.test. 0 IN A 10.0.0.1", "b.test. 0 IN A 10.0.0.2")
	clock := new(fakeClock)
	r := newTestResolver(t, Config{Now: clock.Now}, srv.addr)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			name := []string{"a.test", "b.test", "c.test"}[i%3]
			clock.Advance(100 * time.Millisecond)
			_, _, err := r.LookupHost(t.Context(), name)
			if err != nil && !(name == "c.test" && errors.Is(err, ErrNotFound)) {
				t.Errorf("LookupHost(%q): %v", name, err)
			}
		})
	}
	wg.Wait()
}
