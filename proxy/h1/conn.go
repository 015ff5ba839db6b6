package h1

import (
	"net"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
)

// timedConn bounds each read and write of a connection: by idle (a body
// that moves no byte for that long), and by until when it is set (a
// request head that takes too long, a response that does not begin).
// One goroutine reads and one writes at a time, as bufio does.
type timedConn struct {
	net.Conn
	idle time.Duration

	readUntil time.Time // zero: only idle bounds reads
	readSet   time.Time // the read deadline last set on Conn
	writeSet  time.Time

	// got and written count the bytes read and written, so that a failed
	// request can tell whether any byte of it went out, or of its response
	// came back (resend.go). Each is touched by the one goroutine that
	// reads, or writes, at the time.
	got, written int64
	// tee, when set, keeps a copy of what is written: the request body
	// sent to a proven peer proxy, for a resend (resend.go). Set and
	// cleared by the goroutine that writes.
	tee *httpproxy.Replay
}

// refresh is how stale a deadline may get before it is pushed forward:
// setting one costs a timer update, so a busy stream does it once in a
// while rather than on every read.
func (c *timedConn) refresh() time.Duration { return c.idle / 16 }

func (c *timedConn) Read(b []byte) (int, error) {
	// A deadline set before and bounding nothing now (a route's idle
	// timeout, over with its request) is cleared here too.
	if c.idle > 0 || !c.readUntil.IsZero() || !c.readSet.IsZero() {
		var d time.Time
		if c.idle > 0 {
			now := time.Now()
			d = c.readSet
			if d.IsZero() || d.Sub(now) < c.idle-c.refresh() {
				d = now.Add(c.idle)
			}
		}
		if !c.readUntil.IsZero() && (d.IsZero() || c.readUntil.Before(d)) {
			d = c.readUntil
		}
		if !d.Equal(c.readSet) {
			c.Conn.SetReadDeadline(d)
			c.readSet = d
		}
	}
	n, err := c.Conn.Read(b)
	c.got += int64(n)
	return n, err
}

func (c *timedConn) Write(b []byte) (int, error) {
	switch {
	case c.idle > 0:
		now := time.Now()
		if c.writeSet.IsZero() || c.writeSet.Sub(now) < c.idle-c.refresh() {
			c.writeSet = now.Add(c.idle)
			c.Conn.SetWriteDeadline(c.writeSet)
		}
	case !c.writeSet.IsZero():
		// The request that bounded writes is over: a deadline it left
		// must not cut a later response.
		c.writeSet = time.Time{}
		c.Conn.SetWriteDeadline(time.Time{})
	}
	n, err := c.Conn.Write(b)
	c.written += int64(n)
	if c.tee != nil {
		c.tee.Add(b[:n])
	}
	return n, err
}

// deadlineSlack is how much earlier than asked a bound set by readBy may
// fall: a bound that moves by less is left as it is, so that a busy
// connection updates its timer a few times a second, not per request.
const deadlineSlack = 250 * time.Millisecond

// readBy sets an absolute bound on reads (zero: none but idle).
func (c *timedConn) readBy(t time.Time) {
	if !t.IsZero() && !c.readUntil.IsZero() && !t.Before(c.readUntil) && t.Sub(c.readUntil) < deadlineSlack {
		return
	}
	c.readUntil = t
	if t.IsZero() && c.idle <= 0 && !c.readSet.IsZero() {
		c.Conn.SetReadDeadline(time.Time{})
		c.readSet = time.Time{}
	}
}

// CloseWrite half-closes the connection where it can, for tunnels.
func (c *timedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
