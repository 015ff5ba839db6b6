// Package tcp forwards opaque TCP streams: protocols the proxy does not
// understand, application TLS, and connections whose client never spoke.
package tcp

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrIdle is returned by Forward when neither side sent a byte for the
// idle timeout.
var ErrIdle = errors.New("opaque stream idle")

// Prefixed is a connection whose first bytes were already read (by protocol
// detection). Forward writes Buffered() first and then copies from Raw(), so
// the rest of the stream can move by kernel splice between two TCP sockets.
type Prefixed interface {
	net.Conn
	Buffered() []byte
	Raw() net.Conn
}

// Stats says how many bytes moved in each direction.
type Stats struct {
	FromClient int64 // client -> upstream, including the replayed prefix
	ToClient   int64 // upstream -> client
}

// Forward copies bytes both ways between client and upstream until both
// directions have ended, preserving half-close: when one side finishes
// sending, the other side's write half is shut so it sees EOF while it can
// still answer (RFC 9293 §3.6). An error in either direction (a reset)
// aborts both. Cancelling ctx closes both connections at once; Forward
// always closes both before it returns.
//
// A positive idle closes the stream, with ErrIdle, once no byte moved in
// either direction for that long (it is noticed within about a third more).
// Zero means no idle timeout.
func Forward(ctx context.Context, client, upstream net.Conn, idle time.Duration) (Stats, error) {
	var st Stats
	src := client
	if p, ok := client.(Prefixed); ok {
		if b := p.Buffered(); len(b) > 0 {
			n, err := upstream.Write(b)
			st.FromClient += int64(n)
			if err != nil {
				client.Close()
				upstream.Close()
				return st, err
			}
		}
		src = p.Raw()
	}

	stop := context.AfterFunc(ctx, func() {
		client.Close()
		upstream.Close()
	})
	defer stop()

	clock := newIdleClock(idle)
	var wg sync.WaitGroup
	var upErr error
	wg.Go(func() {
		var n int64
		n, upErr = pipe(upstream, src, clock)
		st.FromClient += n
	})
	toClient, downErr := pipe(src, upstream, clock)
	st.ToClient = toClient
	wg.Wait()
	client.Close()
	upstream.Close()
	if err := errors.Join(upErr, downErr); err != nil && ctx.Err() == nil {
		return st, err
	}
	return st, nil
}

// idleClock tells when a relay last moved bytes, in either direction.
//
// Each direction copies in rounds of a tenth of the timeout, bounded by a
// read deadline on its source, and records progress when a round ends:
// io.Copy between two *net.TCPConn keeps its splice(2) fast path, which a
// per-Read wrapper would lose. Progress is thus known a round late at
// worst, so a stream is declared idle only after timeout+round of silence
// on the record, and never before the timeout really passed.
type idleClock struct {
	timeout, round time.Duration
	last           atomic.Int64 // unix nanoseconds of the last recorded progress
}

// newIdleClock returns nil for a zero timeout: no deadlines at all.
func newIdleClock(timeout time.Duration) *idleClock {
	if timeout <= 0 {
		return nil
	}
	c := &idleClock{timeout: timeout, round: max(timeout/10, time.Millisecond)}
	c.touch()
	return c
}

func (c *idleClock) touch() { c.last.Store(time.Now().UnixNano()) }

func (c *idleClock) expired() bool {
	return time.Since(time.Unix(0, c.last.Load())) >= c.timeout+c.round
}

// copyIdle is io.Copy from src to dst, ended with ErrIdle when clock (if
// any) says the whole relay went idle.
func copyIdle(dst, src net.Conn, clock *idleClock) (int64, error) {
	if clock == nil {
		return io.Copy(dst, src)
	}
	var total int64
	for {
		src.SetReadDeadline(time.Now().Add(clock.round))
		n, err := io.Copy(dst, src)
		total += n
		if n > 0 {
			clock.touch()
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return total, err
		}
		// Only the read timed out: no byte was lost, the copy resumes.
		if clock.expired() {
			return total, ErrIdle
		}
	}
}

// pipe copies src to dst until EOF and then half-closes dst. On an error it
// closes both, so the copy in the other direction ends too. io.Copy between
// two *net.TCPConn uses splice(2) on Linux.
func pipe(dst, src net.Conn, clock *idleClock) (int64, error) {
	n, err := copyIdle(dst, src, clock)
	if err != nil {
		if isClosed(err) {
			err = nil
		}
		dst.Close()
		src.Close()
		return n, err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	return n, nil
}

// isClosed reports errors that only say the other direction already ended
// the connection; they are the normal end of a relay, not a failure.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}
