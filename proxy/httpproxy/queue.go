package httpproxy

import (
	"net"
	"sync"
)

// connQueue is a net.Listener fed by the proxy rather than by accept(2): the
// proxy accepts and detects the protocol, then pushes the HTTP
// connections, HTTP/1 and HTTP/2 alike, here for the shared http.Server to
// serve.
type connQueue struct {
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{conns: make(chan net.Conn), closed: make(chan struct{})}
}

// push hands c to the server; it returns false once the queue is closed.
func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.conns <- c:
		return true
	case <-q.closed:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

// Close is idempotent; pushes after it fail.
func (q *connQueue) Close() error {
	q.closeOnce.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return queueAddr{} }

type queueAddr struct{}

func (queueAddr) Network() string { return "detected" }
func (queueAddr) String() string  { return "detected-http" }
