// Package tcp forwards opaque TCP streams: protocols the proxy does not
// understand, application TLS, and connections whose client never spoke.
package tcp

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

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
func Forward(ctx context.Context, client, upstream net.Conn) (Stats, error) {
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

	var wg sync.WaitGroup
	var upErr error
	wg.Go(func() {
		var n int64
		n, upErr = pipe(upstream, src)
		st.FromClient += n
	})
	toClient, downErr := pipe(src, upstream)
	st.ToClient = toClient
	wg.Wait()
	client.Close()
	upstream.Close()
	if err := errors.Join(upErr, downErr); err != nil && ctx.Err() == nil {
		return st, err
	}
	return st, nil
}

// pipe copies src to dst until EOF and then half-closes dst. On an error it
// closes both, so the copy in the other direction ends too. io.Copy between
// two *net.TCPConn uses splice(2) on Linux.
func pipe(dst, src net.Conn) (int64, error) {
	n, err := io.Copy(dst, src)
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
