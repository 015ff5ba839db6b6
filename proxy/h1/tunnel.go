package h1

import (
	"errors"
	"io"
	"sync/atomic"
	"syscall"
	"time"
)

// tunnel relays bytes both ways between the client and u once the target
// switched protocols (101) or took a CONNECT (2xx): bytes either side
// had already sent go first, a half-close travels on, and the tunnel ends
// when both directions have. With a body idle timeout it closes both
// connections once neither direction moved a byte for that long.
func (x *exchange) tunnel(u *upstream) {
	cc := x.cc
	cc.tc.idle, u.tc.idle = 0, 0 // the watchdog below bounds the pair instead
	cc.tc.readBy(time.Time{})
	var last atomic.Int64
	touch := func() { last.Store(time.Now().UnixNano()) }
	touch()
	closeBoth := func() { cc.c.Close(); u.tc.Close() }
	if idle := cc.p.cfg.BodyIdleTimeout; idle > 0 {
		var watch *time.Timer
		watch = time.AfterFunc(idle, func() {
			if rest := time.Until(time.Unix(0, last.Load()).Add(idle)); rest > 0 {
				watch.Reset(rest)
				return
			}
			closeBoth()
		})
		defer watch.Stop()
	}
	up := make(chan struct{})
	go func() {
		defer close(up)
		relay(u.tc, cc.br, touch)
		u.tc.CloseWrite()
	}()
	relay(cc.tc, u.br, touch)
	cc.tc.CloseWrite()
	<-up
	u.close()
	x.done(true)
}

// relay copies src to dst until src ends or either fails, calling touch
// after each move.
func relay(dst io.Writer, src io.Reader, touch func()) {
	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			touch()
		}
		if err != nil {
			return
		}
	}
}

// isReset reports a connection reset or broken by its peer.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
