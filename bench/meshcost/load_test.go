package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echoServer is a stand-in for `demo echo` that counts what it answered
// by Host, and can hold one request (the stallAt-th) for stall, and
// answer status (0: 200) to those after the statusAfter-th.
type echoServer struct {
	stallAt     int64
	stall       time.Duration
	status      int
	statusAfter int64
	n           atomic.Int64
	mu          sync.Mutex
	hosts       map[string]int
	userAgent   string
}

func (s *echoServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := s.n.Add(1)
	s.mu.Lock()
	s.hosts[r.Host]++
	s.userAgent = r.UserAgent()
	s.mu.Unlock()
	if s.stall > 0 && i == s.stallAt {
		select {
		case <-time.After(s.stall):
		case <-r.Context().Done(): // the client is gone
			return
		}
	}
	if s.status != 0 && i > s.statusAfter {
		http.Error(w, "no", s.status)
		return
	}
	w.Write([]byte("echo from test\n"))
}

func startEcho(t testing.TB, s *echoServer) (addr string, dials *atomic.Int32, dial func(ctx context.Context, network, addr string) (net.Conn, error)) {
	t.Helper()
	s.hosts = map[string]int{}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	dials = new(atomic.Int32)
	var d net.Dialer
	return strings.TrimPrefix(srv.URL, "http://"), dials, func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}
}

// startLoad starts a load now.
func startLoad(t testing.TB, ctx context.Context, cfg loadConfig) *load {
	t.Helper()
	ld, err := newLoad(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ld.Start(ctx, time.Now())
	return ld
}

// TestLoadSchedule runs two turns of half a second at 200 RPS against a
// real server, in the second slice of each pair: every request of the
// schedule is sent once, on time, over the connections opened before it
// started, and answered.
func TestLoadSchedule(t *testing.T) {
	s := &echoServer{}
	addr, dials, dial := startEcho(t, s)
	ld := startLoad(t, t.Context(), loadConfig{Addr: addr, Host: "server:8080", Rate: 200, Slice: 500 * time.Millisecond, Turns: 2, Phase: 1,
		Conns: 4, Timeout: 2 * time.Second, Dial: dial})
	res := ld.Wait()
	if len(res.samples) != 200 || res.failures != 0 || res.firstErr != nil {
		t.Fatalf("%d samples, %d failures (first %v), want 200 and none", len(res.samples), res.failures, res.firstErr)
	}
	// Each of the 4 connections carried a first request before the
	// schedule.
	if got := s.n.Load(); got != 204 {
		t.Errorf("the server answered %d requests, want 200 and 4 first ones", got)
	}
	if s.hosts["server:8080"] != 204 || s.userAgent != "mesh-bench-meshcost" {
		t.Errorf("the server saw hosts %v and User-Agent %q", s.hosts, s.userAgent)
	}
	if got := dials.Load(); got != 4 {
		t.Errorf("%d connections dialled, want the 4 kept alive", got)
	}
	for i, smp := range res.samples {
		// Turn 0 is the slice [0.5s, 1s), turn 1 [1.5s, 2s).
		want := time.Duration(i%100)*5*time.Millisecond + time.Duration(1+2*(i/100))*500*time.Millisecond
		if smp.due != want {
			t.Fatalf("sample %d due at %v, want %v: the samples are not the schedule in order", i, smp.due, want)
		}
		if !smp.ok || smp.sent < smp.due || smp.done < smp.sent {
			t.Fatalf("sample %d: %+v: want answered, sent no earlier than due, done after sent", i, smp)
		}
	}
	if l := summarize(res.samples); l.lateP99 > 50*time.Millisecond || l.waited > 20 {
		t.Errorf("late p99 %v, %d of 200 waited for a connection on an idle loopback: the schedule is not kept", l.lateP99, l.waited)
	}
}

// TestLoadCoordinatedOmission holds one request for 300 ms on a single
// connection. A closed-loop client would show one slow request; here
// every request due during the stall waited for it, and its latency says
// so.
func TestLoadCoordinatedOmission(t *testing.T) {
	s := &echoServer{stallAt: 50, stall: 300 * time.Millisecond}
	addr, _, dial := startEcho(t, s)
	ld := startLoad(t, t.Context(), loadConfig{Addr: addr, Host: "server:8080", Rate: 100, Slice: 2 * time.Second, Turns: 1, Conns: 1, Timeout: 2 * time.Second, Dial: dial})
	res := ld.Wait()
	if len(res.samples) != 200 || res.failures != 0 {
		t.Fatalf("%d samples, %d failures, want 200 and none", len(res.samples), res.failures)
	}
	// Requests 50..79 were due during the stall (10 ms apart): each waited
	// until it ended, the first the longest.
	var slow int
	for _, smp := range res.samples {
		if smp.latency() >= 100*time.Millisecond {
			slow++
		}
	}
	if slow < 15 {
		t.Errorf("%d requests took 100 ms or more, want the 20 or so due in the first 200 ms of the stall", slow)
	}
	l := summarize(res.samples)
	if l.p99 < 200*time.Millisecond || l.max < 300*time.Millisecond {
		t.Errorf("p99 %v, max %v: want the stall in p99 and max", l.p99, l.max)
	}
}

// TestLoadFailures counts answers other than 200 as failures, and keeps
// the connection they came on.
func TestLoadFailures(t *testing.T) {
	s := &echoServer{status: http.StatusServiceUnavailable, statusAfter: 2}
	addr, dials, dial := startEcho(t, s)
	ld := startLoad(t, t.Context(), loadConfig{Addr: addr, Host: "server:8080", Rate: 100, Slice: 200 * time.Millisecond, Turns: 1, Conns: 2, Timeout: time.Second, Dial: dial})
	res := ld.Wait()
	if len(res.samples) != 20 || res.failures != 20 {
		t.Fatalf("%d samples, %d failures, want 20 of 20", len(res.samples), res.failures)
	}
	if res.firstErr == nil || !strings.Contains(res.firstErr.Error(), "503") {
		t.Errorf("first error %v, want the 503", res.firstErr)
	}
	if l := summarize(res.samples); l.failed != 20 {
		t.Errorf("summary counts %d failed, want 20", l.failed)
	}
	if got := dials.Load(); got != 2 {
		t.Errorf("%d connections dialled, want 2: a 503 with keep-alive does not cost a connection", got)
	}
}

// TestLoadStop ends a long schedule with its context: Wait returns soon,
// every connection closed.
func TestLoadStop(t *testing.T) {
	s := &echoServer{stallAt: 3, stall: 10 * time.Second}
	addr, _, dial := startEcho(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	ld := startLoad(t, ctx, loadConfig{Addr: addr, Host: "server:8080", Rate: 50, Slice: time.Minute, Turns: 1, Conns: 2, Timeout: 20 * time.Second, Dial: dial})
	time.AfterFunc(300*time.Millisecond, cancel)
	done := make(chan loadResult)
	go func() { done <- ld.Wait() }()
	select {
	case res := <-done:
		if len(res.samples) > 20 {
			t.Errorf("%d samples after 300 ms at 50 RPS", len(res.samples))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return within 5s of the context's end, a request being held 10s")
	}
}

// TestTurns checks the times the proxies are read at and what is summed
// over the turns they bound.
func TestTurns(t *testing.T) {
	start := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	ends := turnEnds(start, 10*time.Second, 1, 2, 4)
	var got []time.Duration
	for _, e := range ends {
		got = append(got, e.Sub(start))
	}
	// Phase 1, turns 2 and 3: slices 5 and 7.
	if want := []time.Duration{50 * time.Second, 60 * time.Second, 70 * time.Second, 80 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("turnEnds = %v, want %v", got, want)
	}
	// Readings at those times: the proxy spends 1 s of CPU in each turn
	// and 5 s between them, which turnUsage leaves out.
	rs := []reading{
		{at: ends[0], cpu: 10, rss: 19e6, requests: 0, mtls: 0},
		{at: ends[1], cpu: 11, rss: 21e6, requests: 2000, mtls: 2000},
		{at: ends[2], cpu: 16, rss: 20e6, requests: 2000, mtls: 2000},
		{at: ends[3], cpu: 17, rss: 20.5e6, requests: 4000, mtls: 3990},
	}
	u := turnUsage(rs)
	want := usage{readings: 4, span: 20 * time.Second, cpu: 2, rssFirst: 19e6, rssLast: 20.5e6, rssMax: 21e6, requests: 4000, mtls: 3990}
	if u != want {
		t.Errorf("turnUsage = %+v, want %+v", u, want)
	}
	var samples []sample
	for i := range 100 {
		samples = append(samples, sample{due: time.Duration(i) * time.Second})
	}
	if n := sentInTurns(samples, rs, start); n != 20 {
		t.Errorf("sentInTurns = %d, want the 20 due in [50s, 60s) and [70s, 80s)", n)
	}
}

// TestLoadFirstRequest fails before the schedule when a connection's first
// request gets no 200.
func TestLoadFirstRequest(t *testing.T) {
	s := &echoServer{status: http.StatusForbidden}
	addr, _, dial := startEcho(t, s)
	_, err := newLoad(t.Context(), loadConfig{Addr: addr, Host: "x", Rate: 10, Slice: time.Second, Turns: 1, Conns: 2, Timeout: time.Second, Dial: dial})
	if err == nil || !strings.Contains(err.Error(), "send a first request: answered 403") {
		t.Errorf("newLoad against a server that refuses: %v, want the first request's 403", err)
	}
}

// TestLoadUnreachable fails before the schedule when a connection cannot
// be opened.
func TestLoadUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var d net.Dialer
	_, err = newLoad(t.Context(), loadConfig{Addr: addr, Host: "x", Rate: 10, Slice: time.Second, Turns: 1, Conns: 1, Timeout: time.Second, Dial: d.DialContext})
	if err == nil || !strings.Contains(err.Error(), "connect to "+addr) {
		t.Errorf("newLoad to a closed port: %v, want a connect error", err)
	}
}

func TestInWindowAndSummarize(t *testing.T) {
	var samples []sample
	for i := range 1000 {
		due := time.Duration(i) * time.Millisecond
		s := sample{due: due, sent: due + time.Duration(i%10)*time.Microsecond, done: due + time.Duration(i+1)*time.Microsecond, ok: i%100 != 0}
		if i%50 == 9 {
			// Every connection was busy: sent 5 ms late, its latency
			// counts the wait, its lateness is not the generator's.
			s.waited, s.sent, s.done = true, due+5*time.Millisecond, s.done+5*time.Millisecond
		}
		samples = append(samples, s)
	}
	w := inWindow(samples, 100*time.Millisecond, 200*time.Millisecond)
	if len(w) != 100 || w[0].due != 100*time.Millisecond || w[99].due != 199*time.Millisecond {
		t.Fatalf("window [100ms, 200ms) holds %d samples, from %v to %v; want 100, from 100ms to 199ms", len(w), w[0].due, w[len(w)-1].due)
	}
	l := summarize(w)
	// Latencies: 98 of 101..200 µs (but 110 and 160, which waited) and
	// those two at 5.110 and 5.160 ms. Nearest rank: p50 is the 50th.
	want := latencies{requests: 100, failed: 1, p50: 151 * time.Microsecond, p99: 5110 * time.Microsecond,
		p999: 5160 * time.Microsecond, max: 5160 * time.Microsecond, waited: 2, lateP99: 9 * time.Microsecond}
	if l != want {
		t.Errorf("summarize = %+v, want %+v", l, want)
	}
	if got := summarize(nil); got != (latencies{}) {
		t.Errorf("summarize(nil) = %+v, want zero", got)
	}
	if got := inWindow(samples, 2*time.Second, 3*time.Second); len(got) != 0 {
		t.Errorf("a window past the schedule holds %d samples", len(got))
	}
}
