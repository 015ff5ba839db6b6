package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mesh-dev/mesh/identity/meshtls"
	"github.com/mesh-dev/mesh/proxy/accesslog"
	"github.com/mesh-dev/mesh/proxy/authz"
	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/detect"
	"github.com/mesh-dev/mesh/proxy/discovery"
	"github.com/mesh-dev/mesh/proxy/h1"
	"github.com/mesh-dev/mesh/proxy/h2"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/policy"
	"github.com/mesh-dev/mesh/proxy/route"
	"github.com/mesh-dev/mesh/proxy/tap"
	"github.com/mesh-dev/mesh/proxy/tcp"
	"github.com/mesh-dev/mesh/proxy/trace"
)

type sideConfig struct {
	dir     metrics.Direction
	ln      net.Listener
	cfg     *Config
	metrics *metrics.Metrics
	opaque  *detect.OpaqueCache // shared by both sides
	log     *slog.Logger
	// lookup finds a connection's original destination: origdst.Lookup,
	// or a fixed target in tests that run without iptables.
	lookup func(*net.TCPConn) (netip.AddrPort, error)
	// router balances over the controller's endpoints; nil forwards to
	// original destinations (inbound, or no controller).
	router *router
	// id terminates inbound mesh TLS and originates it outbound to meshed
	// endpoints; nil means plain text only.
	id *identity
	// tap publishes live requests for `mesh viz tap`; never nil from New.
	tap *tap.Hub
	// policy decides who may connect, inbound; nil allows every client
	// (outbound, and a proxy without a controller or a pod name).
	policy *policy.Enforcer
	// accessLog gets a record of every request and opaque connection; nil
	// logs none.
	accessLog *accesslog.Logger
	// tracer gives each HTTP request a span; nil traces none.
	tracer *trace.Tracer
}

// side is one direction of the proxy: a listener whose connections were
// redirected by iptables, each forwarded to its original destination.
type side struct {
	sideConfig
	// h1 forwards HTTP/1 connections, h2 HTTP/2 ones (h2c, and HTTP/2
	// inside mesh TLS).
	h1 *h1.Proxy
	h2 *h2.Proxy

	// connCtx is the parent of every connection's work; cancelling it
	// closes opaque streams still open when the grace period ends.
	connCtx    context.Context
	cancelConn context.CancelFunc
	conns      sync.WaitGroup // handle calls and opaque streams in progress
	mu         sync.Mutex
	draining   bool // guarded by mu; set before conns.Wait, so no Add follows it
	dialer     net.Dialer

	// open counts the client connections held, up to cfg.MaxConnections;
	// refused counts those reset past it.
	open    atomic.Int64
	refused prometheus.Counter
}

// refusedVec returns mesh_proxy_connections_refused_total, registered once
// on reg however many sides share it.
func refusedVec(reg prometheus.Registerer) *prometheus.CounterVec {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_proxy_connections_refused_total",
		Help: "Client connections reset on accept, by direction and reason (limit: max-connections reached).",
	}, []string{"direction", "reason"})
	if err := reg.Register(vec); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector.(*prometheus.CounterVec)
		}
		panic(err) // a different family of the same name: a programming error
	}
	return vec
}

func newSide(sc sideConfig) *side {
	s := &side{sideConfig: sc, dialer: net.Dialer{Timeout: sc.cfg.ConnectTimeout, KeepAlive: 30 * time.Second}}
	s.connCtx, s.cancelConn = context.WithCancel(context.Background())
	s.refused = refusedVec(sc.metrics.Registry()).WithLabelValues(string(sc.dir), "limit")
	var pick httpproxy.Picker
	var routes func(netip.AddrPort) *route.Table
	if sc.router != nil {
		pick = sc.router.httpPicker
		routes = sc.router.routes
	}
	var meshTLS func(context.Context, net.Conn, string) (net.Conn, error)
	if sc.id != nil && sc.dir == metrics.Outbound {
		meshTLS = sc.id.clientHandshake
	}
	var maxConnsPerHost int // outbound targets are other pods, each with its own limits
	if sc.dir == metrics.Inbound {
		maxConnsPerHost = sc.cfg.MaxConnsPerHost
	}
	cfg := httpproxy.Config{
		Pick:   pick,
		Routes: routes,
		// One budget per backend, whichever protocol its requests came in.
		RetryBudgets:    &httpproxy.RetryBudgets{},
		MeshTLS:         meshTLS,
		Tap:             sc.tap,
		AccessLog:       sc.accessLog,
		Tracer:          sc.tracer,
		Direction:       sc.dir,
		Metrics:         sc.metrics,
		Log:             sc.log,
		ConnectTimeout:  sc.cfg.ConnectTimeout,
		ResponseTimeout: sc.cfg.ResponseTimeout,

		ReadHeaderTimeout:    sc.cfg.HeaderReadTimeout,
		MaxHeaderBytes:       sc.cfg.MaxHeaderBytes,
		MaxConcurrentStreams: sc.cfg.MaxConcurrentStreams,
		BodyIdleTimeout:      sc.cfg.HTTP1BodyIdleTimeout,
		MaxConnsPerHost:      maxConnsPerHost,
	}
	s.h1 = h1.New(cfg)
	s.h2 = h2.New(cfg)
	return s
}

// closeIdle closes the idle connections to every endpoint, once an
// endpoint the balancer removed has drained.
func (s *side) closeIdle() {
	s.h1.CloseIdle()
	s.h2.CloseIdle()
}

// serve accepts until the listener is closed. Temporary accept errors
// (EMFILE) are retried after a pause instead of ending the proxy.
func (s *side) serve() error {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !s.acquire() {
			// Reset at once: a connection held open unserved would cost
			// the memory the limit protects.
			s.refused.Inc()
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			continue
		}
		// Add must not race drain's Wait: once draining, refuse.
		s.mu.Lock()
		if s.draining {
			s.mu.Unlock()
			s.release()
			c.Close()
			return nil
		}
		s.conns.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.conns.Done()
			s.handle(c.(*net.TCPConn))
		}()
	}
}

// acquire takes one of the side's connection slots; false means the side
// already holds cfg.MaxConnections. Every true is matched by one release,
// when the connection is closed (meteredConn) or refused before it is.
func (s *side) acquire() bool {
	if s.open.Add(1) > int64(s.cfg.MaxConnections) && s.cfg.MaxConnections > 0 {
		s.open.Add(-1)
		return false
	}
	return true
}

func (s *side) release() { s.open.Add(-1) }

// drain stops accepting, lets HTTP requests and opaque streams finish
// until ctx ends, then closes whatever is still open.
func (s *side) drain(ctx context.Context) {
	s.ln.Close()
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	h1done := make(chan struct{})
	go func() { s.h1.Shutdown(ctx); close(h1done) }()
	s.h2.Shutdown(ctx)
	<-h1done
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancelConn()
		<-done
	}
	s.cancelConn()
}

// handle finds where c was going, what it speaks, and forwards it there.
func (s *side) handle(c *net.TCPConn) {
	dst, err := s.lookup(c)
	if err != nil {
		// Not redirected: someone dialed the proxy port itself. Forwarding
		// to ourselves would loop, so refuse.
		s.log.Debug("refusing connection without an original destination",
			"client", c.RemoteAddr().String(), "err", err)
		c.SetLinger(0)
		c.Close()
		s.release()
		return
	}
	a := arrival{
		mc:     &meteredConn{Conn: c, tcp: c, m: s.metrics.Conn(s.dir, dst.String()), release: s.release},
		dst:    dst,
		client: c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(),
	}
	// Under an inbound policy, the policy in force says whether the port
	// is opaque, and then decides the client once it is known.
	if s.policy != nil {
		if a.pol, err = s.policy.Admit(s.connCtx, dst.Port(), a.client); err != nil {
			// No policy after the grace (counted and logged), or shutting down.
			a.mc.m.Unreached(metrics.NoPolicy)
			a.mc.Close()
			return
		}
	}
	a.opaque = s.opaqueReason(a.pol, dst.Port())
	res, conn, err := s.detect(c, dst, a.opaque)
	if err != nil {
		// The client left before sending anything: counted open and
		// closed under the target (caps and expiry bound the series).
		a.mc.Close()
		return
	}
	if s.silentInbound(res, conn) {
		s.late(a, conn.(*detect.Conn))
		return
	}
	s.dispatch(a, res, conn)
}

// arrival is an accepted connection whose target and policy are known,
// before its protocol is.
type arrival struct {
	mc     *meteredConn
	dst    netip.AddrPort
	client netip.Addr
	pol    *authz.Policy // the policy it was admitted under; nil without one
	opaque string        // why the port is opaque; "" when it is not
	late   bool          // the client sent nothing within the detect timeout
}

// dispatch forwards a connection whose first bytes were classified as res:
// inbound, a peer proxy's mesh TLS is terminated first; then the policy
// decides the client.
func (s *side) dispatch(a arrival, res detect.Result, conn net.Conn) {
	var clientID string // proven over mesh TLS
	if res.Protocol == detect.TLS && s.dir == metrics.Inbound && s.id != nil {
		var meshed bool
		var err error
		if res, conn, clientID, meshed, err = s.terminateMeshTLS(conn.(*detect.Conn), a.opaque); err != nil {
			s.refuseMeshTLS(a, err)
			return
		}
		if meshed {
			reason := "alpn"
			if a.late {
				reason = "late-alpn"
			}
			s.metrics.Detected(s.dir, "mesh-tls", reason)
		}
	}
	if a.opaque != "" && (res.Protocol == detect.HTTP1 || res.Protocol == detect.HTTP2) {
		// Detected only to find mesh TLS: an opaque port's bytes go to the
		// application as they came, whatever they look like.
		res = detect.Result{Protocol: detect.Opaque, Reason: a.opaque}
	}
	s.metrics.Detected(s.dir, res.Protocol.String(), res.Reason)
	a.mc.Conn = conn
	acc := accepted{mc: a.mc, conn: conn, dst: a.dst, proto: res.Protocol, clientID: clientID}
	if a.pol != nil {
		acc.guard = s.policy.Conn(a.pol, a.dst.Port(), authz.Client{Addr: a.client, ID: clientID})
	}
	s.forward(acc)
}

func (s *side) refuseMeshTLS(a arrival, err error) {
	s.log.Info("mesh TLS refused", "client", a.mc.tcp.RemoteAddr().String(), "err", err)
	a.mc.m.Unreached(metrics.MeshTLSFailed)
	a.mc.Close()
}

// accepted is a connection whose protocol and client are known.
type accepted struct {
	mc       *meteredConn
	conn     net.Conn // what to relay: the client, or the inside of its mesh TLS
	dst      netip.AddrPort
	proto    detect.Protocol
	clientID string       // proven over mesh TLS; "" in plain text
	guard    *policy.Conn // the policy's decisions; nil allows everything
}

// forward hands a to the HTTP/1 forwarder (h1) or the HTTP/2 one (h2),
// whose requests its guard decides one by one, or relays it as TCP once
// the guard allowed the connection.
func (s *side) forward(a accepted) {
	key := metrics.ConnKey{ClientID: a.clientID}
	switch a.proto {
	case detect.HTTP1, detect.HTTP2:
		// The TCP series open once a request reaches the application: a
		// request to a closed port must not name it (docs/metrics.md).
		a.mc.m.OpenOnReach(key)
		info := httpproxy.ConnInfo{Target: a.dst, ClientID: a.clientID, TCP: a.mc.m}
		if a.guard != nil {
			info.Authz = a.guard // never a typed nil in the interface
		}
		if a.proto == detect.HTTP1 {
			s.h1.Serve(a.mc, info)
		} else {
			s.h2.Serve(a.mc, info)
		}
	default:
		if a.guard != nil && !a.guard.AuthorizeTCP() {
			// Before dialing: not a byte reaches the application, and
			// no series names the target.
			a.mc.m.Unreached(metrics.PolicyDenied)
			a.mc.Close()
			return
		}
		s.forwardOpaque(a.mc, a.conn, a.dst, key)
	}
}

// opaqueReason says why port is forwarded without protocol detection, ""
// when it is not: the proxy's opaque ports, and the ports whose Server
// says opaque or TLS (pol may be nil).
func (s *side) opaqueReason(pol *authz.Policy, port uint16) string {
	switch {
	case s.cfg.OpaquePorts.Contains(port):
		return "opaque-port"
	case pol.Protocol(port).Forwarded():
		return "server-protocol"
	}
	return ""
}

// detect decides the protocol, skipping the wait for clients that will
// not speak first: opaque ports (opaque says why; "" for none), and
// destinations already seen silent.
func (s *side) detect(c *net.TCPConn, dst netip.AddrPort, opaque string) (detect.Result, net.Conn, error) {
	if s.dir == metrics.Inbound && s.id != nil {
		// A peer proxy always speaks first (its ClientHello), on opaque
		// ports too, and its mesh TLS must be terminated here, not handed
		// to the application: never skip detection inbound. A silent
		// client is served by late.
		res, pc, err := detect.Peek(s.connCtx, c, s.cfg.DetectTimeout)
		if err == nil && res.Reason == "timeout" && detect.PartialHello(pc.Buffered()) {
			// Part of a ClientHello came: the rest is only late.
			return detect.Peek(s.connCtx, pc, meshHandshakeTimeout)
		}
		return res, pc, err
	}
	if opaque != "" {
		return detect.Result{Protocol: detect.Opaque, Reason: opaque}, c, nil
	}
	if s.opaque.Contains(dst) {
		return detect.Result{Protocol: detect.Opaque, Reason: "remembered-opaque"}, c, nil
	}
	res, pc, err := detect.Peek(s.connCtx, c, s.cfg.DetectTimeout)
	if err != nil {
		return res, nil, err
	}
	if res.Reason == "timeout" && len(pc.Buffered()) == 0 {
		// The client is silent: it may wait for the server to speak first
		// (SMTP, MySQL, NATS...), or it is an idle pooled connection of an
		// HTTP client. Only the first kind is remembered, once the server
		// has really spoken first, so one idle pre-connect cannot turn an
		// HTTP destination opaque for everyone.
		return res, watchFirstSpeaker(pc, func() {
			s.opaque.Remember(dst)
			s.log.Info("destination is server-speaks-first; forwarding it as opaque from now on",
				"target", dst.String(), "waited", s.cfg.DetectTimeout)
		}), nil
	}
	return res, pc, nil
}

// meshHandshakeTimeout bounds a peer proxy's mesh TLS handshake, and the
// wait for a silent client on a port that has nothing for one that is not
// a peer proxy.
const meshHandshakeTimeout = 10 * time.Second

// silentInbound reports whether an inbound connection that may carry mesh
// TLS sent nothing within the detect timeout.
func (s *side) silentInbound(res detect.Result, conn net.Conn) bool {
	if s.dir != metrics.Inbound || s.id == nil || res.Reason != "timeout" {
		return false
	}
	return len(conn.(*detect.Conn).Buffered()) == 0
}

// late serves an inbound client silent past the detect timeout. It may
// wait for the application to speak first (MySQL, SMTP), so its wait must
// not grow; or it is a peer proxy whose ClientHello is late (a loaded
// node), whose mesh TLS must never reach the application. So the
// application is dialed at once and its first bytes go to the client,
// while the client's first bytes are still watched: a mesh ClientHello
// that comes before any of the application's bytes was relayed drops the
// application's connection and gets mesh TLS and the policy exactly as on
// time; anything else is relayed as opaque, as from an unauthenticated
// client, under the same policy as on time.
func (s *side) late(a arrival, pc *detect.Conn) {
	a.late = true
	if a.pol != nil && !s.policy.Policy().Authorize(a.dst.Port(), authz.Client{Addr: a.client}).Allowed {
		// Nothing here for a client that is not a peer proxy (checked
		// without counting a decision), so no application to dial.
		s.lateAlone(a, pc)
		return
	}
	up, ok := s.connectOpaque(a.mc, a.dst, metrics.ConnKey{})
	if !ok {
		return
	}
	// Two goroutines wait, as for any opaque stream: this one for the
	// client, the other for the application, with one-byte buffers, as
	// both may stay silent long.
	w := detect.NewWatcher(pc)
	app := make(chan []byte, 1) // the application's first byte; none if it closed
	go func() {
		b := make([]byte, 1)
		n, _ := up.conn.Read(b)
		app <- b[:n]
		w.Stop() // the application spoke first: the client's bytes are its
	}()
	res, conn, err := w.Peek(s.connCtx, s.cfg.OpaqueIdleTimeout)
	var first []byte
	spoke := false // first came from the application; none of it was relayed yet
	select {
	case first = <-app:
		spoke = true
	default:
	}
	drop := func() {
		up.close()
		if !spoke {
			<-app
		}
	}
	switch {
	case err != nil: // the client left, or the proxy is shutting down
		drop()
		a.mc.Close()
		return
	case res.Protocol == detect.TLS:
		protos, err := detect.ClientHelloALPN(conn, s.cfg.DetectTimeout)
		if err != nil {
			drop()
			s.refuseMeshTLS(a, err)
			return
		}
		if meshtls.OffersMesh(protos) {
			drop()
			s.log.Debug("peer proxy's ClientHello came after the detect timeout", "client", a.client.String())
			s.dispatch(a, res, conn)
			return
		}
	case !spoke && res.Reason == "timeout": // the opaque idle timeout passed
		drop()
		a.mc.Close()
		return
	}
	if !spoke {
		// Take back the application's pending read, and any byte it got.
		up.conn.SetReadDeadline(time.Unix(1, 0))
		first = <-app
		up.conn.SetReadDeadline(time.Time{})
	}
	s.relayLate(a, res, conn, up, first)
}

// lateAlone waits for a late client for as long as a mesh handshake may
// take, then serves what it sent as if it had been on time: a peer proxy
// gets mesh TLS and the policy, anything else the policy for
// unauthenticated clients.
func (s *side) lateAlone(a arrival, pc *detect.Conn) {
	res, conn, err := detect.NewWatcher(pc).Peek(s.connCtx, meshHandshakeTimeout)
	if err != nil {
		a.mc.Close()
		return
	}
	s.dispatch(a, res, conn)
}

// relayLate relays a late client as opaque to the application connection
// up, once the policy allows the client unauthenticated; first are the
// bytes the application already sent, for the client.
func (s *side) relayLate(a arrival, res detect.Result, client *detect.Conn, up target, first []byte) {
	if res.Protocol != detect.TLS {
		res = detect.Result{Protocol: detect.Opaque, Reason: "timeout"}
	}
	s.metrics.Detected(s.dir, res.Protocol.String(), res.Reason)
	a.mc.Conn = client
	if a.pol != nil && !s.policy.Conn(a.pol, a.dst.Port(), authz.Client{Addr: a.client}).AuthorizeTCP() {
		// The policy changed since late checked it: not a byte was relayed.
		a.mc.m.Unreached(metrics.PolicyDenied)
		up.close()
		a.mc.Close()
		return
	}
	s.relayOpaque(a.mc, client, up, first)
}

// terminateMeshTLS checks whether a TLS client is a peer proxy (it offers
// the mesh ALPN): if so it completes mesh TLS, requiring a certificate of
// the trust domain, and detects the protocol inside, unless the port is
// opaque (opaque says why); the application's own TLS is left alone, to
// pass through as it came.
func (s *side) terminateMeshTLS(pc *detect.Conn, opaque string) (res detect.Result, inner net.Conn, clientID string, meshed bool, err error) {
	protos, err := detect.ClientHelloALPN(pc, s.cfg.DetectTimeout)
	if err != nil {
		return res, nil, "", false, err
	}
	if !meshtls.OffersMesh(protos) {
		return detect.Result{Protocol: detect.TLS, Reason: "client-hello"}, pc, "", false, nil
	}
	tc := tls.Server(pc, s.id.serverTLS())
	ctx, cancel := context.WithTimeout(s.connCtx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return res, nil, "", false, err
	}
	if peer, err := meshtls.PeerID(tc.ConnectionState()); err == nil {
		clientID = peer.String()
	}
	// Inside the tunnel: what the client's application speaks.
	if opaque != "" {
		return detect.Result{Protocol: detect.Opaque, Reason: opaque}, tc, clientID, true, nil
	}
	res, dc, err := detect.Peek(s.connCtx, tc, s.cfg.DetectTimeout)
	if err != nil {
		return res, nil, "", false, err
	}
	return res, dc, clientID, true, nil
}

// watchFirstSpeaker returns client wrapped so that forwardOpaque can tell
// who sends the first byte; serverFirst runs if it is the target.
func watchFirstSpeaker(client net.Conn, serverFirst func()) net.Conn {
	return &firstSpeaker{Conn: client, serverFirst: serverFirst}
}

// firstSpeaker is a silent client connection whose relay is watched: the
// first successful Read, on it or on the target connection (wrapped by
// watchTarget), decides who spoke first. Wrapping costs the relay its
// splice(2) fast path, but only on a destination's first silent connection.
type firstSpeaker struct {
	net.Conn
	serverFirst func()
	decided     atomic.Bool
}

func (c *firstSpeaker) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.decided.Store(true)
	}
	return n, err
}

func (c *firstSpeaker) CloseWrite() error { return closeWrite(c.Conn) }

// WriteTo is the relay's copy from the client (io.Copy prefers it to
// Read): it waits for the first byte in a one-byte buffer, so that
// thousands of silent connections hold no copy buffers while they wait,
// then copies the rest between the unwrapped connections, which splice.
func (c *firstSpeaker) WriteTo(w io.Writer) (int64, error) {
	if t, ok := w.(*targetSide); ok {
		w = t.Conn
	}
	return copyAfterFirst(w, rawConn(c.Conn), func() { c.decided.Store(true) })
}

// watchTarget wraps the target side of a watched relay.
func (c *firstSpeaker) watchTarget(up net.Conn) net.Conn { return &targetSide{Conn: up, watch: c} }

type targetSide struct {
	net.Conn
	watch *firstSpeaker
}

func (c *targetSide) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.watch.decided.CompareAndSwap(false, true) {
		c.watch.serverFirst()
	}
	return n, err
}

func (c *targetSide) CloseWrite() error { return closeWrite(c.Conn) }

// WriteTo is firstSpeaker.WriteTo for the target's side.
func (c *targetSide) WriteTo(w io.Writer) (int64, error) {
	if f, ok := w.(*firstSpeaker); ok {
		w = rawConn(f.Conn)
	}
	return copyAfterFirst(w, c.Conn, func() {
		if c.watch.decided.CompareAndSwap(false, true) {
			c.watch.serverFirst()
		}
	})
}

// copyAfterFirst copies src to dst as io.Copy does, calling spoke once the
// first byte came, which it reads alone.
func copyAfterFirst(dst io.Writer, src net.Conn, spoke func()) (int64, error) {
	var first [1]byte
	n, err := src.Read(first[:])
	if n > 0 {
		spoke()
		if _, werr := dst.Write(first[:n]); werr != nil {
			return 0, werr
		}
	}
	if err != nil {
		return int64(n), err
	}
	m, err := io.Copy(dst, src)
	return int64(n) + m, err
}

// rawConn is c without a detect.Conn's wrapper when it holds no peeked
// bytes, so that copies from and to it can splice.
func rawConn(c net.Conn) net.Conn {
	if dc, ok := c.(*detect.Conn); ok && len(dc.Buffered()) == 0 {
		return dc.Raw()
	}
	return c
}

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// forwardOpaque relays a connection to dst, or, when the mesh balances
// dst, to the endpoint peak-EWMA picks for the whole connection: its
// connect time is the latency sample, and it stays pending until closed.
// key is the connection's TCP series so far; the endpoint's workload and
// proven identity are added once connected, and a connection that never
// connects has no per-target series.
func (s *side) forwardOpaque(mc *meteredConn, client net.Conn, dst netip.AddrPort, key metrics.ConnKey) {
	if up, ok := s.connectOpaque(mc, dst, key); ok {
		s.relayOpaque(mc, client, up, nil)
	}
}

// target is the connected target of an opaque connection.
type target struct {
	conn net.Conn
	key  metrics.ConnKey // the connection's TCP series, with the target's workload and identity
	pick *balance.Pick   // the balancer's, pending until the stream ends; nil when unbalanced
}

// close closes the connection to the target and ends its pick.
func (t target) close() {
	t.conn.Close()
	if t.pick != nil {
		t.pick.Done()
	}
}

// connectOpaque connects to where an opaque connection to dst goes (see
// forwardOpaque). When it cannot, it resets the client and returns false.
func (s *side) connectOpaque(mc *meteredConn, dst netip.AddrPort, key metrics.ConnKey) (target, bool) {
	addr, pick, err := s.pickConn(dst)
	if err != nil {
		s.log.Info("no endpoint for opaque connection; resetting client", "target", dst.String(), "err", err)
		mc.m.Unreached(metrics.NoEndpoint)
		mc.tcp.SetLinger(0)
		mc.Close()
		return target{}, false
	}
	ctx, cancel := context.WithTimeout(s.connCtx, s.cfg.ConnectTimeout)
	start := time.Now()
	up, err := s.dialer.DialContext(ctx, "tcp", addr.String())
	cancel()
	if err == nil && pick != nil {
		m, _ := discovery.Meta(pick.Endpoint())
		key.Dst = dstOf(m)
		if id := s.router.identity(addr.Addr(), m); s.id != nil && id != "" {
			raw := up
			if up, err = s.id.clientHandshake(s.connCtx, raw, id); err != nil {
				raw.Close()
			}
			key.ServerID = id // proven by the handshake, or the connection fails
		}
	}
	if pick != nil && err != nil {
		// Unreachable: out of rotation at once, like an HTTP endpoint
		// whose connection failed; no latency sample to learn from.
		pick.Observe(0, fmt.Errorf("%w: %w", balance.ErrUnreachable, err))
		pick.Done()
	} else if pick != nil {
		pick.Observe(time.Since(start), nil)
	}
	if err != nil {
		// Counted without the target: a port sweep or a dead endpoint
		// must not add series (docs/metrics.md).
		s.log.Info("opaque target unreachable; resetting client", "target", addr.String(), "err", err)
		mc.m.Unreached(metrics.ConnectFailed)
		mc.tcp.SetLinger(0) // a reset tells the client what a silent close would hide
		mc.Close()
		return target{}, false
	}
	return target{conn: up, key: key, pick: pick}, true
}

// relayOpaque relays client and up until both are done, the target's
// first bytes (already read from it, may be nil) to the client first.
func (s *side) relayOpaque(mc *meteredConn, client net.Conn, up target, first []byte) {
	defer up.close()
	mc.m.Open(up.key)
	start := time.Now()
	var sent int64
	if len(first) > 0 {
		n, err := client.Write(first)
		if sent = int64(n); err != nil {
			client.Close()
			mc.closeWithStats(0, sent)
			s.logTCP(mc, up, start, tcp.Stats{}, sent)
			return
		}
	}
	upConn := up.conn
	if fs, ok := client.(*firstSpeaker); ok {
		upConn = fs.watchTarget(upConn)
	}
	st, err := tcp.Forward(s.connCtx, client, upConn, s.cfg.OpaqueIdleTimeout)
	if err != nil {
		s.log.Debug("opaque stream ended with an error", "target", up.conn.RemoteAddr().String(), "err", err)
	}
	mc.closeWithStats(st.FromClient, st.ToClient+sent)
	s.logTCP(mc, up, start, st, sent)
}

// logTCP writes the access log line of an opaque connection relayed from
// start: st's bytes, and sent to the client before them.
func (s *side) logTCP(mc *meteredConn, up target, start time.Time, st tcp.Stats, sent int64) {
	if s.accessLog == nil {
		return
	}
	s.accessLog.LogTCP(&accesslog.TCP{
		Start: start, Direction: s.dir, Client: mc.RemoteAddr().String(), Destination: up.conn.RemoteAddr().String(),
		Duration: time.Since(start), FromClient: st.FromClient, ToClient: st.ToClient + sent,
		ClientID: up.key.ClientID, ServerID: up.key.ServerID,
	})
}

// pickConn chooses where an opaque connection to dst goes: an endpoint of
// the controller's (pick is then non-nil and must be Done), or dst itself.
func (s *side) pickConn(dst netip.AddrPort) (netip.AddrPort, *balance.Pick, error) {
	if s.router == nil {
		return dst, nil, nil
	}
	p, err := s.router.pick(s.connCtx, dst, "tcp")
	switch {
	case errors.Is(err, errForward):
		return dst, nil, nil
	case err != nil:
		return netip.AddrPort{}, nil, err
	}
	return p.Endpoint().Addr, &p, nil
}

// meteredConn counts the bytes of a connection served as HTTP and reports
// them, with the close, to the TCP metrics when the server closes it.
type meteredConn struct {
	net.Conn
	tcp     *net.TCPConn
	m       *metrics.Conn
	read    atomic.Int64
	written atomic.Int64
	once    sync.Once
	release func() // frees the side's connection slot, once
}

func (c *meteredConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

func (c *meteredConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written.Add(int64(n))
	return n, err
}

func (c *meteredConn) Close() error {
	c.closeWithStats(c.read.Load(), c.written.Load())
	return c.tcp.Close()
}

// CloseWrite lets the HTTP server half-close after an upgraded stream.
func (c *meteredConn) CloseWrite() error { return c.tcp.CloseWrite() }

func (c *meteredConn) closeWithStats(read, written int64) {
	c.once.Do(func() {
		c.m.Close(read, written)
		if c.release != nil {
			c.release()
		}
	})
}
