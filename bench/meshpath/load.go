package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// The load subcommand is an open-loop HTTP/1.1 load generator for the
// fixed-rate rows, written for coordinated omission (Gil Tene, "How NOT to
// Measure Latency"): a closed-loop client such as wrk sends a request only
// when a connection is free, so while the path stalls it stops sending,
// and the stall shows in the few requests that were in flight, not in the
// many that a real client would have sent meanwhile. Here request i is due
// at start + i/rate whatever happened before; its latency runs from that
// due time to the end of its response. A request that waits for a free
// connection, or for the generator itself, is counted late by that wait.
// The connections are opened before the schedule starts and kept alive,
// so no row measures connection setup.

// loadConfig is one fixed-rate run.
type loadConfig struct {
	// URL is the http:// URL every request GETs, over HTTP/1.1 keep-alive.
	URL string
	// Rate is the requests per second the schedule sends.
	Rate float64
	// Duration is the length of the schedule.
	Duration time.Duration
	// Conns is how many connections the requests share; a due request
	// waits for one to be free.
	Conns int
	// Drain is how long requests may still finish after the schedule
	// ends; those that have not are counted as unfinished, with the
	// latency they had reached.
	Drain time.Duration
	// dial opens a connection; nil is a net.Dialer's. Tests set it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// maxScheduled bounds Rate x Duration: the schedule's queue holds every
// request of the run.
const maxScheduled = 10_000_000

// loadMain is the load subcommand: it runs one schedule and prints its
// loadResult as JSON on stdout.
func loadMain(ctx context.Context, args []string) error {
	cfg := loadConfig{Conns: 32, Drain: 5 * time.Second}
	fs := pflag.NewFlagSet("meshpath load", pflag.ContinueOnError)
	fs.StringVar(&cfg.URL, "url", "", "http:// URL to GET")
	fs.Float64Var(&cfg.Rate, "rate", 0, "requests per second")
	fs.DurationVar(&cfg.Duration, "duration", 0, "length of the schedule")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "keep-alive connections the requests share")
	fs.DurationVar(&cfg.Drain, "drain", cfg.Drain, "how long requests may finish after the schedule ends")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	res, err := runLoad(ctx, cfg)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// loadResult is what a run measured. Latencies are in milliseconds.
type loadResult struct {
	Rate      float64 `json:"rate"`      // asked for
	Scheduled int     `json:"scheduled"` // requests the schedule held
	// Completed requests got a 200 with its whole body.
	Completed int `json:"completed"`
	// Errors got another status or lost their connection.
	Errors int `json:"errors"`
	// Unfinished had no answer when the drain ended.
	Unfinished int    `json:"unfinished"`
	FirstError string `json:"first_error,omitempty"`
	// Achieved is Completed per second of the schedule, or of the time
	// until the last answer when that is longer (a path that fell behind).
	Achieved float64 `json:"achieved_rps"`
	// Latency runs from each request's due time to the end of its
	// answer, over every scheduled request (failed and unfinished ones
	// too, the latter at the drain's end).
	Latency percentiles `json:"latency_ms"`
	// StartLag runs from the due time to the moment the request was
	// written: time spent waiting for a free connection or for the
	// generator. It is part of Latency.
	StartLag percentiles `json:"start_lag_ms"`
}

// percentiles of a set of durations, in milliseconds.
type percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

// percentilesOf sorts ds and returns their nearest-rank percentiles.
func percentilesOf(ds []time.Duration) percentiles {
	if len(ds) == 0 {
		return percentiles{}
	}
	slices.Sort(ds)
	rank := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(ds)))) - 1
		i = max(0, min(i, len(ds)-1))
		return float64(ds[i]) / float64(time.Millisecond)
	}
	return percentiles{P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), P999: rank(0.999), Max: rank(1)}
}

// outcome of one request.
type outcome uint8

const (
	answered outcome = iota
	failed
	unfinished
)

// sample is one request, its times as offsets from the schedule's start.
type sample struct {
	due, sent, done time.Duration
	outcome         outcome
}

// generator runs one schedule. Its workers each own one connection.
type generator struct {
	cfg      loadConfig
	req      []byte // the request, written as it is every time
	addr     string
	interval float64 // nanoseconds between two due times
	start    time.Time
	due      chan int32    // indexes of due requests, in order
	deadline atomic.Bool   // set, under mu, when the drain has ended
	done     chan struct{} // closed when every worker has returned

	mu       sync.Mutex
	conns    []net.Conn // guarded by mu: each worker's connection, nil while it has none
	firstErr error      // guarded by mu: the first failure, for the report
}

func runLoad(ctx context.Context, cfg loadConfig) (loadResult, error) {
	u, err := url.Parse(cfg.URL)
	switch {
	case err != nil:
		return loadResult{}, usageError{fmt.Errorf("--url: %w", err)}
	case u.Scheme != "http" || u.Host == "" || u.Port() == "":
		return loadResult{}, usageError{fmt.Errorf("--url %q: want http://host:port/path", cfg.URL)}
	case cfg.Rate <= 0 || cfg.Duration <= 0 || cfg.Conns < 1 || cfg.Drain < 0:
		return loadResult{}, usageError{errors.New("--rate, --duration and --conns must be positive, --drain not negative")}
	}
	n := cfg.Rate * cfg.Duration.Seconds()
	if n < 1 || n > maxScheduled {
		return loadResult{}, usageError{fmt.Errorf("--rate x --duration is %.0f requests: want 1 to %d", n, maxScheduled)}
	}
	if cfg.dial == nil {
		var d net.Dialer
		cfg.dial = d.DialContext
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	g := &generator{
		cfg:      cfg,
		req:      []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: meshpath-load\r\n\r\n"),
		addr:     u.Host,
		interval: float64(time.Second) / cfg.Rate,
		due:      make(chan int32, int(n)),
		done:     make(chan struct{}),
	}
	// Every connection is up before the first request is due.
	g.conns = make([]net.Conn, cfg.Conns)
	for i := range g.conns {
		c, err := g.dial(ctx)
		if err != nil {
			for _, c := range g.conns[:i] {
				c.Close()
			}
			return loadResult{}, fmt.Errorf("connecting to %s: %w", g.addr, err)
		}
		g.conns[i] = c
	}
	samples := make([][]sample, cfg.Conns)
	var wg sync.WaitGroup
	g.start = time.Now()
	for w := range g.conns {
		wg.Go(func() { samples[w] = g.work(ctx, w, int(n)/cfg.Conns+16) })
	}
	go func() { wg.Wait(); close(g.done) }()
	end := g.schedule(ctx, int(n))
	select {
	case <-g.done:
	case <-ctx.Done():
		g.expire()
		<-g.done
		return loadResult{}, ctx.Err()
	case <-time.After(time.Until(g.start.Add(end + cfg.Drain))):
		g.expire()
		<-g.done
	}
	return g.result(slices.Concat(samples...), int(n)), nil
}

// dueAt is request i's due time, as an offset from the start.
func (g *generator) dueAt(i int32) time.Duration {
	return time.Duration(float64(i) * g.interval)
}

// schedule hands out the n requests at their due times, all those already
// due at once when it wakes up late, and returns the last due time.
func (g *generator) schedule(ctx context.Context, n int) time.Duration {
	defer close(g.due)
	for i := int32(0); int(i) < n; {
		now := time.Since(g.start)
		for int(i) < n && g.dueAt(i) <= now {
			g.due <- i // never blocks: the channel holds all n
			i++
		}
		if int(i) == n {
			break
		}
		if ctx.Err() != nil {
			return g.dueAt(i)
		}
		// The workers just handed a request wait in this goroutine's
		// run queue; let them send it before this thread sleeps in a
		// system call, during which the runtime may leave them there.
		runtime.Gosched()
		g.sleepUntil(g.dueAt(i))
	}
	return g.dueAt(int32(n - 1))
}

// maxSleep bounds one sleep of the schedule, so that it notices a
// cancelled run soon at low rates.
const maxSleep = 50 * time.Millisecond

// sleepUntil blocks the calling thread until offset d from the start, in
// nanosleep(2). A Go timer would do, but for one thing: when every
// goroutine waits, the runtime sleeps in epoll_wait, whose timeout has
// millisecond resolution, so a timer for 200 µs from now fires up to a
// millisecond late (measured here: a median of 0.5 ms at 1,000 RPS). That
// lateness would be in every request's latency, as large as what the
// pairs add. The kernel's timer wakes the thread within its slack, 50 µs
// by default.
func (g *generator) sleepUntil(d time.Duration) {
	left := d - time.Since(g.start)
	if left <= 0 {
		return
	}
	ts := unix.NsecToTimespec(int64(min(left, maxSleep)))
	// EINTR or a short sleep: the schedule's loop sleeps again.
	_ = unix.Nanosleep(&ts, nil)
}

// dialTimeout bounds connecting, so a path that stopped accepting cannot
// hold a worker past the drain.
const dialTimeout = 5 * time.Second

func (g *generator) dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	return g.cfg.dial(ctx, "tcp", g.addr)
}

// expire ends the drain: every request not answered yet is unfinished.
// A deadline in the past ends the reads that wait for answers.
func (g *generator) expire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.deadline.Store(true)
	for _, c := range g.conns {
		if c != nil {
			c.SetDeadline(time.Unix(1, 0))
		}
	}
}

// replace makes c worker w's connection, unless the drain has ended.
func (g *generator) replace(w int, c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.deadline.Load() {
		return false
	}
	g.conns[w] = c
	return true
}

// work sends the due requests it takes on worker w's connection, one at a
// time, until the schedule is done, and returns what happened to each. A
// connection that fails is replaced before the next request.
func (g *generator) work(ctx context.Context, w int, capacity int) []sample {
	out := make([]sample, 0, capacity)
	g.mu.Lock()
	c := g.conns[w]
	g.mu.Unlock()
	br := bufio.NewReaderSize(c, 4<<10)
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for i := range g.due {
		s := sample{due: g.dueAt(i), outcome: failed}
		if g.deadline.Load() {
			s.outcome = unfinished
			s.sent, s.done = -1, time.Since(g.start)
			out = append(out, s)
			continue
		}
		if c == nil {
			next, err := g.dial(ctx)
			if err == nil && !g.replace(w, next) {
				next.Close()
				err = errors.New("the drain ended")
			}
			if err != nil {
				if g.deadline.Load() {
					s.outcome = unfinished
				} else {
					g.fail(err)
				}
				s.sent, s.done = -1, time.Since(g.start)
				out = append(out, s)
				continue
			}
			c = next
			br.Reset(c)
		}
		s.sent = time.Since(g.start)
		keep, err := g.roundTrip(c, br)
		s.done = time.Since(g.start)
		switch {
		case err == nil:
			s.outcome = answered
		case g.deadline.Load():
			s.outcome = unfinished
		default:
			g.fail(err)
		}
		out = append(out, s)
		if err != nil || !keep {
			c.Close()
			c = nil
			g.replace(w, nil)
		}
	}
	return out
}

// roundTrip writes the request on c and reads its whole answer from br. It
// reports whether the connection may carry the next request.
func (g *generator) roundTrip(c net.Conn, br *bufio.Reader) (keep bool, err error) {
	if _, err := c.Write(g.req); err != nil {
		return false, err
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return false, err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil {
		return false, err
	}
	if res.StatusCode != http.StatusOK {
		return !res.Close, fmt.Errorf("answered %s", res.Status)
	}
	return !res.Close, nil
}

func (g *generator) fail(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.firstErr == nil {
		g.firstErr = err
	}
}

// result sums up the samples; requests the workers never took (the drain
// ended first) count as unfinished at the drain's end.
func (g *generator) result(samples []sample, n int) loadResult {
	end := time.Since(g.start)
	for i := range g.due {
		samples = append(samples, sample{due: g.dueAt(i), sent: -1, done: end, outcome: unfinished})
	}
	res := loadResult{Rate: g.cfg.Rate, Scheduled: n}
	latency := make([]time.Duration, 0, len(samples))
	lag := make([]time.Duration, 0, len(samples))
	var last time.Duration
	for _, s := range samples {
		latency = append(latency, s.done-s.due)
		if s.sent >= 0 {
			lag = append(lag, s.sent-s.due)
		} else {
			lag = append(lag, s.done-s.due)
		}
		switch s.outcome {
		case answered:
			res.Completed++
			last = max(last, s.done)
		case failed:
			res.Errors++
		case unfinished:
			res.Unfinished++
		}
	}
	res.Latency, res.StartLag = percentilesOf(latency), percentilesOf(lag)
	if span := max(g.cfg.Duration, last); span > 0 {
		res.Achieved = float64(res.Completed) / span.Seconds()
	}
	if g.firstErr != nil {
		res.FirstError = strings.TrimSpace(g.firstErr.Error())
	}
	return res
}
