// Package h2 forwards HTTP/2 connections frame by frame: h2c with prior
// knowledge from applications, and HTTP/2 inside mesh TLS between proxies,
// which carries gRPC.
//
// Each client connection has one reader goroutine, and each connection to
// a target another. A reader decodes a frame and writes what it means
// straight to the other side's connection under that connection's write
// lock: request heads are checked as net/http's server checks them,
// authorized, balanced per stream and re-encoded for the target; DATA,
// trailers, informational heads and resets pass both ways. No goroutine
// runs per stream and no frame is handed over a channel; header blocks are
// encoded under the write lock, as HPACK state follows the wire. Net/http's
// server, ReverseProxy and Transport did this job with a goroutine per
// stream and per request body, header maps, a request clone and hand-offs
// between readers and writers; this is the proxy's hot path for HTTP/2.
//
// Flow control runs end to end: a stream's sender is credited only for
// what went onward, so a stream whose receiver is slow holds at most its
// window in the proxy, and never stalls the other streams of its
// connections (see streamWindow).
package h2

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
)

// Config is the HTTP proxy's configuration, shared with HTTP/1
// (httpproxy.Config). HTTP/2 uses Pick, Routes, MeshTLS, Tap, the timeouts
// ConnectTimeout, ResponseTimeout and IdleTimeout (client connections with
// no stream open, and idle target connections alike), MaxHeaderBytes (the
// request header list, SETTINGS_MAX_HEADER_LIST_SIZE) and
// MaxConcurrentStreams; the rest is HTTP/1's.
type Config = httpproxy.Config

// Proxy serves HTTP/2 connections handed to it by Serve. Its methods are
// safe for concurrent use.
type Proxy struct {
	cfg  Config
	pool *pool
	stop chan struct{} // closed by Shutdown: ends the pool's expiry loop
	// writeTimeout bounds each write to a client or a target (peer).
	writeTimeout time.Duration

	h1once sync.Once
	h1     *h1Transport // for requests an older client proxy carried from HTTP/1.1

	mu      sync.Mutex
	conns   map[*serverConn]struct{}
	closing bool
	active  sync.WaitGroup // Serve calls in progress
}

// New returns a Proxy. Call Shutdown to stop it.
func New(cfg Config) *Proxy {
	p := &Proxy{cfg: cfg.WithDefaults(), stop: make(chan struct{}), conns: map[*serverConn]struct{}{},
		writeTimeout: writeTimeout}
	p.pool = newPool(p)
	go p.expireIdle()
	return p
}

// writeTimeout is how long a write to a peer may block: past it the
// peer, which let the proxy send but does not read, is cut off. Flow
// control bounds what is written to what the peer asked for, so a peer
// that reads at all is never near it.
const writeTimeout = 20 * time.Second

// liveCheck is how often target connections are looked at: those idle
// for IdleTimeout are closed, and those with streams that were silent
// since the last look are pinged, and closed if the ping is not answered
// by the next (see pool.checkLive).
const liveCheck = 15 * time.Second

// expireIdle runs the pool's periodic checks until Shutdown.
func (p *Proxy) expireIdle() {
	t := time.NewTicker(min(liveCheck, p.cfg.IdleTimeout/2))
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.pool.closeIdle(now.Add(-p.cfg.IdleTimeout))
			p.pool.checkLive()
		}
	}
}

// Serve forwards the streams of c, an accepted connection whose first
// bytes are the HTTP/2 client preface (detected, not consumed), and
// returns when the connection is done; it closes c.
func (p *Proxy) Serve(c net.Conn, info httpproxy.ConnInfo) {
	sc := newServerConn(p, newPeer(c, p.cfg.MaxHeaderBytes, p.writeTimeout), info)
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[sc] = struct{}{}
	p.active.Add(1)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, sc)
		p.mu.Unlock()
		p.active.Done()
	}()
	sc.serve()
}

// CloseIdle closes the target connections that carry no stream, for
// example once an endpoint the balancer removed has drained.
func (p *Proxy) CloseIdle() { p.pool.closeIdle(time.Time{}) }

// Shutdown sends GOAWAY on every client connection, lets the streams they
// carry finish, and returns when all are done or ctx ends, when the rest
// are closed.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if !p.closing {
		p.closing = true
		close(p.stop)
	}
	conns := make([]*serverConn, 0, len(p.conns))
	for sc := range p.conns {
		conns = append(conns, sc)
	}
	p.mu.Unlock()
	for _, sc := range conns {
		sc.drain()
	}
	done := make(chan struct{})
	go func() { p.active.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		p.mu.Lock()
		for sc := range p.conns {
			sc.c.Close()
		}
		p.mu.Unlock()
		p.pool.closeAll()
		<-done
		err = ctx.Err()
	}
	p.pool.closeAll()
	if p.h1 != nil {
		p.h1.tr.CloseIdleConnections()
	}
	return err
}
