package httpproxy

import (
	"context"
	"net"
	"sync"

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
		return nil, &connectError{err}
	}
	if id := identityFrom(ctx); id != "" && u.meshTLS != nil {
		tc, err := u.meshTLS(ctx, c, id)
		if err != nil {
			c.Close()
			return nil, &connectError{err}
		}
		c = tc
	}
	uc := &upstreamConn{Conn: c, owner: u}
	u.mu.Lock()
	u.open[uc] = struct{}{}
	u.mu.Unlock()
	return uc, nil
}

// connectError is a failure to connect to a target: the dial, or the mesh
// TLS handshake with the target's proxy. The request that needed the
// connection never reached an application. It says what it wraps, and
// does not hide a timeout from errors.As.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// Is makes a connect failure eject its endpoint from the balancer at once.
func (e *connectError) Is(target error) bool { return target == balance.ErrUnreachable }

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
