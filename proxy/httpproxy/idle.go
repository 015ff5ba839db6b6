package httpproxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// idleConn ends an HTTP/1 connection that makes no progress: a Read waits
// at most idle past the connection's last byte in either direction, and a
// Write at most idle. It bounds request and response bodies that stall
// (a client or an application that stops sending or reading) without the
// whole-request ReadTimeout and WriteTimeout of http.Server, which would
// also cut off long, healthy streams.
//
// The deadlines its user sets (http.Server's header and keep-alive
// timeouts, and its abortPendingRead) still apply: the effective deadline
// is the earlier of the two. mu makes setting the user's deadline and the
// effective one atomic, so an abort in the past is never overwritten.
type idleConn struct {
	net.Conn
	idle time.Duration
	last atomic.Int64 // unix nanoseconds of the last byte read or written

	mu      sync.Mutex
	readDL  time.Time // the user's read deadline; guarded by mu
	writeDL time.Time // the user's write deadline; guarded by mu
}

// withIdle returns c bounded by idle, or c itself when idle is zero.
func withIdle(c net.Conn, idle time.Duration) net.Conn {
	if idle <= 0 {
		return c
	}
	ic := &idleConn{Conn: c, idle: idle}
	ic.touch()
	return ic
}

func (c *idleConn) touch() { c.last.Store(time.Now().UnixNano()) }

func (c *idleConn) lastActive() time.Time { return time.Unix(0, c.last.Load()) }

func (c *idleConn) Read(b []byte) (int, error) {
	for {
		c.mu.Lock()
		user := c.readDL
		c.Conn.SetReadDeadline(earliest(user, c.lastActive().Add(c.idle)))
		c.mu.Unlock()
		n, err := c.Conn.Read(b)
		if n > 0 {
			c.touch()
		}
		var ne net.Error
		if n > 0 || !errors.As(err, &ne) || !ne.Timeout() {
			return n, err
		}
		c.mu.Lock()
		user = c.readDL
		c.mu.Unlock()
		if !user.IsZero() && !time.Now().Before(user) {
			return n, err // the user's deadline
		}
		if time.Since(c.lastActive()) >= c.idle {
			return n, err // idle in both directions
		}
		// Bytes were written meanwhile (a response streaming while the
		// client is silent): still alive, wait on.
	}
}

func (c *idleConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.Conn.SetWriteDeadline(earliest(c.writeDL, time.Now().Add(c.idle)))
	c.mu.Unlock()
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.touch()
	}
	return n, err
}

func (c *idleConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDL, c.writeDL = t, t
	return c.Conn.SetDeadline(t)
}

func (c *idleConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDL = t
	return c.Conn.SetReadDeadline(t)
}

func (c *idleConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeDL = t
	return c.Conn.SetWriteDeadline(t)
}

// CloseWrite keeps half-close working for upgraded streams.
func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// earliest is the earlier of a deadline that may be zero (none) and t.
func earliest(deadline, t time.Time) time.Time {
	if !deadline.IsZero() && deadline.Before(t) {
		return deadline
	}
	return t
}
