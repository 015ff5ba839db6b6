// Package httpproxy forwards HTTP/1.x and HTTP/2 (including gRPC) requests
// from connections the proxy accepted to their target address, one request
// at a time, so each request is counted and can later be balanced on its own.
package httpproxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"time"

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

// WithDefaults returns c with each zero field that has a default set to
// it. The HTTP/1 forwarder (proxy/h1) takes the same Config.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
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
	cfg Config
	// srv serves both kinds of handed-over connection: net/http's own
	// HTTP/2 takes those that begin with the prior-knowledge preface
	// (Protocols has UnencryptedHTTP2), HTTP/1 the rest. One server means
	// one Shutdown sends GOAWAY on every HTTP/2 connection and waits for
	// every connection, and one Close ends them all.
	srv    *http.Server
	conns  *connQueue
	rp     *httputil.ReverseProxy
	h1tr   *http.Transport
	h2tr   *http.Transport // h2c with prior knowledge only
	up     *upstreams
	served chan struct{} // closed when the server loop has returned
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
// which hands it to each request's context (ConnContext). done, when not
// nil, is closed once the server has closed the connection: a connection
// the server is done with is always closed by it, whichever protocol it
// spoke.
type targetConn struct {
	net.Conn
	info *ConnInfo
	done chan struct{}
	once sync.Once
}

func (c *targetConn) Close() error {
	err := c.Conn.Close()
	if c.done != nil {
		c.once.Do(func() { close(c.done) })
	}
	return err
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

// New returns a Proxy whose server is already serving handed-over
// connections. Call Shutdown to stop it.
func New(cfg Config) *Proxy {
	cfg.setDefaults()
	p := &Proxy{cfg: cfg, conns: newConnQueue(), served: make(chan struct{})}
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
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true) // and not HTTP1: prior knowledge, no Upgrade dance
	p.h2tr = &http.Transport{
		DialContext: (&sharedFailures{}).wrap(p.up.DialContext),
		Protocols:   &h2c,
		// One dial per target at a time: requests that find no connection
		// wait for the one being made and share it (net/http hands a new
		// HTTP/2 connection to every request waiting for one), instead of
		// a burst of requests to a new endpoint dialing (and paying a mesh
		// TLS handshake) each, all connections but one then being closed
		// unused. It bounds the dials, not the connections: one whose
		// streams are all taken is left to its requests, and another is
		// dialed.
		MaxConnsPerHost: 1,
		HTTP2: &http.HTTP2Config{
			// A connection silent this long is pinged, and closed when the
			// ping goes unanswered: a target that vanished without a FIN
			// (its node died) fails the requests on it instead of hanging them.
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
		// The HTTP/2 transport starts this timer once the request is
		// written, as the HTTP/1 one does.
		ResponseHeaderTimeout: cfg.ResponseTimeout,
		DisableCompression:    true,
		Proxy:                 nil,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    roundTripper{h1: p.h1tr, h2: p.h2tr},
		BufferPool:   bufferPool{},
		ErrorHandler: p.writeError,
		ErrorLog:     slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	p.srv = &http.Server{
		Handler:   p,
		Protocols: &protocols,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: int(cfg.MaxConcurrentStreams),
		},
		// OPTIONS * is the target's to answer, like any request.
		DisableGeneralOptionsHandler: true,
		ReadHeaderTimeout:            cfg.ReadHeaderTimeout,
		IdleTimeout:                  cfg.IdleTimeout, // HTTP/2 connections' too
		MaxHeaderBytes:               cfg.MaxHeaderBytes,
		ErrorLog:                     slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*targetConn); ok {
				return context.WithValue(ctx, connKey{}, tc.info)
			}
			return ctx
		},
	}
	go func() {
		defer close(p.served)
		p.srv.Serve(p.conns)
	}()
	return p
}

// ServeHTTP1 hands an accepted connection whose client speaks HTTP/1.x to
// the proxy's server and returns at once.
func (p *Proxy) ServeHTTP1(c net.Conn, info ConnInfo) {
	if !p.conns.push(&targetConn{Conn: withIdle(c, p.cfg.BodyIdleTimeout), info: &info}) {
		c.Close() // shutting down
	}
}

// ServeHTTP2 serves an accepted connection whose client sent the HTTP/2
// prior-knowledge preface, and returns when the connection is done. c
// must still yield the preface to its first reads (the protocol detector
// replays what it peeked): the server recognises the connection by it.
// When ctx ends first, the connection is closed, which ends its requests.
func (p *Proxy) ServeHTTP2(ctx context.Context, c net.Conn, info ConnInfo) {
	tc := &targetConn{Conn: c, info: &info, done: make(chan struct{})}
	if !p.conns.push(tc) {
		c.Close() // shutting down
		return
	}
	select {
	case <-tc.done:
	case <-ctx.Done():
		tc.Close()
	}
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
	err := p.srv.Shutdown(ctx)
	if err != nil {
		p.srv.Close() // ctx ended: whatever is left goes now
	}
	<-p.served
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
