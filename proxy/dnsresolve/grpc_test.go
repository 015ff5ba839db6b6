package dnsresolve

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// recordingCC is a resolver.ClientConn that records what the resolver
// tells gRPC. Safe for concurrent use.
type recordingCC struct {
	events chan ccEvent
}

// ccEvent is one call: UpdateState with addrs, or ReportError with err.
type ccEvent struct {
	addrs []string
	err   error
}

func newRecordingCC() *recordingCC { return &recordingCC{events: make(chan ccEvent, 1000)} }

func (c *recordingCC) UpdateState(s resolver.State) error {
	ev := ccEvent{addrs: []string{}}
	for _, a := range s.Addresses {
		ev.addrs = append(ev.addrs, a.Addr)
	}
	c.events <- ev
	return nil
}

func (c *recordingCC) ReportError(err error) { c.events <- ccEvent{err: err} }

func (c *recordingCC) NewAddress([]resolver.Address) { panic("deprecated NewAddress called") }

func (c *recordingCC) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

// next returns the next call, failing the test after 10s.
func (c *recordingCC) next(t testing.TB) ccEvent {
	t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the resolver to call the ClientConn")
		return ccEvent{}
	}
}

// buildWatcher builds a resolver for target with b and closes it when the
// test ends.
func buildWatcher(t testing.TB, b *Builder, target string) (resolver.Resolver, *recordingCC) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	cc := newRecordingCC()
	w, err := b.Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatalf("Build(%q): %v", target, err)
	}
	t.Cleanup(w.Close)
	return w, cc
}

func TestGRPCResolverFollowsTTL(t *testing.T) {
	srv := startDNS(t)
	srv.setRecords(t, "svc.test. 0 IN A 10.0.0.1", "svc.test. 0 IN AAAA fd00::1")
	r := newTestResolver(t, Config{MinTTL: 20 * time.Millisecond}, srv.addr)
	b := NewBuilder(t.Context(), r, BuilderConfig{})
	_, cc := buildWatcher(t, b, "meshdns:///svc.test:8086")

	if diff := cmp.Diff(ccEvent{addrs: []string{"10.0.0.1:8086", "[fd00::1]:8086"}}, cc.next(t),
		cmp.AllowUnexported(ccEvent{})); diff != "" {
		t.Fatalf("first state (-want +got):\n%s", diff)
	}
	srv.setRecords(t, "svc.test. 0 IN A 10.0.0.2")
	if diff := cmp.Diff(ccEvent{addrs: []string{"10.0.0.2:8086"}}, cc.next(t),
		cmp.AllowUnexported(ccEvent{})); diff != "" {
		t.Errorf("state after the TTL expired (-want +got):\n%s", diff)
	}
}

// TestGRPCResolverKeepsAddressesOnError checks that a failed resolution is
// reported without taking away the addresses, and that recovery updates
// the state again even with the same addresses.
func TestGRPCResolverKeepsAddressesOnError(t *testing.T) {
	srv := startDNS(t)
	srv.setRecords(t, "svc.test. 0 IN A 10.0.0.1")
	r := newTestResolver(t, Config{MinTTL: 20 * time.Millisecond}, srv.addr)
	b := NewBuilder(t.Context(), r, BuilderConfig{MinResolveInterval: 20 * time.Millisecond})
	_, cc := buildWatcher(t, b, "meshdns:///svc.test:8086")

	if ev := cc.next(t); ev.err != nil || len(ev.addrs) != 1 {
		t.Fatalf("first call = %+v, want one address", ev)
	}
	srv.setRcode(dns.RcodeServerFailure)
	ev := cc.next(t)
	if !errors.Is(ev.err, ErrServerMisbehaving) || !strings.Contains(ev.err.Error(), "svc.test") {
		t.Fatalf("call after SERVFAIL = %+v, want ReportError naming svc.test", ev)
	}
	srv.setRcode(dns.RcodeSuccess)
	for {
		ev := cc.next(t)
		if ev.err != nil {
			continue // retries while the rcode was still SERVFAIL
		}
		if diff := cmp.Diff([]string{"10.0.0.1:8086"}, ev.addrs); diff != "" {
			t.Errorf("state after recovery (-want +got):\n%s", diff)
		}
		break
	}
}

// TestGRPCResolverResolveNow checks that ResolveNow skips the cache but is
// rate-limited: a burst of calls makes one query, MinResolveInterval after
// the last.
func TestGRPCResolverResolveNow(t *testing.T) {
	const interval = 200 * time.Millisecond
	srv := startDNS(t)
	srv.setRecords(t, "svc.test. 300 IN A 10.0.0.1")
	r := newTestResolver(t, Config{}, srv.addr)
	b := NewBuilder(t.Context(), r, BuilderConfig{MinResolveInterval: interval})
	w, cc := buildWatcher(t, b, "meshdns:///svc.test:8086")

	if ev := cc.next(t); ev.err != nil {
		t.Fatal(ev.err)
	}
	first := time.Now()
	srv.setRecords(t, "svc.test. 300 IN A 10.0.0.2")
	for range 20 {
		w.ResolveNow(resolver.ResolveNowOptions{})
	}
	ev := cc.next(t)
	if diff := cmp.Diff([]string{"10.0.0.2:8086"}, ev.addrs); diff != "" {
		t.Errorf("state after ResolveNow (-want +got):\n%s", diff)
	}
	// The first resolution started a little before first, so allow slack.
	if gap := time.Since(first); gap < interval*3/4 {
		t.Errorf("re-resolved %v after the first resolution, want no sooner than %v", gap, interval)
	}
	if n := len(srv.queriesOf("A")); n != 2 {
		t.Errorf("server saw %d A queries, want 2: one at start, one for the burst of ResolveNow", n)
	}
}

func TestBuilderRejectsBadTargets(t *testing.T) {
	tests := []struct {
		name    string
		target  string
		wantErr string
	}{
		{name: "no port", target: "meshdns:///svc.test", wantErr: "want host:port"},
		{name: "bad port", target: "meshdns:///svc.test:http", wantErr: `port "http"`},
		{name: "bad name", target: "meshdns:///svc..test:80", wantErr: "invalid host name"},
		{name: "DNS server in authority", target: "meshdns://10.0.0.10:53/svc.test:80", wantErr: "authority"},
	}
	r := newTestResolver(t, Config{}, "127.0.0.1:53")
	b := NewBuilder(t.Context(), r, BuilderConfig{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.Build(resolver.Target{URL: *u}, newRecordingCC(), resolver.BuildOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Build(%q) error = %v, want one containing %q", tc.target, err, tc.wantErr)
			}
		})
	}
}

// healthServer is a real gRPC health server; tests tell servers apart by
// the peer address of their RPCs.
func startHealthServer(t testing.TB, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Serve(ln) })
	t.Cleanup(func() {
		s.Stop()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestGRPCClientFollowsDNSChange dials a real health server through the
// resolver and checks that once the DNS answer names another server and
// its TTL expires, new RPCs go there.
//
// A DNS answer carries addresses but not ports, so the second server needs
// another address with the same port: it listens on 127.0.0.2, which is
// loopback too on Linux (the whole of 127.0.0.0/8 is routed to lo).
func TestGRPCClientFollowsDNSChange(t *testing.T) {
	oldAddr := startHealthServer(t, "127.0.0.1:0")
	port := portOf(t, oldAddr)
	newAddr := startHealthServer(t, net.JoinHostPort("127.0.0.2", port))

	srv := startDNS(t)
	srv.setRecords(t, "svc.test. 1 IN A 127.0.0.1")
	r := newTestResolver(t, Config{}, srv.addr)
	b := NewBuilder(t.Context(), r, BuilderConfig{})
	conn, err := grpc.NewClient("meshdns:///svc.test:"+port,
		grpc.WithResolvers(b),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithNoProxy(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := healthpb.NewHealthClient(conn)

	// check makes one RPC and returns the address of the server that
	// answered it.
	check := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		var p peer.Peer
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
			t.Fatalf("Check: %v", err)
		}
		return p.Addr.String()
	}
	if got := check(); got != oldAddr {
		t.Fatalf("first RPC went to %s, want %s", got, oldAddr)
	}

	srv.setRecords(t, "svc.test. 1 IN A 127.0.0.2")
	start := time.Now()
	waitFor(t, "RPCs to reach "+newAddr, func() bool { return check() == newAddr })
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("switching took %v, want about the 1s TTL", took)
	}
	for range 5 {
		if got := check(); got != newAddr {
			t.Errorf("RPC after the switch went to %s, want %s", got, newAddr)
		}
	}
}

// TestWatcherBackoff walks the retry schedule of failed resolutions.
func TestWatcherBackoff(t *testing.T) {
	tests := []struct {
		name        string
		minInterval time.Duration
		failures    int
		want        time.Duration
	}{
		{name: "first failure waits the interval", minInterval: 5 * time.Second, failures: 1, want: 5 * time.Second},
		{name: "doubles", minInterval: 5 * time.Second, failures: 3, want: 20 * time.Second},
		{name: "capped", minInterval: 5 * time.Second, failures: 10, want: maxRetryInterval},
		{name: "no overflow after many failures", minInterval: 5 * time.Second, failures: 1 << 20, want: maxRetryInterval},
		{name: "interval above the cap", minInterval: time.Hour, failures: 1, want: maxRetryInterval},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &watcher{minInterval: tc.minInterval}
			st := w.newState()
			var got time.Duration
			for range tc.failures {
				got = st.retry.Next()
			}
			if got != tc.want {
				t.Errorf("wait after %d failures = %v, want %v", tc.failures, got, tc.want)
			}
		})
	}
}
