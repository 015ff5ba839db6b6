package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// driverConfig is what a driver sends and how.
type driverConfig struct {
	// Base is the web front end, "http://IP:port"; Host its Host header.
	Base, Host string
	// Dial opens the driver's connections; nil is the default dialer.
	Dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	RPS         float64
	Concurrency int
	Timeout     time.Duration
}

// driver sends requests to the demo's web front end on a fixed schedule,
// as the demo loadgen does (GET / and POST /buy of a product the page lists,
// alternately), and counts each in the phase that was current when it was
// sent. The schedule is open loop: request n is due at start+n/RPS, so
// a stall does not lower the total, it is caught up once requests return.
type driver struct {
	cfg    driverConfig
	client *http.Client
	tr     *http.Transport
	// products are the ids the page lists, learnt from the first pages.
	products atomic.Pointer[[]string]
	phase    atomic.Int32 // index into phases of the phase now

	mu     sync.Mutex
	phases []*phaseStats // guarded by mu, as is everything they hold

	stop     context.CancelFunc
	done     chan struct{} // closed when every request has returned
	stopOnce sync.Once
}

// phaseStats are the requests of one phase.
type phaseStats struct {
	name         string
	began, ended time.Time // of the phase, by the orchestrator's clock
	requests     int
	failures     int
	// late counts requests sent more than lateAfter after they were due:
	// every one of Concurrency was taken (the path stalled or the machine
	// could not keep up).
	late    int
	latency []time.Duration // of every request, failed ones included
	errors  errorCounts
}

// lateAfter is how far behind schedule a request may start before it
// counts as late.
const lateAfter = 100 * time.Millisecond

// errorCounts groups failures by their error, keeping when the first and
// the last of each were sent; past maxErrorKinds kinds the rest share one.
type errorCounts struct {
	kinds []*errorKind
}

type errorKind struct {
	text        string
	n           int
	first, last time.Time
}

const maxErrorKinds = 20

// otherErrors is the kind the errors past maxErrorKinds share.
const otherErrors = "(other errors)"

func (e *errorCounts) add(text string, at time.Time) {
	k := e.find(text)
	if k == nil && len(e.kinds) >= maxErrorKinds-1 {
		text = otherErrors
		k = e.find(text)
	}
	if k == nil {
		k = &errorKind{text: text, first: at, last: at}
		e.kinds = append(e.kinds, k)
	}
	// Failures are recorded as they return, not in the order they were
	// sent.
	k.n++
	if at.Before(k.first) {
		k.first = at
	}
	if at.After(k.last) {
		k.last = at
	}
}

func (e *errorCounts) find(text string) *errorKind {
	for _, k := range e.kinds {
		if k.text == text {
			return k
		}
	}
	return nil
}

// newDriver returns a driver that has not started; phase names the phase
// its first requests count in.
func newDriver(cfg driverConfig, phase string) *driver {
	tr := &http.Transport{
		DialContext:         cfg.Dial,
		MaxIdleConns:        cfg.Concurrency,
		MaxIdleConnsPerHost: cfg.Concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	d := &driver{cfg: cfg, tr: tr, client: &http.Client{Transport: tr, Timeout: cfg.Timeout}, done: make(chan struct{})}
	d.phases = []*phaseStats{{name: phase, began: time.Now()}}
	return d
}

// job is one request of the schedule: the n-th, due at due.
type job struct {
	n   int
	due time.Time
}

// start sends requests until stopAndWait is called or ctx ends.
func (d *driver) start(ctx context.Context) {
	d.mu.Lock()
	d.phases[0].began = time.Now()
	d.mu.Unlock()
	ctx, d.stop = context.WithCancel(ctx)
	jobs := make(chan job)
	go d.dispatch(ctx, jobs)
	// Requests run on a context the stop does not cancel: the ones in
	// flight finish and count, within Timeout.
	reqCtx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for range d.cfg.Concurrency {
		wg.Go(func() {
			for j := range jobs {
				d.do(reqCtx, j)
			}
		})
	}
	go func() {
		wg.Wait()
		d.tr.CloseIdleConnections()
		close(d.done)
	}()
}

// stopAndWait stops the schedule and waits for the requests in flight. It
// closes the current phase. Later calls do nothing.
func (d *driver) stopAndWait() {
	d.stopOnce.Do(func() {
		d.stop()
		<-d.done
		d.mu.Lock()
		d.phases[len(d.phases)-1].ended = time.Now()
		d.mu.Unlock()
	})
}

// next ends the current phase and starts one named name: requests due from
// now on count in it.
func (d *driver) next(name string) {
	now := time.Now()
	d.mu.Lock()
	d.phases[len(d.phases)-1].ended = now
	d.phases = append(d.phases, &phaseStats{name: name, began: now})
	d.phase.Store(int32(len(d.phases) - 1))
	d.mu.Unlock()
}

// snapshot returns a copy of phase i's counts so far (without latencies).
func (d *driver) snapshot(i int) phaseStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := *d.phases[i]
	p.latency = nil
	p.errors = errorCounts{}
	return p
}

// results returns the phases; call it after stopAndWait.
func (d *driver) results() []*phaseStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.phases)
}

// dispatch hands out jobs on the schedule until ctx ends, then closes
// jobs. A send blocks while every worker is busy.
func (d *driver) dispatch(ctx context.Context, jobs chan<- job) {
	defer close(jobs)
	interval := time.Duration(float64(time.Second) / d.cfg.RPS)
	t := time.NewTimer(0)
	defer t.Stop()
	start := time.Now()
	for n := 0; ; n++ {
		due := start.Add(time.Duration(n) * interval)
		if wait := time.Until(due); wait > 0 {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
		select {
		case jobs <- job{n: n, due: due}:
		case <-ctx.Done():
			return
		}
	}
}

// do sends j: even ones load the page, odd ones buy a product the page
// listed (or load the page while none is known yet).
func (d *driver) do(ctx context.Context, j job) {
	method, path := http.MethodGet, "/"
	if ids := d.products.Load(); ids != nil && j.n%2 == 1 {
		method, path = http.MethodPost, "/buy?product="+url.QueryEscape((*ids)[j.n/2%len(*ids)])
	}
	// A request counts in the phase it is sent in, not the one it was due
	// in: sent late, after a stall, it meets the conditions of now.
	phase := int(d.phase.Load())
	start := time.Now()
	err := d.send(ctx, method, path)
	took := time.Since(start)

	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.phases[phase]
	p.requests++
	p.latency = append(p.latency, took)
	if start.Sub(j.due) > lateAfter {
		p.late++
	}
	if err != nil {
		p.failures++
		p.errors.add(errorKindOf(method, path, err), start)
	}
}

// ephemeralPort is the client's port in a socket error ("read tcp
// 10.244.0.8:54548->10.96.1.2:7070"), different for every connection.
var ephemeralPort = regexp.MustCompile(`:\d+->`)

// errorKindOf is how a failure is grouped: method, path without query, and
// the error without what differs between connections.
func errorKindOf(method, path string, err error) string {
	path, _, _ = strings.Cut(path, "?")
	return method + " " + path + ": " + ephemeralPort.ReplaceAllString(err.Error(), ":*->")
}

// statusError is an answer other than 2xx.
type statusError struct {
	code int
	body string // its first line
}

func (e *statusError) Error() string {
	if e.body == "" {
		return fmt.Sprintf("status %d", e.code)
	}
	return fmt.Sprintf("status %d: %s", e.code, e.body)
}

// send sends one request and reads the whole answer; a transport error or
// a status other than 2xx is an error.
func (d *driver) send(ctx context.Context, method, path string) error {
	req, err := http.NewRequestWithContext(ctx, method, d.cfg.Base+path, nil)
	if err != nil {
		return err
	}
	req.Host = d.cfg.Host
	resp, err := d.client.Do(req)
	if err != nil {
		return stripURL(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read the answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
		return &statusError{code: resp.StatusCode, body: truncate(line, 160)}
	}
	if method == http.MethodGet {
		d.learn(body)
	}
	return nil
}

// stripURL drops the *url.Error wrapper, whose method and URL the failure
// record names already.
func stripURL(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// buyForm finds a product's buy button in the demo's product page.
var buyForm = regexp.MustCompile(`action="/buy\?product=([^"&]+)"`)

// learn remembers the product ids a page lists, once.
func (d *driver) learn(page []byte) {
	if d.products.Load() != nil {
		return
	}
	var ids []string
	for _, m := range buyForm.FindAllSubmatch(page, -1) {
		if id, err := url.QueryUnescape(string(m[1])); err == nil {
			ids = append(ids, id)
		}
	}
	if len(ids) > 0 {
		d.products.CompareAndSwap(nil, &ids)
	}
}

// dist is a latency distribution.
type dist struct{ p50, p99, p999, peak time.Duration }

// distOf returns the nearest-rank percentiles of ds.
func distOf(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		return s[max(0, int(math.Ceil(p/100*float64(len(s))))-1)]
	}
	return dist{p50: rank(50), p99: rank(99), p999: rank(99.9), peak: s[len(s)-1]}
}
