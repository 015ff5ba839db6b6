// Package httpproxy forwards HTTP/1.x and HTTP/2 (including gRPC) requests
// from connections the proxy accepted to their target address, one request
// at a time, so each request is counted and can later be balanced on its own.
package httpproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/tap"
)

// Config configures a Proxy. The zero value of every field but Metrics is
// usable and means the default written next to it.
type Config struct {
	Direction metrics.Direction
	Metrics   *metrics.Metrics // required
	Log       *slog.Logger     // nil: slog.Default()

	// ConnectTimeout bounds dialing the target; past it the client gets 504.
	// Zero means 1s, like Linkerd's default connect timeout.
	ConnectTimeout time.Duration
	// ResponseTimeout bounds the wait for the target's response headers;
	// past it the client gets 504. Zero means no limit: streams and long
	// polls are legitimate and only the application knows its deadlines.
	ResponseTimeout time.Duration
	// ReadHeaderTimeout bounds how long a client may take to send request
	// headers on HTTP/1 (slow-loris protection). Zero means 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes client connections idle this long. Zero means 90s.
	IdleTimeout time.Duration
	// BodyIdleTimeout ends an HTTP/1 request whose connection, to the
	// client or to the target, moves no byte for this long: a stalled
	// request or response body. Zero means none.
	BodyIdleTimeout time.Duration
	// MaxConnsPerHost bounds the HTTP/1 connections to one target address;
	// requests past it wait for one. Zero means no limit.
	MaxConnsPerHost int
	// MaxHeaderBytes bounds request headers (431 past it). Zero means 64 KiB.
	MaxHeaderBytes int
	// MaxConcurrentStreams bounds concurrent HTTP/2 streams per client
	// connection; streams past it are refused (RST_STREAM REFUSED_STREAM,
	// which clients retry safely). Zero means 1000.
	MaxConcurrentStreams uint32
	// Pick chooses each request's endpoint; nil sends every request to its
	// connection's target.
	Pick Picker
	// MeshTLS wraps a new connection to an endpoint with an identity in
	// mesh TLS; nil means identities are ignored (plain text).
	MeshTLS func(ctx context.Context, c net.Conn, identity string) (net.Conn, error)
	// Tap receives every request and response while someone watches
	// (mesh viz tap); nil means none is published.
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
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = 1000
	}
}

// Proxy serves HTTP on connections handed to it by ServeHTTP1 and
// ServeHTTP2 and forwards each request to the connection's target.
// Its methods are safe for concurrent use.
type Proxy struct {
	cfg     Config
	h1      *http.Server
	h2      *http2.Server
	h1conns *connQueue
	rp      *httputil.ReverseProxy
	h1tr    *http.Transport
	h2tr    *http2.Transport
	up      *upstreams
	served  chan struct{} // closed when the HTTP/1 server loop has returned

	wg      sync.WaitGroup // ServeHTTP2 calls in progress
	mu      sync.Mutex
	h2conns map[net.Conn]struct{} // guarded by mu: connections in ServeHTTP2
}

// ConnInfo describes a connection the proxy accepted and hands over with
// ServeHTTP1 or ServeHTTP2.
type ConnInfo struct {
	// Target is where the connection was going: its requests go there, or
	// to the endpoint Pick chooses for them.
	Target netip.AddrPort
	// ClientID is the SPIFFE ID the client proved over mesh TLS; "" in
	// plain text.
	ClientID string
	// Authz decides each request before it goes anywhere; nil lets every
	// request through.
	Authz Authorizer
	// TCP is the connection's TCP series, given to OpenOnReach: each
	// request reports to it whether it reached an application (its
	// response began, counted under its target) or why the proxy answered
	// it itself, so that a connection none of whose requests reached one
	// names no target. Nil counts nothing.
	TCP *metrics.Conn
}

// Authorizer decides the requests of one connection (the inbound
// authorization policy, proxy/policy). It is called for every request,
// possibly concurrently (HTTP/2), so it must be cheap and safe for
// concurrent use.
type Authorizer interface {
	// AuthorizeRequest returns nil to let r through, or why it may not
	// go: the client gets 403 (gRPC: PERMISSION_DENIED) saying so.
	AuthorizeRequest(r *http.Request) error
}

// connKey holds the *ConnInfo of the connection a request arrived on.
type connKey struct{}

// targetConn carries an accepted connection's ConnInfo into the http.Server,
// which hands it to each request's context (ConnContext).
type targetConn struct {
	net.Conn
	info *ConnInfo
}

func connFrom(ctx context.Context) *ConnInfo {
	c, _ := ctx.Value(connKey{}).(*ConnInfo)
	return c
}

func clientIDFrom(ctx context.Context) string {
	if c := connFrom(ctx); c != nil {
		return c.ClientID
	}
	return ""
}

// maxIdleConns bounds the idle HTTP/1 connections to all targets: enough
// for a busy pod's hundred targets to keep a few each.
const maxIdleConns = 512

// New returns a Proxy whose HTTP/1 server is already accepting handed-over
// connections. Call Shutdown to stop it.
func New(cfg Config) *Proxy {
	cfg.setDefaults()
	p := &Proxy{cfg: cfg, h1conns: newConnQueue(), served: make(chan struct{}), h2conns: map[net.Conn]struct{}{}}
	p.up = newUpstreams(&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}, cfg.MeshTLS)
	p.h1tr = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := p.up.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return withIdle(c, cfg.BodyIdleTimeout), nil
		},
		MaxConnsPerHost: cfg.MaxConnsPerHost,
		// Idle connections are bounded in all, not only per target: a pod
		// that talks to thousands of addresses (a headless Service's
		// churning pods) would otherwise keep one idle connection to each,
		// about 25 KiB apiece (two goroutines and their buffers), and a
		// proxy's memory limit would go at a few thousand. Beyond the cap the
		// least recently used idle connection is closed.
		MaxIdleConns:          maxIdleConns,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       cfg.IdleTimeout,
		ResponseHeaderTimeout: cfg.ResponseTimeout,
		ExpectContinueTimeout: time.Second,
		// The client decides about compression; never add Accept-Encoding.
		DisableCompression: true,
		Proxy:              nil,
	}
	p.h2tr = &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return p.up.DialContext(ctx, network, addr) // h2c: prior knowledge, no TLS
		},
		DisableCompression: true,
		ReadIdleTimeout:    30 * time.Second,
		PingTimeout:        15 * time.Second,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    roundTripper{h1: p.h1tr, h2: p.h2tr, responseTimeout: cfg.ResponseTimeout},
		BufferPool:   bufferPool{},
		ErrorHandler: p.writeError,
		ErrorLog:     slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
	}
	p.h1 = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*targetConn); ok {
				return context.WithValue(ctx, connKey{}, tc.info)
			}
			return ctx
		},
	}
	p.h2 = &http2.Server{
		MaxConcurrentStreams: cfg.MaxConcurrentStreams,
		IdleTimeout:          cfg.IdleTimeout,
	}
	// Registers the HTTP/2 server with the HTTP/1 one, so that Shutdown
	// sends GOAWAY on every HTTP/2 connection too.
	if err := http2.ConfigureServer(p.h1, p.h2); err != nil {
		panic("httpproxy: configuring http2: " + err.Error()) // only on programmer error
	}
	go func() {
		defer close(p.served)
		p.h1.Serve(p.h1conns)
	}()
	return p
}

// ServeHTTP1 hands an accepted connection whose client speaks HTTP/1.x to
// the proxy's HTTP/1 server and returns at once.
func (p *Proxy) ServeHTTP1(c net.Conn, info ConnInfo) {
	if !p.h1conns.push(&targetConn{Conn: withIdle(c, p.cfg.BodyIdleTimeout), info: &info}) {
		c.Close() // shutting down
	}
}

// ServeHTTP2 serves an accepted connection whose client sent the HTTP/2
// prior-knowledge preface, and returns when the connection is done.
func (p *Proxy) ServeHTTP2(ctx context.Context, c net.Conn, info ConnInfo) {
	p.wg.Add(1)
	defer p.wg.Done()
	p.mu.Lock()
	p.h2conns[c] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.h2conns, c)
		p.mu.Unlock()
	}()
	p.h2.ServeConn(c, &http2.ServeConnOpts{
		Context:    context.WithValue(ctx, connKey{}, &info),
		BaseConfig: p.h1,
		Handler:    p,
	})
}

// CloseIdle closes the idle connections to every target, for example
// once an endpoint the balancer removed has drained.
func (p *Proxy) CloseIdle() {
	p.h1tr.CloseIdleConnections()
	p.h2tr.CloseIdleConnections()
}

// Shutdown stops taking connections, tells HTTP/2 clients with GOAWAY,
// lets requests in flight finish, and returns when they have or ctx ends
// (then the remaining connections are closed).
func (p *Proxy) Shutdown(ctx context.Context) error {
	err := p.h1.Shutdown(ctx)
	<-p.served
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.h1.Close()
		p.mu.Lock()
		for c := range p.h2conns {
			c.Close()
		}
		p.mu.Unlock()
		<-done
		err = errors.Join(err, ctx.Err())
	}
	p.h1tr.CloseIdleConnections()
	p.h2tr.CloseIdleConnections()
	p.up.closeAll() // no request is left to use them
	return err
}

func targetFrom(ctx context.Context) (netip.AddrPort, bool) {
	if c := connFrom(ctx); c != nil {
		return c.Target, true
	}
	return netip.AddrPort{}, false
}
