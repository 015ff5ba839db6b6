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
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/tap"
)

// Config configures a Proxy; the zero value of each field but Metrics is
// usable and means the default written next to it.
type Config struct {
	Direction metrics.Direction
	Metrics   *metrics.Metrics // required
	Log       *slog.Logger     // nil: slog.Default()

	// ConnectTimeout bounds dialing an endpoint (and the mesh TLS
	// handshake); past it the client gets 504. Zero means 1s.
	ConnectTimeout time.Duration
	// ResponseTimeout bounds the wait for a response head once the request
	// head is sent; past it the client gets 504. Zero means none.
	ResponseTimeout time.Duration
	// ReadHeaderTimeout bounds a client's request head from its first
	// byte. Zero means 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes client connections idle between requests, and
	// pooled upstream connections, after this long. Zero means 90s.
	IdleTimeout time.Duration
	// BodyIdleTimeout ends a request whose body or response moves no byte
	// for this long, either way. Zero means none.
	BodyIdleTimeout time.Duration
	// MaxConnsPerHost bounds the connections to one endpoint address;
	// requests past it wait for one. Zero means no limit.
	MaxConnsPerHost int
	// MaxHeaderBytes bounds a request head (431 past it). Zero: 64 KiB.
	MaxHeaderBytes int
	// Pick chooses each request's endpoint; nil sends every request to its
	// connection's target.
	Pick httpproxy.Picker
	// MeshTLS wraps a new connection to an endpoint with an identity in
	// mesh TLS; nil means identities are ignored (plain text).
	MeshTLS func(ctx context.Context, c net.Conn, identity string) (net.Conn, error)
	// Tap receives every request and response while someone watches.
	Tap *tap.Hub
}

func (c *Config) setDefaults() {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = time.Second
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 90 * time.Second
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
}

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
}

// New returns a Proxy. Call Shutdown to stop it.
func New(cfg Config) *Proxy {
	cfg.setDefaults()
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

func (p *Proxy) shuttingDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing
}
