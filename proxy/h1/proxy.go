// Package h1 forwards HTTP/1.x connections with a data path made for it:
// one goroutine per client connection reads each request head into a
// reused buffer, takes an upstream connection from a LIFO pool per
// endpoint, writes the head on with only the hop-by-hop fields removed
// (name case and order kept), copies the body with a pooled buffer, and
// relays the response the same way. Nothing is parsed into maps, no
// request is cloned, and a request with no body costs no goroutine
// handoff. Net/http's server, ReverseProxy and Transport did the same job
// with a reader goroutine per connection, a writer handoff per request and
// some 77 allocations; this is the proxy's hot path.
//
// Requests are framed strictly (RFC 9112): anything two parsers could
// read differently is refused with 400 and the connection closed, so the
// proxy never forwards a request its target would split differently.
package h1

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
)

// Config is the HTTP proxy's configuration, shared with the HTTP/2 side
// (httpproxy.Config): every field means the same here, but
// MaxConcurrentStreams, which HTTP/1 has no use for. BodyIdleTimeout
// bounds bodies and tunnels both ways; MaxConnsPerHost the connections
// to one endpoint address; IdleTimeout client connections between
// requests and pooled upstream connections alike.
type Config = httpproxy.Config

// Proxy serves HTTP/1 connections handed to it by Serve. Its methods are
// safe for concurrent use.
type Proxy struct {
	cfg  Config
	pool *pool
	stop chan struct{} // closed by Shutdown: ends the pool's expiry loop

	mu      sync.Mutex
	conns   map[*clientConn]struct{}
	closing bool
	active  sync.WaitGroup // Serve calls in progress
	// stopping mirrors closing, for the checks every response makes
	// without the lock.
	stopping atomic.Bool
}

// New returns a Proxy. Call Shutdown to stop it.
func New(cfg Config) *Proxy {
	cfg = cfg.WithDefaults()
	d := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	p := &Proxy{
		cfg:   cfg,
		pool:  newPool(d, cfg.MeshTLS, cfg.BodyIdleTimeout, cfg.IdleTimeout, cfg.MaxConnsPerHost),
		stop:  make(chan struct{}),
		conns: map[*clientConn]struct{}{},
	}
	go p.expireIdle()
	return p
}

// expireIdle closes pooled connections past their idle time, so that a
// burst's connections do not stay open for ever once it is over.
func (p *Proxy) expireIdle() {
	t := time.NewTicker(p.cfg.IdleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.pool.expire(now)
		}
	}
}

// Serve forwards the requests of c, an accepted connection whose client
// speaks HTTP/1.x, and returns when the connection is done; it closes c.
func (p *Proxy) Serve(c net.Conn, info httpproxy.ConnInfo) {
	cc := newClientConn(p, c, &info)
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[cc] = struct{}{}
	p.active.Add(1)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, cc)
		p.mu.Unlock()
		p.active.Done()
	}()
	cc.serve()
}

// CloseIdle closes the pooled connections to every endpoint, for example
// once an endpoint the balancer removed has drained.
func (p *Proxy) CloseIdle() { p.pool.closeIdle() }

// Shutdown closes the client connections that wait for a request, lets
// the others finish the request they carry (then they close), and returns
// when all are done or ctx ends, when the rest are closed.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if !p.closing {
		p.closing = true
		p.stopping.Store(true)
		close(p.stop)
	}
	for cc := range p.conns {
		cc.closeIfIdle()
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.active.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		p.mu.Lock()
		for cc := range p.conns {
			cc.c.Close()
		}
		p.mu.Unlock()
		p.pool.closeAll()
		<-done
		err = ctx.Err()
	}
	p.pool.closeAll()
	return err
}

// shuttingDown reports whether Shutdown was called: every response says
// Connection: close from then on, so that no client, a client proxy's
// pool least of all, sends another request on a connection about to
// close.
func (p *Proxy) shuttingDown() bool { return p.stopping.Load() }
