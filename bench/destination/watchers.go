package main

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

// change is one EndpointSlice update and when each observer saw it.
type change struct {
	key   changeKey
	svc   *service
	start time.Time // just before the Update call; set before expect
	// Set by the change loop after expect; read once the run is over.
	apiDone time.Time // the Update call returned
	// Guarded by collector.mu.
	watched  time.Time         // the benchmark's own watch saw it; zero if not
	arrivals map[int]time.Time // by watcher id
}

// collector matches what watchers receive to the changes made. Its methods
// are safe for concurrent use.
type collector struct {
	mu sync.Mutex
	// armed is set once the streams hold their first sets: from then on an
	// update that is no change's is counted.
	armed       bool
	pending     map[changeKey]*change
	changes     []*change
	outstanding int  // deliveries still due
	finished    bool // every change was expected
	done        chan struct{}
	unexpected  int // updates that match no change, or a change twice
}

func newCollector() *collector {
	return &collector{pending: map[changeKey]*change{}, done: make(chan struct{})}
}

func (c *collector) arm() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = true
}

// expect registers ch before its Update is sent, so no delivery can come
// first.
func (c *collector) expect(ch *change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch.arrivals = make(map[int]time.Time, ch.svc.watchers)
	c.pending[ch.key] = ch
	c.changes = append(c.changes, ch)
	c.outstanding += ch.svc.watchers
}

// arrived records that watcher id received k at t.
func (c *collector) arrived(k changeKey, id int, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.pending[k]
	if ch == nil {
		if c.armed {
			c.unexpected++
		}
		return
	}
	if _, dup := ch.arrivals[id]; dup {
		c.unexpected++
		return
	}
	ch.arrivals[id] = t
	c.outstanding--
	c.maybeDone()
}

// watched records that the benchmark's own watch of the slices saw k at t.
func (c *collector) watched(k changeKey, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch := c.pending[k]; ch != nil && ch.watched.IsZero() {
		ch.watched = t
	}
}

// unexpectedUpdate counts an update that cannot be any change's.
func (c *collector) unexpectedUpdate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed {
		c.unexpected++
	}
}

// finish says no more changes come; done closes once every delivery did.
func (c *collector) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finished = true
	c.maybeDone()
}

func (c *collector) maybeDone() {
	if c.finished && c.outstanding == 0 {
		close(c.done)
		c.finished = false // close once
	}
}

// watcher is one Get stream, as one proxy would hold it.
type watcher struct {
	id  int
	svc *service
	// held is the set the stream's updates add up to. Written by the
	// stream's goroutine only; read after it ended.
	held map[string]struct{}
}

// apply applies u to held and tells col what arrived at t.
func (w *watcher) apply(u *destinationv1.Update, t time.Time, col *collector) {
	switch k := u.GetKind().(type) {
	case *destinationv1.Update_Add:
		for _, ep := range k.Add.GetEndpoints() {
			w.held[ep.GetAddress()] = struct{}{}
			col.arrived(changeKey{opAdd, ep.GetAddress()}, w.id, t)
		}
	case *destinationv1.Update_Remove:
		for _, a := range k.Remove.GetAddresses() {
			delete(w.held, a)
			col.arrived(changeKey{opRemove, a}, w.id, t)
		}
	default: // NoEndpoints: every Service keeps endpoints all along
		clear(w.held)
		col.unexpectedUpdate()
	}
}

// run reads the stream until ctx ends or the stream fails (fail is told
// why). initial is called once: when held is the initial set, or when the
// stream ends before that.
func (w *watcher) run(ctx context.Context, client destinationv1.DestinationClient, col *collector, initial func(), fail func(error)) {
	var once sync.Once
	defer once.Do(initial)
	w.held = map[string]struct{}{}
	stream, err := client.Get(ctx, &destinationv1.GetDestinationRequest{Authority: w.svc.authority})
	if err != nil {
		fail(err)
		return
	}
	for started := false; ; {
		u, err := stream.Recv()
		now := time.Now()
		if err != nil {
			if ctx.Err() == nil {
				fail(err)
			}
			return
		}
		w.apply(u, now, col)
		if !started && maps.Equal(w.held, w.svc.initial) {
			started = true
			once.Do(initial)
		}
	}
}

// fleet is the watchers and their connections.
type fleet struct {
	watchers []*watcher
	conns    []*grpc.ClientConn
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once

	mu     sync.Mutex
	failed []error // guarded by mu
}

// openFleet opens cfg.Watchers streams to addr, over cfg.conns()
// connections, and returns once each holds its Service's initial set, or
// with an error when one fails or timeout passes first. Call stop in any
// case.
func openFleet(ctx context.Context, cfg config, addr string, fx *fixture, col *collector) (*fleet, error) {
	wctx, cancel := context.WithCancel(ctx)
	f := &fleet{cancel: cancel}
	for range cfg.conns() {
		cc, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			return f, fmt.Errorf("grpc client: %w", err)
		}
		f.conns = append(f.conns, cc)
	}
	var initial sync.WaitGroup
	initial.Add(cfg.Watchers)
	for i := range cfg.Watchers {
		w := &watcher{id: i, svc: fx.services[i%len(fx.services)]}
		f.watchers = append(f.watchers, w)
		client := destinationv1.NewDestinationClient(f.conns[i%len(f.conns)])
		f.wg.Go(func() { w.run(wctx, client, col, initial.Done, f.fail) })
	}
	all := make(chan struct{})
	go func() { initial.Wait(); close(all) }()
	select {
	case <-all:
	case <-ctx.Done():
		return f, context.Cause(ctx)
	case <-time.After(cfg.StreamTimeout):
		return f, fmt.Errorf("the streams did not all receive their first sets within %v", cfg.StreamTimeout)
	}
	if errs := f.errors(); len(errs) > 0 {
		return f, fmt.Errorf("%d of %d streams failed, the first: %w", len(errs), cfg.Watchers, errs[0])
	}
	return f, nil
}

func (f *fleet) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = append(f.failed, err)
}

// errors returns why streams ended other than by stop, so far.
func (f *fleet) errors() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]error(nil), f.failed...)
}

// stop ends every stream and closes the connections; it is idempotent.
// Once it returns, each watcher's held set may be read.
func (f *fleet) stop() {
	f.stopOnce.Do(func() {
		f.cancel()
		f.wg.Wait()
		for _, cc := range f.conns {
			_ = cc.Close()
		}
	})
}

// wrongSets counts the watchers whose set differs from their Service's
// addresses. Call it after stop.
func (f *fleet) wrongSets() int {
	n := 0
	for _, w := range f.watchers {
		if !maps.Equal(w.held, w.svc.addrs) {
			n++
		}
	}
	return n
}
