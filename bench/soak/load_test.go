package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// shop is a stand-in for the demo's web front end: its page lists the
// products, and buying "broken" answers 503. It counts what it answered.
type shop struct {
	mu                    sync.Mutex
	pages, buys, refusals int
	hosts                 map[string]int
}

func (s *shop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosts[r.Host]++
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		s.pages++
		fmt.Fprint(w, `<form method="post" action="/buy?product=tea"><button>Buy</button></form>
<form method="post" action="/buy?product=broken"><button>Buy</button></form>`)
	case r.Method == http.MethodPost && r.URL.Path == "/buy" && r.URL.Query().Get("product") == "broken":
		s.refusals++
		http.Error(w, "out of stock\nsecond line", http.StatusServiceUnavailable)
	case r.Method == http.MethodPost && r.URL.Path == "/buy":
		s.buys++
		fmt.Fprint(w, "order 1: paid")
	default:
		http.NotFound(w, r)
	}
}

// TestDriver sends a second of load at a real server through the driver's
// own dial function, across two phases, and checks that every request is
// counted once, in its phase, with the failures the server gave.
func TestDriver(t *testing.T) {
	s := &shop{hosts: map[string]int{}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	var dials atomic.Int32
	var dialer net.Dialer
	d := newDriver(driverConfig{
		Base: srv.URL, Host: "web:8080", RPS: 400, Concurrency: 8, Timeout: 2 * time.Second,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
	}, "one")
	if err := d.send(t.Context(), http.MethodGet, "/"); err != nil {
		t.Fatalf("first page: %v", err)
	}
	if ids := d.products.Load(); ids == nil || strings.Join(*ids, ",") != "tea,broken" {
		t.Fatalf("products learnt from the page: %v, want tea and broken", ids)
	}
	d.start(t.Context())
	time.Sleep(500 * time.Millisecond)
	d.next("two")
	time.Sleep(500 * time.Millisecond)
	d.stopAndWait()

	phases := d.results()
	if len(phases) != 2 || phases[0].name != "one" || phases[1].name != "two" {
		t.Fatalf("phases %v, want one and two", phases)
	}
	var requests, failures int
	for _, p := range phases {
		requests += p.requests
		failures += p.failures
		if p.requests < 150 || p.requests > 250 {
			t.Errorf("phase %s: %d requests in about half a second at 400 RPS", p.name, p.requests)
		}
		if len(p.latency) != p.requests {
			t.Errorf("phase %s: %d latencies for %d requests", p.name, len(p.latency), p.requests)
		}
		if !p.ended.After(p.began) {
			t.Errorf("phase %s ends at %v, before it began at %v", p.name, p.ended, p.began)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if answered := s.pages + s.buys + s.refusals - 1; requests != answered {
		t.Errorf("the driver counted %d requests, the server answered %d", requests, answered)
	}
	if failures != s.refusals || failures == 0 {
		t.Errorf("the driver counted %d failures, the server refused %d", failures, s.refusals)
	}
	if s.buys == 0 || s.pages < requests/2 {
		t.Errorf("%d pages and %d buys of %d requests: want about half of each", s.pages, s.buys, requests)
	}
	if s.hosts["web:8080"] != requests+1 {
		t.Errorf("hosts %v: want every request for web:8080", s.hosts)
	}
	if n := dials.Load(); n == 0 || n > 8 {
		t.Errorf("%d dials: want the driver's dial function, connections kept alive (at most one per worker)", n)
	}
	var kinds []string
	for _, p := range phases {
		for _, k := range p.errors.kinds {
			kinds = append(kinds, fmt.Sprintf("%s: %d x %s", p.name, k.n, k.text))
		}
	}
	for _, k := range kinds {
		if !strings.HasSuffix(k, " x POST /buy: status 503: out of stock") {
			t.Errorf("error kind %q, want the refused buys only, by their answer's first line", k)
		}
	}
}

// TestDriverTimeout: a request the server does not answer within the
// timeout is a failure, and the stall it causes is caught up.
func TestDriverTimeout(t *testing.T) {
	release := make(chan struct{})
	var stalled atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if stalled.Add(1) <= 2 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		fmt.Fprint(w, "a page without products")
	}))
	defer srv.Close()
	defer close(release)
	d := newDriver(driverConfig{Base: srv.URL, Host: "web", RPS: 100, Concurrency: 2, Timeout: 300 * time.Millisecond}, "only")
	d.start(t.Context())
	time.Sleep(time.Second)
	d.stopAndWait()
	p := d.results()[0]
	if p.failures != 2 {
		t.Errorf("%d failures, want the 2 stalled requests", p.failures)
	}
	if p.requests < 90 {
		t.Errorf("%d requests in a second at 100 RPS: the stall was not caught up", p.requests)
	}
	if p.late == 0 {
		t.Errorf("no request counted late, though both workers stalled for %v", 300*time.Millisecond)
	}
	for _, k := range p.errors.kinds {
		if !strings.Contains(k.text, "GET /: ") || !strings.Contains(k.text, "Timeout") {
			t.Errorf("error %q, want GET / timing out", k.text)
		}
	}
}
