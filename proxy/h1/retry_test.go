package h1

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
	"github.com/mesh-dev/mesh/proxy/route"
)

// The retry, timeout and fault tests run an outbound proxy whose target's
// table has one rule, to one backend of one or more endpoints, against
// real servers on loopback. Counts are checked with bounds loose enough
// for chance (stated where it plays) and for a busy machine; times only
// as "after the bound, well before the backend would have answered".

// counting is a backend that answers with answer and counts the requests
// it saw, with their bodies' lengths.
type counting struct {
	addr   string
	n      atomic.Int64
	mu     sync.Mutex
	bodies []int
}

func startCounting(t testing.TB, answer func(n int64, w http.ResponseWriter, r *http.Request)) *counting {
	t.Helper()
	c := &counting{}
	c.addr = startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.bodies = append(c.bodies, len(b))
		c.mu.Unlock()
		answer(c.n.Add(1), w, r)
	}))
	return c
}

func (c *counting) seen() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.bodies...)
}

// roundRobin is a balancer of eps that offers them in turn and keeps what
// each request reported.
type roundRobin struct {
	eps  []netip.AddrPort
	next atomic.Int64

	mu      sync.Mutex
	reports map[netip.AddrPort][]error
}

func (b *roundRobin) pick(context.Context, netip.AddrPort, string) (httpproxy.Endpoint, error) {
	addr := b.eps[int(b.next.Add(1)-1)%len(b.eps)]
	return httpproxy.Endpoint{Addr: addr, Report: func(_ time.Duration, err error) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.reports == nil {
			b.reports = map[netip.AddrPort][]error{}
		}
		b.reports[addr] = append(b.reports[addr], err)
	}}, nil
}

func (b *roundRobin) reported(addr netip.AddrPort) []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reports[addr]
}

// ruleProxy is an outbound proxy whose target's table has the one rule r,
// whose backend "web" is balanced over backends.
func ruleProxy(t testing.TB, r *destinationv1.Rule, backends ...string) (*testProxy, *roundRobin) {
	t.Helper()
	table, err := route.Compile(svcRoute(r))
	if err != nil {
		t.Fatal(err)
	}
	b := &roundRobin{}
	for _, a := range backends {
		b.eps = append(b.eps, netip.MustParseAddrPort(a))
	}
	p := startTestProxy(t, backends[0], func(c *Config) {
		c.Direction = metrics.Outbound
		c.Routes = func(netip.AddrPort) *route.Table { return table }
		c.Pick = b.pick
	})
	return p, b
}

// retryRule is a rule to backend "web" retrying statuses 500-599.
func retryRule(limit uint32) *destinationv1.Rule {
	r := rule("0", prefix("/"), "web")
	r.Retry = &destinationv1.Retry{Http: []*destinationv1.StatusRange{{Min: 500, Max: 599}}, Limit: limit}
	return r
}

// do sends method path with body through p on a client of its own (the
// test's requests run one at a time) and returns the status and body; an
// error for a response that broke off.
func do(t testing.TB, c *http.Client, p *testProxy, method, path string, body io.Reader) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+p.addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "web.shop:8080"
	res, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

func testClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// scrapeSum is the sum of a family's series with the given labels.
func scrapeSum(t testing.TB, m *metrics.Metrics, family string, labels ...string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	fams, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams.Sum(family, labels...)
}

// TestRetryFailingBackend: a backend failing 20 % of requests at random
// is seen at near-100 % success with 5xx retried. With three retries a
// request fails only if four attempts do, 0.16 %: of 300 requests, more
// than 6 failing (98 %) has a probability far below 1e-6. The retries
// are counted apart, and the backend saw each of them.
func TestRetryFailingBackend(t *testing.T) {
	backend := startCounting(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		if rand.IntN(5) == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "flaky")
			return
		}
		io.WriteString(w, "ok")
	})
	p, _ := ruleProxy(t, retryRule(3), backend.addr)
	c := testClient(t)
	const n = 300
	ok := 0
	for range n {
		if code, _, err := do(t, c, p, "GET", "/", nil); err == nil && code == 200 {
			ok++
		}
	}
	if ok < n*98/100 {
		t.Errorf("%d of %d requests succeeded, want at least 98 %%", ok, n)
	}
	retried := scrapeSum(t, p.m, "mesh_proxy_http_retries_total", "reason", "http")
	if got := backend.n.Load(); got != int64(n)+int64(retried) {
		t.Errorf("the backend saw %d requests, want %d and the %v retries", got, n, retried)
	}
	// About a quarter of the requests are retried (0.2 + 0.04 + ...);
	// between 10 % and 40 % is many standard deviations wide.
	if retried < n/10 || retried > n*4/10 {
		t.Errorf("%v retries for %d requests, want about a quarter", retried, n)
	}
	if requests := scrapeSum(t, p.m, "mesh_proxy_http_requests_total"); requests != n {
		t.Errorf("%v requests counted, want %d: a retry is not another request", requests, n)
	}
}

// TestRetryAnotherEndpoint: a retry goes to an endpoint the request has
// not tried: with one endpoint always failing, every request succeeds,
// and the failing one is reported a server error each time.
func TestRetryAnotherEndpoint(t *testing.T) {
	failing := startCounting(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	good := startCounting(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	p, b := ruleProxy(t, retryRule(1), failing.addr, good.addr)
	c := testClient(t)
	for i := range 10 {
		if code, body, err := do(t, c, p, "GET", "/", nil); err != nil || code != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q %v, want 200 \"ok\"", i, code, body, err)
		}
	}
	reports := b.reported(netip.MustParseAddrPort(failing.addr))
	if len(reports) == 0 || int64(len(reports)) != failing.n.Load() {
		t.Fatalf("the failing endpoint saw %d requests and %d reports", failing.n.Load(), len(reports))
	}
	for _, err := range reports {
		if !errors.Is(err, httpproxy.ErrServerError) {
			t.Errorf("the failing endpoint was reported %v, want a server error", err)
		}
	}
}

// TestRetryBudgetExhausted: with a budget of 10 % of requests and no
// reserve, a backend that always fails gets about one retry per ten
// requests; the other failures go to the client as they are, counted as
// skipped for the budget.
func TestRetryBudgetExhausted(t *testing.T) {
	backend := startCounting(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "down")
	})
	r := retryRule(2)
	r.Retry.Budget = &destinationv1.RetryBudget{Ratio: 0.1, Ttl: durationpb.New(time.Minute)}
	p, _ := ruleProxy(t, r, backend.addr)
	c := testClient(t)
	const n = 200
	for range n {
		if code, body, err := do(t, c, p, "GET", "/", nil); err != nil || code != 503 || body != "down" {
			t.Fatalf("got %d %q %v, want the backend's 503", code, body, err)
		}
	}
	retried := scrapeSum(t, p.m, "mesh_proxy_http_retries_total", "reason", "http")
	skipped := scrapeSum(t, p.m, "mesh_proxy_http_retry_skipped_total", "reason", "budget")
	// Requests are sequential: 0.1 token each, so 20 retries in all, each
	// a request's first; every failure with no token is skipped.
	if retried < 15 || retried > 25 {
		t.Errorf("%v retries, want about 20 (10 %% of %d)", retried, n)
	}
	if skipped < n-retried-15 {
		t.Errorf("%v skipped for the budget, want about %v", skipped, n-retried)
	}
	if got := backend.n.Load(); got != int64(n)+int64(retried) {
		t.Errorf("the backend saw %d requests, want %d and the %v retries", got, n, retried)
	}
}

// TestRetryBody: a small body is kept and sent again whole, with a length
// or chunked; a 1 MB POST is sent once, and its failure counted as a
// retry skipped for its body.
func TestRetryBody(t *testing.T) {
	// Fails every odd request: a retried one succeeds.
	backend := startCounting(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	p, _ := ruleProxy(t, retryRule(1), backend.addr)
	c := testClient(t)
	small := bytes.Repeat([]byte("x"), 10<<10)
	for _, tc := range []struct {
		name string
		body io.Reader
	}{
		{name: "length", body: bytes.NewReader(small)},
		{name: "chunked", body: io.MultiReader(bytes.NewReader(small[:5000]), bytes.NewReader(small[5000:]))},
		{name: "streamed", body: &slowBody{parts: [][]byte{small[:5000], small[5000:]}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(backend.seen())
			backend.n.Store(0)
			code, _, err := do(t, c, p, "POST", "/upload", tc.body)
			if err != nil || code != 200 {
				t.Fatalf("got %d %v, want 200 from the retry", code, err)
			}
			seen := backend.seen()[before:]
			if len(seen) != 2 || seen[0] != len(small) || seen[1] != len(small) {
				t.Errorf("the backend saw bodies of %v bytes, want two of %d", seen, len(small))
			}
		})
	}
	t.Run("1 MB", func(t *testing.T) {
		before := len(backend.seen())
		backend.n.Store(0)
		code, _, err := do(t, c, p, "POST", "/upload", bytes.NewReader(make([]byte, 1<<20)))
		if err != nil || code != 503 {
			t.Fatalf("got %d %v, want the backend's 503", code, err)
		}
		if seen := backend.seen()[before:]; len(seen) != 1 || seen[0] != 1<<20 {
			t.Errorf("the backend saw bodies of %v bytes, want one of 1 MB", seen)
		}
		if got := scrapeSum(t, p.m, "mesh_proxy_http_retry_skipped_total", "reason", "body"); got != 1 {
			t.Errorf("%v skipped for the body, want 1", got)
		}
	})
}

// TestRetryLimit: an always failing backend gets the first attempt and
// Limit retries, then the client its failure, counted as skipped for the
// limit.
func TestRetryLimit(t *testing.T) {
	backend := startCounting(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	p, _ := ruleProxy(t, retryRule(2), backend.addr)
	if code, _, err := do(t, testClient(t), p, "GET", "/", nil); err != nil || code != 500 {
		t.Fatalf("got %d %v, want the backend's 500", code, err)
	}
	if got := backend.n.Load(); got != 3 {
		t.Errorf("the backend saw %d attempts, want 3", got)
	}
	if got := scrapeSum(t, p.m, "mesh_proxy_http_retry_skipped_total", "reason", "limit"); got != 1 {
		t.Errorf("%v skipped for the limit, want 1", got)
	}
}

// slowFirst is a backend whose first request waits for its client to
// go, and whose others are answered at once.
func slowFirst(t testing.TB) *counting {
	return startCounting(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		io.WriteString(w, "ok")
	})
}

// TestRetryPerTryTimeout: an attempt past its per-try timeout is cancelled
// and sent again; once the request's own timeout passes, the client gets
// 504 however many tries remain.
func TestRetryPerTryTimeout(t *testing.T) {
	t.Run("retried", func(t *testing.T) {
		backend := slowFirst(t)
		r := rule("0", prefix("/"), "web")
		r.Retry = &destinationv1.Retry{Limit: 1, PerTryTimeout: durationpb.New(200 * time.Millisecond)}
		p, _ := ruleProxy(t, r, backend.addr)
		start := time.Now()
		code, body, err := do(t, testClient(t), p, "GET", "/", nil)
		if err != nil || code != 200 || body != "ok" {
			t.Fatalf("got %d %q %v, want the retry's 200", code, body, err)
		}
		if took := time.Since(start); took < 200*time.Millisecond || took > 4*time.Second {
			t.Errorf("answered after %v, want past the per-try timeout and well before the first attempt's 5s", took)
		}
		if got := scrapeSum(t, p.m, "mesh_proxy_http_retries_total", "reason", "timeout"); got != 1 {
			t.Errorf("%v retries for a timeout, want 1", got)
		}
	})
	t.Run("request timeout", func(t *testing.T) {
		slow := startCounting(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		})
		r := rule("0", prefix("/"), "web")
		r.Retry = &destinationv1.Retry{Limit: 10, PerTryTimeout: durationpb.New(200 * time.Millisecond)}
		r.Timeouts = &destinationv1.Timeouts{Request: durationpb.New(500 * time.Millisecond)}
		p, _ := ruleProxy(t, r, slow.addr)
		start := time.Now()
		code, body, err := do(t, testClient(t), p, "GET", "/", nil)
		took := time.Since(start)
		if err != nil || code != http.StatusGatewayTimeout {
			t.Fatalf("got %d %q %v, want 504", code, body, err)
		}
		if took < 500*time.Millisecond || took > 4*time.Second {
			t.Errorf("answered after %v, want past the request timeout and well before the backend's 5s", took)
		}
		if got := slow.n.Load(); got < 2 || got > 3 {
			t.Errorf("%d attempts in 500ms of 200ms each, want 2 or 3", got)
		}
	})
}

// TestRouteResponseAndIdleTimeouts: a response head that does not come
// within the response timeout of the request's end, or with no byte
// either way for the idle timeout, gets 504; a response body that stalls
// past the idle timeout closes the client's connection.
func TestRouteResponseAndIdleTimeouts(t *testing.T) {
	stall := startCounting(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(200)
			io.WriteString(w, "12345")
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	for _, tc := range []struct {
		name     string
		timeouts *destinationv1.Timeouts
		path     string
		body     io.Reader
	}{
		{name: "response", timeouts: &destinationv1.Timeouts{Response: durationpb.New(200 * time.Millisecond)}, path: "/"},
		{name: "response after a streamed body", timeouts: &destinationv1.Timeouts{Response: durationpb.New(200 * time.Millisecond)},
			path: "/", body: &slowBody{parts: [][]byte{[]byte("first"), []byte("second")}}},
		{name: "idle", timeouts: &destinationv1.Timeouts{Idle: durationpb.New(200 * time.Millisecond)}, path: "/"},
		{name: "idle body", timeouts: &destinationv1.Timeouts{Idle: durationpb.New(200 * time.Millisecond)}, path: "/body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rule("0", prefix("/"), "web")
			r.Timeouts = tc.timeouts
			p, _ := ruleProxy(t, r, stall.addr)
			method := "GET"
			if tc.body != nil {
				method = "POST"
			}
			start := time.Now()
			code, body, err := do(t, testClient(t), p, method, tc.path, tc.body)
			took := time.Since(start)
			if tc.path == "/body" {
				if err == nil {
					t.Errorf("got %d %q whole, want the body cut off", code, body)
				}
			} else if err != nil || code != http.StatusGatewayTimeout {
				t.Errorf("got %d %q %v, want 504", code, body, err)
			}
			if took < 200*time.Millisecond || took > 4*time.Second {
				t.Errorf("ended after %v, want past the timeout and well before the backend's 5s", took)
			}
		})
	}
}

// faultRule is a rule to backend "web" with an HTTPFault.
func faultRule(f *destinationv1.Fault) *destinationv1.Rule {
	r := rule("0", prefix("/"), "web")
	r.Filters = []*destinationv1.Filter{{Kind: &destinationv1.Filter_Fault{Fault: f}}}
	return r
}

// TestFaultAbort: an abort of every request answers it with the fault's
// status without sending it; one of half the requests does so for about
// half (of 400, a standard deviation of 2.5 points: 50 ± 12 never
// flakes). Aborts are counted, as route answers.
func TestFaultAbort(t *testing.T) {
	backend := startCounting(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	t.Run("all", func(t *testing.T) {
		p, _ := ruleProxy(t, faultRule(&destinationv1.Fault{Abort: &destinationv1.Fault_Abort{PerMillion: route.Million, HttpStatus: 503}}), backend.addr)
		before := backend.n.Load()
		for range 5 {
			code, body, err := do(t, testClient(t), p, "GET", "/", nil)
			if err != nil || code != 503 || !strings.Contains(body, "fault") {
				t.Errorf("got %d %q %v, want the fault's 503", code, body, err)
			}
		}
		if got := backend.n.Load() - before; got != 0 {
			t.Errorf("the backend saw %d aborted requests", got)
		}
		if got := scrapeSum(t, p.m, "mesh_proxy_http_faults_total", "type", "abort"); got != 5 {
			t.Errorf("%v aborts counted, want 5", got)
		}
		// Counted as requests that reached no application: no target.
		total, atTarget := scrapeSum(t, p.m, "mesh_proxy_http_requests_total"), scrapeSum(t, p.m, "mesh_proxy_http_requests_total", "target_addr", backend.addr)
		if total != 5 || atTarget != 0 {
			t.Errorf("%v requests counted, %v at the target; want 5, none at the target", total, atTarget)
		}
	})
	t.Run("no content", func(t *testing.T) {
		p, _ := ruleProxy(t, faultRule(&destinationv1.Fault{Abort: &destinationv1.Fault_Abort{PerMillion: route.Million, HttpStatus: 204}}), backend.addr)
		c := testClient(t)
		for range 2 { // the connection goes on: nothing is left on it
			if code, body, err := do(t, c, p, "GET", "/", nil); err != nil || code != 204 || body != "" {
				t.Errorf("got %d %q %v, want a 204 without a body", code, body, err)
			}
		}
	})
	t.Run("half", func(t *testing.T) {
		p, _ := ruleProxy(t, faultRule(&destinationv1.Fault{Abort: &destinationv1.Fault_Abort{PerMillion: route.Million / 2, HttpStatus: 500}}), backend.addr)
		c := testClient(t)
		const n = 400
		aborted := 0
		for range n {
			code, _, err := do(t, c, p, "GET", "/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if code == 500 {
				aborted++
			}
		}
		if aborted < n*38/100 || aborted > n*62/100 {
			t.Errorf("%d of %d aborted, want about half", aborted, n)
		}
	})
}

// TestFaultDelay: a delay holds the request before it is sent, counted;
// one past the request's timeout gives 504 at the timeout; a client that
// leaves during one ends it, and the request goes nowhere.
func TestFaultDelay(t *testing.T) {
	backend := startCounting(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	delay := func(d time.Duration) *destinationv1.Fault {
		return &destinationv1.Fault{Delay: &destinationv1.Fault_Delay{PerMillion: route.Million, Duration: durationpb.New(d)}}
	}
	t.Run("held", func(t *testing.T) {
		p, _ := ruleProxy(t, faultRule(delay(200*time.Millisecond)), backend.addr)
		start := time.Now()
		code, body, err := do(t, testClient(t), p, "POST", "/", strings.NewReader("body"))
		if err != nil || code != 200 || body != "ok" {
			t.Fatalf("got %d %q %v, want the backend's answer", code, body, err)
		}
		if took := time.Since(start); took < 200*time.Millisecond {
			t.Errorf("answered after %v, before the delay", took)
		}
		if got := scrapeSum(t, p.m, "mesh_proxy_http_faults_total", "type", "delay"); got != 1 {
			t.Errorf("%v delays counted, want 1", got)
		}
	})
	t.Run("past the request timeout", func(t *testing.T) {
		r := faultRule(delay(5 * time.Second))
		r.Timeouts = &destinationv1.Timeouts{Request: durationpb.New(300 * time.Millisecond)}
		p, _ := ruleProxy(t, r, backend.addr)
		before := backend.n.Load()
		start := time.Now()
		code, _, err := do(t, testClient(t), p, "GET", "/", nil)
		if took := time.Since(start); err != nil || code != 504 || took < 300*time.Millisecond || took > 4*time.Second {
			t.Errorf("got %d %v after %v, want 504 past 300ms and well before the 5s delay", code, err, took)
		}
		if got := backend.n.Load() - before; got != 0 {
			t.Errorf("the backend saw %d requests", got)
		}
	})
	t.Run("client leaves", func(t *testing.T) {
		p, _ := ruleProxy(t, faultRule(delay(5*time.Second)), backend.addr)
		before := backend.n.Load()
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: web.shop:8080\r\n\r\n")
		time.Sleep(100 * time.Millisecond)
		c.Close()
		// The request is counted once the proxy saw the client go: well
		// before the delay is over.
		deadline := time.Now().Add(3 * time.Second)
		for scrapeSum(t, p.m, "mesh_proxy_http_requests_total") == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the delay did not end with its client")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := backend.n.Load() - before; got != 0 {
			t.Errorf("the backend saw %d requests", got)
		}
	})
	t.Run("pipelined request kept", func(t *testing.T) {
		// What the client sends during the delay is read, and served.
		p, _ := ruleProxy(t, faultRule(delay(100*time.Millisecond)), backend.addr)
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: web.shop:8080\r\nContent-Length: 4\r\n\r\n")
		time.Sleep(30 * time.Millisecond)
		io.WriteString(c, "bodyGET / HTTP/1.1\r\nHost: web.shop:8080\r\n\r\n")
		got, err := io.ReadAll(io.LimitReader(c, 1<<10))
		if err != nil && !isTimeout(err) {
			t.Fatal(err)
		}
		if n := strings.Count(string(got), "HTTP/1.1 200 OK"); n != 2 {
			t.Errorf("%d answers of 2:\n%s", n, got)
		}
	})
}

// TestRetryBalancerReport: the endpoint of a retried attempt hears of its
// failure, and the one that answered of its success, each once.
func TestRetryBalancerReport(t *testing.T) {
	failing := startCounting(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	good := startCounting(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	p, b := ruleProxy(t, retryRule(1), failing.addr, good.addr)
	if code, _, err := do(t, testClient(t), p, "GET", "/", nil); err != nil || code != 200 {
		t.Fatalf("got %d %v", code, err)
	}
	if got := b.reported(netip.MustParseAddrPort(failing.addr)); len(got) != 1 || !errors.Is(got[0], httpproxy.ErrServerError) {
		t.Errorf("the failing endpoint heard %v, want one server error", got)
	}
	if got := b.reported(netip.MustParseAddrPort(good.addr)); len(got) != 1 || got[0] != nil {
		t.Errorf("the good endpoint heard %v, want one success", got)
	}
}

// TestRouteIdleTimeoutIsPerRequest: a route's idle timeout bounds its own
// request: a later one on the connection, of a rule without it, is
// answered however long after.
func TestRouteIdleTimeoutIsPerRequest(t *testing.T) {
	backend := startCounting(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	bounded := rule("0", prefix("/bounded"), "web")
	bounded.Timeouts = &destinationv1.Timeouts{Idle: durationpb.New(100 * time.Millisecond)}
	table, err := route.Compile(svcRoute(bounded, rule("1", prefix("/"), "web")))
	if err != nil {
		t.Fatal(err)
	}
	p := startTestProxy(t, backend.addr, func(c *Config) {
		c.Direction = metrics.Outbound
		c.Routes = func(netip.AddrPort) *route.Table { return table }
		c.Pick = (&roundRobin{eps: []netip.AddrPort{netip.MustParseAddrPort(backend.addr)}}).pick
	})
	c := testClient(t)
	// POSTs, which the client does not send again on a connection that
	// failed them.
	for i, path := range []string{"/bounded", "/other", "/bounded"} {
		if i > 0 {
			time.Sleep(300 * time.Millisecond)
		}
		if code, body, err := do(t, c, p, "POST", path, strings.NewReader("x")); err != nil || code != 200 || body != "ok" {
			t.Fatalf("request %d on the connection, %s: %d %q %v", i, path, code, body, err)
		}
	}
	if got := backend.n.Load(); got != 3 {
		t.Errorf("the backend saw %d requests, want 3", got)
	}
}

// TestRetryAfterContinue: a request with Expect: 100-continue, whose
// first attempt's 100 went to the client, is still retried: a client
// takes more than one 100 (RFC 9110 15.2), and gets the retry's answer.
func TestRetryAfterContinue(t *testing.T) {
	backend := startCounting(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	p, _ := ruleProxy(t, retryRule(1), backend.addr)
	tr := &http.Transport{ExpectContinueTimeout: 5 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	req, err := http.NewRequest("POST", "http://"+p.addr+"/upload", bytes.NewReader(bytes.Repeat([]byte("x"), 5000)))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "web.shop:8080"
	req.Header.Set("Expect", "100-continue")
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "ok" {
		t.Errorf("got %d %q, want the retry's 200", res.StatusCode, body)
	}
	if seen := backend.seen(); len(seen) != 2 || seen[0] != 5000 || seen[1] != 5000 {
		t.Errorf("the backend saw bodies of %v bytes, want two of 5000", seen)
	}
}
