package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The load is open loop, for coordinated omission (Gil Tene, "How NOT to
// Measure Latency"): a closed-loop client sends a request only when the
// last one returned, so while the path stalls it sends nothing, and the
// stall shows in one request instead of in every request a real client
// would have sent meanwhile. Here request i is due at start + i/Rate
// whatever happened before, and its latency runs from that due time to
// the end of its answer: a request that waited for a free connection, or
// for a slow generator, carries that wait.
//
// Each worker owns one keep-alive connection and takes the next request
// index from a shared counter, sleeps until it is due (sleepUntil), and
// sends it. A worker that is free takes the next index at once, so while
// some worker is free every request is sent on time; when all are busy the
// next due request waits for the first to return.
//
// The load comes in turns: two loads (the unmeshed and the meshed pair)
// share the time in slices, one's turns in the even slices and the
// other's in the odd ones, so that what else the machine does meanwhile
// falls on both alike. The connections stay open between turns.

// loadConfig is one fixed-rate schedule.
type loadConfig struct {
	// Addr is the IP:port every connection goes to (the Service's
	// ClusterIP); Host is the requests' Host header.
	Addr, Host string
	Rate       float64 // requests per second, within a turn
	// Slice is the length of one turn, Turns how many the load gets, and
	// Phase (0 or 1) which slice of each pair is its: turn t runs over
	// [(2t+Phase) x Slice, (2t+Phase+1) x Slice) from the start.
	Slice time.Duration
	Turns int
	Phase int
	Conns int // keep-alive connections, one per worker
	// Timeout bounds one request (and a dial); after the schedule's end
	// requests not sent within Timeout are failed unsent.
	Timeout time.Duration
	// Dial opens the connections: in the client pod's network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// sample is one request; its times are offsets from the schedule's start.
type sample struct {
	due, sent, done time.Duration
	ok              bool // answered 200 with its whole body
	// waited says no worker was free when the request was due: it waited
	// for a connection to return, and the wait is part of its latency.
	waited bool
}

func (s sample) latency() time.Duration { return s.done - s.due }

// late is how long after its due time the request was written.
func (s sample) late() time.Duration { return s.sent - s.due }

// load is one schedule running.
type load struct {
	cfg      loadConfig
	req      []byte  // the request, written as it is every time
	interval float64 // nanoseconds between two due times in a turn
	perTurn  int64   // requests in a turn
	n        int64   // requests in the schedule
	next     atomic.Int64
	start    time.Time
	done     chan struct{} // closed when every worker has returned

	readers []*bufio.Reader // each worker's, over its connection

	mu       sync.Mutex
	conns    []net.Conn // guarded by mu: each worker's connection, nil while it has none
	stopped  bool       // guarded by mu: ctx ended, the connections were expired
	firstErr error      // guarded by mu
	failures int        // guarded by mu
	samples  [][]sample // each worker's; read after done
}

// errUnsent fails a request still waiting for a connection when the
// schedule's drain ended.
var errUnsent = errors.New("not sent: every connection was busy until the drain ended")

// errStopped fails a request the run's end caught before it was sent.
var errStopped = errors.New("the run was stopped")

// newLoad opens the connections of a schedule; Start starts it.
func newLoad(ctx context.Context, cfg loadConfig) (*load, error) {
	perTurn := int64(math.Round(cfg.Rate * cfg.Slice.Seconds()))
	switch {
	case cfg.Rate <= 0 || cfg.Conns < 1 || cfg.Timeout <= 0 || cfg.Turns < 1:
		return nil, fmt.Errorf("load: rate %v, %d connections, timeout %v, %d turns: want all positive", cfg.Rate, cfg.Conns, cfg.Timeout, cfg.Turns)
	case cfg.Phase != 0 && cfg.Phase != 1:
		return nil, fmt.Errorf("load: phase %d: want 0 or 1", cfg.Phase)
	case perTurn < 1:
		return nil, fmt.Errorf("load: a turn of %v at %v RPS is no request", cfg.Slice, cfg.Rate)
	}
	l := &load{
		cfg:      cfg,
		req:      []byte("GET / HTTP/1.1\r\nHost: " + cfg.Host + "\r\nUser-Agent: mesh-bench-meshcost\r\n\r\n"),
		interval: float64(time.Second) / cfg.Rate,
		perTurn:  perTurn,
		n:        perTurn * int64(cfg.Turns),
		done:     make(chan struct{}),
		conns:    make([]net.Conn, cfg.Conns),
		readers:  make([]*bufio.Reader, cfg.Conns),
		samples:  make([][]sample, cfg.Conns),
	}
	// Every connection is up, and has carried one request, before the
	// first request is due. No request measures a connection's setup; and
	// the client's proxy, which tells a connection's protocol by its first
	// bytes and takes one silent for longer than its detection timeout for
	// a protocol whose server speaks first (opaque TCP, no HTTP metrics),
	// sees HTTP on each at once, however long the load waits for its turn.
	for i := range l.conns {
		c, err := l.dial(ctx)
		if err == nil {
			l.conns[i], l.readers[i] = c, bufio.NewReaderSize(c, 4<<10)
			_, err = l.roundTrip(c, l.readers[i])
		}
		if err != nil {
			for _, c := range l.conns[:i+1] {
				if c != nil {
					c.Close()
				}
			}
			return nil, fmt.Errorf("load: connect to %s and send a first request: %w", cfg.Addr, err)
		}
	}
	return l, nil
}

// Start starts the schedule at start, which two loads taking turns share,
// and returns at once. Wait returns the schedule's requests.
func (l *load) Start(ctx context.Context, start time.Time) {
	l.start = start
	var wg sync.WaitGroup
	for w := range l.conns {
		wg.Go(func() { l.samples[w] = l.work(ctx, w) })
	}
	stopWatch := context.AfterFunc(ctx, l.stop)
	go func() {
		wg.Wait()
		stopWatch()
		close(l.done)
	}()
}

// loadResult is what a schedule did.
type loadResult struct {
	samples  []sample // in the order they were due
	failures int
	firstErr error // of the failures; nil without one
}

// Wait waits until every request was sent and answered (or failed), or
// ctx ended, and returns them.
func (l *load) Wait() loadResult {
	<-l.done
	all := slices.Concat(l.samples...)
	slices.SortFunc(all, func(a, b sample) int { return cmp.Compare(a.due, b.due) })
	l.mu.Lock()
	defer l.mu.Unlock()
	return loadResult{samples: all, failures: l.failures, firstErr: l.firstErr}
}

// dueAt is request i's due time, as an offset from the start.
func (l *load) dueAt(i int64) time.Duration {
	turn := i / l.perTurn
	return time.Duration(2*turn+int64(l.cfg.Phase))*l.cfg.Slice + time.Duration(float64(i%l.perTurn)*l.interval)
}

// close closes the connections of a load that was never started.
func (l *load) close() {
	for _, c := range l.conns {
		c.Close()
	}
}

func (l *load) dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	return l.cfg.Dial(ctx, "tcp", l.cfg.Addr)
}

// stop ends the run when ctx ends: a deadline in the past ends every read
// and write in flight, and no connection is opened again.
func (l *load) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	for _, c := range l.conns {
		if c != nil {
			c.SetDeadline(time.Unix(1, 0))
		}
	}
}

// arm sets c's deadline for one request, unless the run was stopped: the
// deadline in the past that stop set must stay.
func (l *load) arm(c net.Conn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return errStopped
	}
	return c.SetDeadline(time.Now().Add(l.cfg.Timeout))
}

// setConn makes c worker w's connection; false when the run was stopped.
func (l *load) setConn(w int, c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	l.conns[w] = c
	return true
}

func (l *load) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures++
	if l.firstErr == nil {
		l.firstErr = err
	}
}

// work is worker w: it sends requests on its connection until the
// schedule is done or ctx ends, and returns them.
func (l *load) work(ctx context.Context, w int) []sample {
	out := make([]sample, 0, l.n/int64(l.cfg.Conns)+1)
	l.mu.Lock()
	c := l.conns[w]
	l.mu.Unlock()
	br := l.readers[w]
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	drainEnd := l.dueAt(l.n-1) + l.cfg.Timeout
	for {
		i := l.next.Add(1) - 1
		if i >= l.n {
			return out
		}
		s := sample{due: l.dueAt(i)}
		s.waited = time.Since(l.start) > s.due
		if sleepUntil(ctx, l.start.Add(s.due)) != nil {
			return out
		}
		s.sent = time.Since(l.start)
		if s.sent > drainEnd {
			s.done = s.sent
			l.fail(errUnsent)
			out = append(out, s)
			continue
		}
		var err error
		if c == nil {
			if c, err = l.dial(ctx); err == nil && !l.setConn(w, c) {
				c.Close()
				c, err = nil, errStopped
			}
			if c != nil {
				br.Reset(c)
			}
		}
		keep := false
		if err == nil {
			keep, err = l.roundTrip(c, br)
		}
		s.done = time.Since(l.start)
		s.ok = err == nil
		if err != nil {
			l.fail(err)
		}
		out = append(out, s)
		// An answer other than 200 leaves the connection usable; roundTrip
		// says when it is not.
		if c != nil && !keep {
			c.Close()
			c = nil
			l.setConn(w, nil)
		}
	}
}

// maxNap bounds one nanosleep of sleepUntil, so that it sees ctx end.
const maxNap = 50 * time.Millisecond

// sleepUntil sleeps until t, or until ctx ends (its error then). It parks
// the goroutine's thread in nanosleep(2) rather than on a Go timer: when
// the process has nothing else to do, the runtime waits for its timers in
// epoll_wait, whose timeout is whole milliseconds, so a timer wakes up as
// much as a millisecond late (golang.org/issue/44343); every request sent
// that late would carry the generator's lateness in its latency from its
// due time. A thread asleep in the kernel wakes within its timer slack,
// 50 µs by default. The cost is a thread per sleeping worker.
func sleepUntil(ctx context.Context, t time.Time) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := time.Until(t)
		if d <= 0 {
			return nil
		}
		ts := unix.NsecToTimespec(int64(min(d, maxNap)))
		// EINTR (the runtime's preemption signal) only shortens the nap:
		// the loop measures again.
		_ = unix.Nanosleep(&ts, nil)
	}
}

// roundTrip writes the request on c and reads its whole answer from br
// within the timeout. It reports whether c may carry the next request.
func (l *load) roundTrip(c net.Conn, br *bufio.Reader) (keep bool, err error) {
	if err := l.arm(c); err != nil {
		return false, err
	}
	if _, err := c.Write(l.req); err != nil {
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
