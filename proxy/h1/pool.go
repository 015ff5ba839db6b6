package h1

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
)

// upstream is one connection to an endpoint with its buffers. It serves
// one request at a time, then goes back to its pool.
type upstream struct {
	key poolKey
	tc  *timedConn
	br  *bufio.Reader
	bw  *bufio.Writer
	// raw is the TCP socket (under mesh TLS, if any), and peek the check
	// alive runs on it, made once so that checking allocates nothing.
	raw    syscall.RawConn
	peek   func(fd uintptr) bool
	peekOK bool
	// pending: the look found bytes waiting under mesh TLS, which only a
	// read through TLS can tell apart.
	pending bool
	since   time.Time // idle since, while pooled
	// reused is set once the connection has carried a request: a failure
	// before the next response's first byte may then be the endpoint
	// closing an idle connection, and a request without a body is sent
	// again on a new one.
	reused bool
	pool   *pool
	closed bool
}

type poolKey struct {
	addr     netip.AddrPort
	identity string // the mesh TLS identity required of it; "" for plain text
}

// pool keeps idle upstream connections per endpoint, last in first out:
// the most recently used connection is the one least likely to have been
// closed by its server, and the ones at the bottom age out.
type pool struct {
	dialer  *net.Dialer
	meshTLS func(ctx context.Context, c net.Conn, identity string) (net.Conn, error)
	idle    time.Duration // body idle bound of each connection
	maxIdle time.Duration // how long a connection may sit in the pool
	perHost int           // most open connections per address, 0: no limit

	mu     sync.Mutex
	free   map[poolKey][]*upstream
	nfree  int
	open   map[*upstream]struct{}
	hosts  map[netip.AddrPort]*hostSlots
	closed bool
}

// maxIdleConns bounds the pooled connections to all endpoints: a pod that
// talks to thousands of addresses (a headless Service's churning pods)
// must not keep one to each. Past it, a connection put back is closed.
const maxIdleConns = 512

// maxIdlePerKey bounds the pooled connections to one endpoint.
const maxIdlePerKey = 128

func newPool(d *net.Dialer, meshTLS func(context.Context, net.Conn, string) (net.Conn, error), idle, maxIdle time.Duration, perHost int) *pool {
	return &pool{
		dialer: d, meshTLS: meshTLS, idle: idle, maxIdle: maxIdle, perHost: perHost,
		free: map[poolKey][]*upstream{}, open: map[*upstream]struct{}{}, hosts: map[netip.AddrPort]*hostSlots{},
	}
}

// hostSlots counts the open connections to one address under perHost;
// waiters queue for a slot.
type hostSlots struct {
	n       int
	waiters []chan struct{}
}

// get returns a pooled connection to key that still looks alive, or dials
// a new one. A dial failure is an *httpproxy.ConnectError: nothing was sent. A
// connection pooled less than a second ago is taken without a look at its
// socket unless careful says the request could not be sent again (it has
// a body): a server rarely closes one that fresh without saying so, and a
// request without a body that finds it closed goes again on a new one.
func (p *pool) get(ctx context.Context, key poolKey, careful bool) (*upstream, error) {
	now := time.Now()
	for {
		p.mu.Lock()
		stack := p.free[key]
		if len(stack) == 0 {
			p.mu.Unlock()
			break
		}
		u := stack[len(stack)-1]
		stack[len(stack)-1] = nil
		p.free[key] = stack[:len(stack)-1]
		p.nfree--
		p.mu.Unlock()
		idle := now.Sub(u.since)
		if idle < p.maxIdle && ((!careful && idle < time.Second) || u.alive()) {
			return u, nil
		}
		u.close()
	}
	return p.fresh(ctx, key)
}

// fresh dials a new connection to key, once there is a slot for it.
func (p *pool) fresh(ctx context.Context, key poolKey) (*upstream, error) {
	if err := p.takeSlot(ctx, key.addr); err != nil {
		return nil, &httpproxy.ConnectError{Err: err}
	}
	u, err := p.dial(ctx, key)
	if err != nil {
		p.giveSlot(key.addr)
		return nil, err
	}
	return u, nil
}

func (p *pool) dial(ctx context.Context, key poolKey) (*upstream, error) {
	c, err := p.dialer.DialContext(ctx, "tcp", key.addr.String())
	if err != nil {
		return nil, &httpproxy.ConnectError{Err: err}
	}
	var raw syscall.RawConn
	if sc, ok := c.(syscall.Conn); ok {
		raw, _ = sc.SyscallConn()
	}
	if key.identity != "" && p.meshTLS != nil {
		tc, err := p.meshTLS(ctx, c, key.identity)
		if err != nil {
			c.Close()
			return nil, &httpproxy.ConnectError{Err: err}
		}
		c = tc
	}
	t := &timedConn{Conn: c, idle: p.idle}
	u := &upstream{key: key, tc: t, raw: raw, pool: p,
		br: bufio.NewReaderSize(t, 4<<10), bw: bufio.NewWriterSize(t, 4<<10)}
	u.peek = u.peekSocket
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return nil, &httpproxy.ConnectError{Err: errors.New("proxy shutting down")}
	}
	p.open[u] = struct{}{}
	p.mu.Unlock()
	return u, nil
}

// put returns u to the pool after a response that left it reusable.
func (p *pool) put(u *upstream) {
	u.reused = true
	u.since = time.Now()
	u.tc.readBy(time.Time{})
	u.tc.idle = p.idle // a route's idle timeout was its request's
	p.mu.Lock()
	if p.closed || p.nfree >= maxIdleConns || len(p.free[u.key]) >= maxIdlePerKey {
		p.mu.Unlock()
		u.close()
		return
	}
	p.free[u.key] = append(p.free[u.key], u)
	p.nfree++
	p.mu.Unlock()
}

// close closes u for good and frees its slot.
func (u *upstream) close() {
	p := u.pool
	p.mu.Lock()
	if u.closed {
		p.mu.Unlock()
		return
	}
	u.closed = true
	delete(p.open, u)
	p.mu.Unlock()
	u.tc.Close()
	p.giveSlot(u.key.addr)
}

// alive checks, without blocking, that the server has not closed a pooled
// connection: a read of the TCP socket that finds EOF or an error means
// it did. Bytes waiting on a plain-text connection before any request are
// a broken server as well; under mesh TLS they are read through TLS
// (tlsAlive).
func (u *upstream) alive() bool {
	if u.br.Buffered() > 0 {
		return false // the server spoke out of turn
	}
	if u.raw == nil {
		return true
	}
	u.peekOK, u.pending = true, false
	u.raw.Read(u.peek)
	if u.peekOK && u.pending {
		return u.tlsAlive()
	}
	return u.peekOK
}

// tlsPeekWait bounds the read tlsAlive makes. The bytes it reads are
// already on the socket, so it waits this long only when they were a
// message TLS consumes (a session ticket, a key update), which a
// connection's first response has usually consumed already.
const tlsPeekWait = time.Millisecond

// tlsAlive reads the bytes waiting on an idle mesh TLS connection: a
// TLS message that carries no data is consumed and the connection stays;
// its peer's close_notify, an error or data out of turn mean it is
// closing. A peer proxy closing an idle connection says close_notify
// first, so this keeps a request from going out on it.
func (u *upstream) tlsAlive() bool {
	u.tc.readBy(time.Now().Add(tlsPeekWait))
	_, err := u.br.Peek(1)
	u.tc.readBy(time.Time{})
	return isTimeout(err)
}

// peekSocket looks at the socket without taking a byte or waiting.
func (u *upstream) peekSocket(fd uintptr) bool {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case n == 0 && err == nil:
		u.peekOK = false // EOF
	case err == syscall.EAGAIN:
	case err != nil:
		u.peekOK = false
	case u.key.identity == "":
		u.peekOK = false
	default:
		u.pending = true
	}
	return true // never wait: this is a check, not a read
}

func (p *pool) takeSlot(ctx context.Context, addr netip.AddrPort) error {
	if p.perHost <= 0 {
		return nil
	}
	p.mu.Lock()
	h := p.hosts[addr]
	if h == nil {
		h = &hostSlots{}
		p.hosts[addr] = h
	}
	if h.n < p.perHost {
		h.n++
		p.mu.Unlock()
		return nil
	}
	wait := make(chan struct{})
	h.waiters = append(h.waiters, wait)
	p.mu.Unlock()
	select {
	case <-wait:
		return nil // the slot was handed over
	case <-ctx.Done():
		p.mu.Lock()
		for i, w := range h.waiters {
			if w == wait {
				h.waiters = append(h.waiters[:i], h.waiters[i+1:]...)
				p.mu.Unlock()
				return ctx.Err()
			}
		}
		p.mu.Unlock()
		p.giveSlot(addr) // handed over as we gave up: pass it on
		return ctx.Err()
	}
}

func (p *pool) giveSlot(addr netip.AddrPort) {
	if p.perHost <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.hosts[addr]
	if h == nil {
		return
	}
	if len(h.waiters) > 0 {
		w := h.waiters[0]
		h.waiters = h.waiters[1:]
		close(w) // the slot passes to the waiter, still counted
		return
	}
	h.n--
	if h.n == 0 {
		delete(p.hosts, addr)
	}
}

// closeIdle closes every pooled connection.
func (p *pool) closeIdle() {
	p.mu.Lock()
	var idle []*upstream
	for k, stack := range p.free {
		idle = append(idle, stack...)
		delete(p.free, k)
	}
	p.nfree = 0
	p.mu.Unlock()
	for _, u := range idle {
		u.close()
	}
}

// expire closes the connections pooled for longer than maxIdle.
func (p *pool) expire(now time.Time) {
	p.mu.Lock()
	var old []*upstream
	for k, stack := range p.free {
		if len(stack) == 0 {
			delete(p.free, k) // kept while in use, to append without allocating
			continue
		}
		// Oldest at the bottom: keep the young top.
		i := 0
		for i < len(stack) && now.Sub(stack[i].since) >= p.maxIdle {
			i++
		}
		if i == 0 {
			continue
		}
		old = append(old, stack[:i]...)
		rest := append(stack[:0:0], stack[i:]...)
		if len(rest) == 0 {
			delete(p.free, k)
		} else {
			p.free[k] = rest
		}
		p.nfree -= i
	}
	p.mu.Unlock()
	for _, u := range old {
		u.close()
	}
}

// closeAll closes every connection, in use or not: the proxy is done.
func (p *pool) closeAll() {
	p.mu.Lock()
	p.closed = true
	all := make([]*upstream, 0, len(p.open))
	for u := range p.open {
		all = append(all, u)
	}
	p.free, p.nfree = map[poolKey][]*upstream{}, 0
	p.mu.Unlock()
	for _, u := range all {
		u.close()
	}
}
