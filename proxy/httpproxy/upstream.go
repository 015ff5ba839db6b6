package httpproxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/mesh-dev/mesh/proxy/balance"
)

// upstreams dials target connections and remembers the open ones, so that
// Shutdown can close every one of them once no request is left. The
// transports' CloseIdleConnections misses a connection whose last stream
// is still being torn down (an HTTP/2 RST_STREAM in flight), which would
// otherwise outlive the proxy. Safe for concurrent use; mu guards open.
type upstreams struct {
	dialer  *net.Dialer
	meshTLS func(ctx context.Context, c net.Conn, identity string) (net.Conn, error)

	mu   sync.Mutex
	open map[*upstreamConn]struct{}
}

func newUpstreams(d *net.Dialer, meshTLS func(context.Context, net.Conn, string) (net.Conn, error)) *upstreams {
	return &upstreams{dialer: d, meshTLS: meshTLS, open: map[*upstreamConn]struct{}{}}
}

// DialContext connects to addr, in mesh TLS when the request that needs
// the connection goes to a meshed endpoint. An endpoint's identity does not
// change while its address is in the set, so the transports' pools (keyed
// by address) never mix plain and TLS connections to one endpoint.
func (u *upstreams) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := u.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, &ConnectError{err}
	}
	if id := identityFrom(ctx); id != "" && u.meshTLS != nil {
		tc, err := u.meshTLS(ctx, c, id)
		if err != nil {
			c.Close()
			return nil, &ConnectError{err}
		}
		c = tc
	}
	uc := &upstreamConn{Conn: c, owner: u}
	u.mu.Lock()
	u.open[uc] = struct{}{}
	u.mu.Unlock()
	return uc, nil
}

// ConnectError is a failure to connect to a target: the dial, or the mesh
// TLS handshake with the target's proxy. The request that needed the
// connection never reached an application. It says what it wraps, and
// does not hide a timeout from errors.As.
type ConnectError struct{ Err error }

func (e *ConnectError) Error() string { return e.Err.Error() }
func (e *ConnectError) Unwrap() error { return e.Err }

// Is makes a connect failure eject its endpoint from the balancer at once.
func (e *ConnectError) Is(target error) bool { return target == balance.ErrUnreachable }

// closeAll closes every connection still open.
func (u *upstreams) closeAll() {
	u.mu.Lock()
	conns := make([]*upstreamConn, 0, len(u.open))
	for c := range u.open {
		conns = append(conns, c)
	}
	u.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

type upstreamConn struct {
	net.Conn
	owner *upstreams
	once  sync.Once
}

func (c *upstreamConn) Close() error {
	c.once.Do(func() {
		c.owner.mu.Lock()
		delete(c.owner.open, c)
		c.owner.mu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite keeps half-close working for upgraded (WebSocket) streams,
// which ReverseProxy copies in both directions.
func (c *upstreamConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// sharedFailures fails the requests that waited for a connection to an
// address while its dial failed with that dial's error, at once. The
// HTTP/2 transport dials one connection per address at a time
// (MaxConnsPerHost 1); when that dial fails, the requests queued behind it
// are handed a dial each, one after the other, and against a target that
// drops SYNs each would wait out its own ConnectTimeout. The transport
// starts the next queued dial as soon as one fails, so a dial that starts
// within failureShareWindow of its address's last failure is one of those
// and fails the same way; each such failure moves the window on, so that
// the whole queue drains. Safe for concurrent use; mu guards last.
type sharedFailures struct {
	mu   sync.Mutex
	last map[string]failedDial // by address; only failures within the window matter
}

type failedDial struct {
	err error
	at  time.Time
}

// failureShareWindow is far longer than the transport takes to start the
// next queued dial, and short enough that a request that comes later tries
// for itself.
const failureShareWindow = 10 * time.Millisecond

// wrap returns dial, failing fast as the type says.
func (f *sharedFailures) wrap(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := f.recent(addr); err != nil {
			return nil, err
		}
		c, err := dial(ctx, network, addr)
		f.record(addr, err)
		return c, err
	}
}

// recent returns the failure of the last dial to addr if it ended within
// the window, and moves the window on.
func (f *sharedFailures) recent(addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	last, ok := f.last[addr]
	if !ok {
		return nil
	}
	now := time.Now()
	if now.Sub(last.at) >= failureShareWindow {
		delete(f.last, addr)
		return nil
	}
	f.last[addr] = failedDial{err: last.err, at: now}
	return last.err
}

// record notes how a dial to addr ended. Failures past the window are
// dropped as others come, so that a sweep of dead addresses keeps no
// more than the failures of the last few milliseconds.
func (f *sharedFailures) record(addr string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.last, addr)
		return
	}
	if errors.Is(err, context.Canceled) {
		return // says nothing about the address
	}
	now := time.Now()
	if f.last == nil {
		f.last = map[string]failedDial{}
	}
	if len(f.last) >= 64 {
		for a, d := range f.last {
			if now.Sub(d.at) >= failureShareWindow {
				delete(f.last, a)
			}
		}
	}
	f.last[addr] = failedDial{err: err, at: now}
}
