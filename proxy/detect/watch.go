package detect

import (
	"context"
	"net"
	"sync"
	"time"
)

// Watcher is Peek that another goroutine can stop without losing a byte
// the client sent: the inbound proxy dials the application for a client
// silent past the detect timeout (it may wait for the server to speak
// first), still looks for a peer proxy's late ClientHello, and stops
// looking once the application spoke.
type Watcher struct {
	raw  net.Conn
	head []byte
	conn *stoppable
}

// NewWatcher watches conn; a Conn from an earlier Peek goes on from the
// bytes it holds.
func NewWatcher(conn net.Conn) *Watcher {
	w := &Watcher{raw: conn}
	if pc, ok := conn.(*Conn); ok {
		w.raw, w.head = pc.Conn, pc.head
	}
	w.conn = &stoppable{Conn: w.raw}
	return w
}

// Peek is Peek on the watched connection, with no time limit if timeout
// is zero, which Stop ends early as its timeout would: Opaque, "timeout",
// with every byte read so far. The Conn it returns reads the connection
// given to NewWatcher, left without a read deadline. It waits for a first
// byte without a buffer, as a silent client may wait long: call it once.
func (w *Watcher) Peek(ctx context.Context, timeout time.Duration) (Result, *Conn, error) {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	res, pc, err := peek(ctx, newConn(w.conn, w.head), deadline, 1)
	w.conn.finish()
	if err != nil {
		return res, nil, err
	}
	return res, newConn(w.raw, pc.head), nil
}

// Stop ends Peek if it is waiting, or before it starts; once Peek has
// returned it does nothing. Safe to call from any goroutine.
func (w *Watcher) Stop() { w.conn.stop() }

// stoppable is a connection whose reads can be made to time out for good,
// until the watch is finished: once stopped, setting a read deadline does
// nothing, so Peek cannot undo the stop by setting its own.
type stoppable struct {
	net.Conn
	mu       sync.Mutex
	stopped  bool // guarded by mu
	finished bool // guarded by mu
}

func (c *stoppable) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || c.finished {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *stoppable) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.finished {
		c.stopped = true
		c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// finish hands the connection back, with no read deadline.
func (c *stoppable) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finished = true
	c.Conn.SetReadDeadline(time.Time{})
}
