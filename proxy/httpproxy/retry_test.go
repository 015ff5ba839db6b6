package httpproxy_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/tap"
)

// script is a Picker that hands out its endpoints in order, the last one
// for ever, and notes what each pick was reported as.
type script struct {
	eps []netip.AddrPort

	mu      sync.Mutex
	next    int      // guarded by mu
	reports []string // guarded by mu: "addr outcome"
}

func (s *script) pick(context.Context, netip.AddrPort) (httpproxy.Endpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	addr := s.eps[min(s.next, len(s.eps)-1)]
	s.next++
	return httpproxy.Endpoint{Addr: addr, Report: func(_ time.Duration, err error) {
		outcome := "ok"
		switch {
		case errors.Is(err, context.Canceled):
			outcome = "unused"
		case errors.Is(err, balance.ErrUnreachable):
			outcome = "unreachable"
		case err != nil:
			outcome = "failed"
		}
		s.mu.Lock()
		s.reports = append(s.reports, addr.String()+" "+outcome)
		s.mu.Unlock()
	}}, nil
}

func (s *script) taken() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reports
}

// TestConnectFailureTriesAnotherEndpoint: a request whose endpoint refuses
// the connection goes to another endpoint of its destination, whatever its
// method, body and all: at most two others, never one twice. Each endpoint
// that could not be reached is reported so to the balancer.
func TestConnectFailureTriesAnotherEndpoint(t *testing.T) {
	live := newTarget(t)
	dead := []netip.AddrPort{closedPort(t), closedPort(t), closedPort(t)}
	d := func(i int) string { return dead[i].String() }
	tests := []struct {
		name        string
		eps         []netip.AddrPort
		wantStatus  int
		wantReports []string
	}{
		{name: "one refused", eps: []netip.AddrPort{dead[0], live.addr}, wantStatus: 200,
			wantReports: []string{d(0) + " unreachable", live.addr.String() + " ok"}},
		{name: "two refused", eps: []netip.AddrPort{dead[0], dead[1], live.addr}, wantStatus: 200,
			wantReports: []string{d(0) + " unreachable", d(1) + " unreachable", live.addr.String() + " ok"}},
		{name: "three refused: no fourth attempt", eps: []netip.AddrPort{dead[0], dead[1], dead[2], live.addr}, wantStatus: 502,
			wantReports: []string{d(0) + " unreachable", d(1) + " unreachable", d(2) + " unreachable"}},
		{name: "only the refused one offered", eps: []netip.AddrPort{dead[0]}, wantStatus: 502,
			wantReports: []string{d(0) + " unreachable", d(0) + " unused", d(0) + " unused", d(0) + " unused", d(0) + " unused"}},
	}
	for _, tc := range tests {
		for _, method := range []string{"GET", "POST"} {
			t.Run(tc.name+"/"+method, func(t *testing.T) {
				s := &script{eps: tc.eps}
				p := httpproxy.New(httpproxy.Config{
					Direction: metrics.Outbound, Metrics: metrics.New(), Log: slog.New(&panicLog{}), Pick: s.pick,
				})
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					p.Shutdown(ctx)
				})
				raw := []byte(method + " /order HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n\r\nhello")
				reqs, _ := parseRequests(raw)
				res, err := responses(exchange(t, p, loopback(t), netip.MustParseAddrPort("10.96.0.1:80"), raw), reqs)
				if err != nil || len(res) != 1 {
					t.Fatalf("%d responses, %v", len(res), err)
				}
				if res[0].StatusCode != tc.wantStatus {
					t.Errorf("status %s, want %d", res[0].Status, tc.wantStatus)
				}
				var want []seen
				if tc.wantStatus == 200 {
					want = []seen{{method, "/order", "hello"}}
				}
				if diff := cmp.Diff(want, live.requests()); diff != "" {
					t.Errorf("requests the live endpoint got (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(tc.wantReports, s.taken()); diff != "" {
					t.Errorf("reports to the balancer (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// TestNoRetryOnceSent: a request whose connection broke after it was
// sent is answered 502, not sent to another endpoint: the first may have
// acted on it.
func TestNoRetryOnceSent(t *testing.T) {
	ln := loopback(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Read(make([]byte, 4096)) // the request, then a reset
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	breaking := netip.MustParseAddrPort(ln.Addr().String())
	other := newTarget(t)
	s := &script{eps: []netip.AddrPort{breaking, other.addr}}
	p := httpproxy.New(httpproxy.Config{Direction: metrics.Outbound, Metrics: metrics.New(), Log: slog.New(&panicLog{}), Pick: s.pick})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	raw := []byte("POST /order HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n\r\nhello")
	reqs, _ := parseRequests(raw)
	res, err := responses(exchange(t, p, loopback(t), netip.MustParseAddrPort("10.96.0.1:80"), raw), reqs)
	if err != nil || len(res) != 1 || res[0].StatusCode != http.StatusBadGateway {
		t.Fatalf("responses %v, %v; want one 502", res, err)
	}
	if got := other.requests(); len(got) != 0 {
		t.Errorf("the request was sent again, to the other endpoint: %v", got)
	}
	if diff := cmp.Diff([]string{breaking.String() + " failed"}, s.taken()); diff != "" {
		t.Errorf("reports to the balancer (-want +got):\n%s", diff)
	}
}

// TestTapShowsTheEndpointReached: a request tried on an endpoint that
// refused it, then on another, is tapped once, at the endpoint it reached.
func TestTapShowsTheEndpointReached(t *testing.T) {
	live := newTarget(t)
	s := &script{eps: []netip.AddrPort{closedPort(t), live.addr}}
	hub := tap.NewHub()
	p := httpproxy.New(httpproxy.Config{Direction: metrics.Outbound, Metrics: metrics.New(), Log: slog.New(&panicLog{}), Pick: s.pick, Tap: hub})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	w, err := hub.Watch(tap.Filter{PathPrefix: "/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	exchange(t, p, loopback(t), netip.MustParseAddrPort("10.96.0.1:80"), []byte("GET /order HTTP/1.1\r\nHost: api\r\n\r\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if req.Request == nil || req.Request.Dst != live.addr.String() {
		t.Errorf("request event %+v, want it at %s", req.Request, live.addr)
	}
	if res.Response == nil || res.ID != req.ID || res.Response.Status != 200 {
		t.Errorf("response event %+v, want the request's 200", res)
	}
}
