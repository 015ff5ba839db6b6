package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
)

// clientConn is one client connection and the state of the request it
// carries; everything in it is reused from request to request.
type clientConn struct {
	p    *Proxy
	c    net.Conn
	tc   *timedConn
	info *httpproxy.ConnInfo
	br   *bufio.Reader
	bw   *bufio.Writer

	// idle is set while the connection waits for a request's first byte:
	// Shutdown may take it then, by swapping it to false before the
	// connection's goroutine does (closeIfIdle).
	idle atomic.Bool

	req request
	res head

	lastHost  string // the last request's Host, reused while it repeats
	targetStr string // info.Target as a string, made once

	// An idle connection gives its buffers back to the pools: thousands
	// of keep-alive connections waiting for their next request then cost
	// a few hundred bytes each, not 8 KiB. pre hands the request's first
	// byte, read without a buffer, to the reader taken for the request.
	one [1]byte
	pre prefixReader
	// bodyBusy is set while a bodySender may still read br: its buffers
	// are not pooled then, another connection must never get them.
	bodyBusy bool
	// holdsReader is true while br is the connection's: tests read it.
	holdsReader atomic.Bool
}

// prefixReader yields one byte read ahead, then reads from r.
type prefixReader struct {
	b   byte
	has bool
	r   *timedConn
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if p.has && len(b) > 0 {
		b[0], p.has = p.b, false
		return 1, nil
	}
	return p.r.Read(b)
}

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// maxKeptHead is the largest head buffer a connection keeps between
// requests; a larger one, from an unusual request, goes to the collector.
const maxKeptHead = 8 << 10

// releaseReader gives the read buffer back, unless a body may still be
// read from it.
func (cc *clientConn) releaseReader() {
	if cc.br != nil && !cc.bodyBusy {
		cc.br.Reset(nil)
		readers.Put(cc.br)
		cc.br = nil
		cc.holdsReader.Store(false)
	}
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// writer makes sure the connection has a write buffer.
func (cc *clientConn) writer() *bufio.Writer {
	if cc.bw == nil {
		cc.bw = writers.Get().(*bufio.Writer)
		cc.bw.Reset(cc.tc)
	}
	return cc.bw
}

// release gives the buffers back once a request is over: the writer when
// it holds nothing (the reader after idleGrace, in waitRequest), both when
// the connection closes, the reader never while a body may still be read
// from it.
func (cc *clientConn) release(closing bool) {
	if cc.bw != nil && (closing || cc.bw.Buffered() == 0) {
		cc.bw.Reset(nil)
		writers.Put(cc.bw)
		cc.bw = nil
	}
	if closing {
		cc.releaseReader()
	}
	if cap(cc.req.buf) > maxKeptHead {
		cc.req.buf, cc.req.fields = nil, nil
	}
	if cap(cc.res.buf) > maxKeptHead {
		cc.res.buf, cc.res.fields = nil, nil
	}
}

// request is what the proxy learned of the request it is forwarding.
type request struct {
	head
	body      framing
	length    int64 // for lengthBody
	host      []byte
	path      []byte // the path of the target, without the query
	query     []byte
	upgrade   bool // asks to switch protocols (WebSocket): tunnel on 101
	connect   bool // CONNECT: tunnel on 2xx
	isHead    bool // HEAD: the response has no body whatever it says
	expect    bool // Expect: 100-continue
	keepAlive bool // the client may send another request after this one
}

func newClientConn(p *Proxy, c net.Conn, info *httpproxy.ConnInfo) *clientConn {
	tc := &timedConn{Conn: c}
	return &clientConn{p: p, c: c, tc: tc, info: info, pre: prefixReader{r: tc}}
}

// serve forwards requests until the client closes, a request or response
// rules out another one, or the proxy shuts down.
func (cc *clientConn) serve() {
	defer func() {
		cc.c.Close()
		cc.release(true)
	}()
	for {
		if !cc.waitRequest() {
			return
		}
		cc.writer()
		if !cc.headBuffered() {
			cc.tc.readBy(time.Now().Add(cc.p.cfg.ReadHeaderTimeout))
		}
		err := readHead(cc.br, &cc.req.head, cc.p.cfg.MaxHeaderBytes)
		if err == nil {
			err = cc.req.parse()
		}
		if err != nil {
			cc.refuseMalformed(err)
			return
		}
		if cc.req.body != noBody {
			// The body is bounded by its idle timeout alone.
			cc.tc.idle = cc.p.cfg.BodyIdleTimeout
			cc.tc.readBy(time.Time{})
		}
		if !cc.exchange() {
			return
		}
		cc.release(false)
	}
}

// headBuffered reports whether the whole next request head is already
// read: then no header timeout needs setting, which saves a timer update
// per request on a busy connection.
func (cc *clientConn) headBuffered() bool {
	b, _ := cc.br.Peek(cc.br.Buffered())
	return bytes.Contains(b, crlfcrlf)
}

var crlfcrlf = []byte("\r\n\r\n")

// idleGrace is how long a connection waits for its next request with its
// read buffer in hand: a busy client's next request comes at once, and
// reading it straight into the buffer saves a system call; past the grace
// the buffer goes back to the pool.
const idleGrace = time.Second

// waitRequest waits for the first byte of the next request, up to the
// idle timeout; false means the connection is over. A peer proxy's
// connection that ends while idle is told goodbye first (resend.go).
func (cc *clientConn) waitRequest() bool {
	if cc.p.shuttingDown() {
		cc.farewell() // its last response said keep-alive
		return false
	}
	cc.idle.Store(true)
	got, timedOut := cc.awaitRequest()
	if !cc.idle.CompareAndSwap(true, false) {
		// Shutdown took the connection and told its client goodbye: what
		// comes meanwhile is read off, never served, until it closes.
		cc.readOff(time.Now().Add(2 * goodbyeLinger))
		return false
	}
	if timedOut {
		cc.farewell()
	}
	return got
}

// awaitRequest waits for the first byte of the next request, up to the
// idle timeout; timedOut says that it passed first.
func (cc *clientConn) awaitRequest() (got, timedOut bool) {
	cc.tc.idle = 0
	now := time.Now()
	idleBy := now.Add(cc.p.cfg.IdleTimeout)
	if cc.br != nil {
		if cc.br.Buffered() > 0 {
			return true, false // pipelined: the next request is here already
		}
		cc.tc.readBy(earliest(now.Add(idleGrace), idleBy))
		_, err := cc.br.Peek(1)
		switch {
		case err == nil:
			return true, false
		case !isTimeout(err):
			return false, false
		case !time.Now().Before(idleBy):
			return false, true
		}
		cc.releaseReader()
	}
	cc.tc.readBy(idleBy)
	for {
		n, err := cc.tc.Read(cc.one[:])
		if n > 0 {
			break
		}
		if err != nil {
			return false, isTimeout(err)
		}
	}
	cc.pre.b, cc.pre.has = cc.one[0], true
	cc.br = readers.Get().(*bufio.Reader)
	cc.br.Reset(&cc.pre)
	cc.holdsReader.Store(true)
	return true, false
}

// closeIfIdle ends the connection if it waits for a request: called by
// Shutdown, which then waits for the busy ones. A peer proxy is told
// goodbye first.
func (cc *clientConn) closeIfIdle() {
	if !cc.idle.CompareAndSwap(true, false) {
		return
	}
	if !cc.peerProxy() {
		cc.c.Close()
		return
	}
	go cc.goodbye()
}

// refuseMalformed answers a request head the proxy will not forward, when
// it was one (a timeout or a client gone gets nothing), and the connection
// closes: after a framing error nothing on it can be trusted.
func (cc *clientConn) refuseMalformed(err error) {
	var pe *protoError
	if !errors.As(err, &pe) {
		if errors.Is(err, io.ErrUnexpectedEOF) || isTimeout(err) {
			cc.p.cfg.Log.Debug("client sent an incomplete request head", "client", cc.c.RemoteAddr().String(), "err", err)
		}
		return
	}
	cc.p.cfg.Log.Info("refusing a malformed request", "direction", cc.p.cfg.Direction,
		"client", cc.c.RemoteAddr().String(), "status", pe.status, "err", pe.msg)
	cc.writeLocal(local{code: pe.status, what: "malformed", msg: "mesh-proxy: " + pe.msg}, true)
	cc.bw.Flush()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// parse checks the request head and works out its framing and what the
// proxy needs of it, marking the hop-by-hop fields it does not forward.
func (r *request) parse() error {
	if err := r.parseRequestLine(); err != nil {
		return err
	}
	method := r.get(r.method)
	r.connect = string(method) == "CONNECT"
	r.isHead = string(method) == "HEAD"
	hosts := r.hostCount()
	if hosts > 1 || (r.minor == 1 && hosts == 0) {
		// RFC 9112 §3.2: exactly one Host in HTTP/1.1.
		return badRequest("a request needs exactly one Host header")
	}
	r.host, _ = r.value("host")
	if err := r.parseTarget(); err != nil {
		return err
	}
	te, chunked := r.transferEncoding()
	n, err := r.contentLength()
	if err != nil {
		return err
	}
	r.body, r.length = noBody, 0
	closeAfter := false
	switch {
	case te && r.minor == 0:
		return badRequest("Transfer-Encoding in an HTTP/1.0 request")
	case te && !chunked:
		return &protoError{status: 501, msg: "unsupported Transfer-Encoding"}
	case te:
		r.body = chunkedBody
		if n >= 0 {
			// RFC 9112 §6.1: Transfer-Encoding overrides Content-Length,
			// which is not forwarded, and the connection closes after the
			// response, for the request may be an attack.
			r.dropFields("content-length")
			closeAfter = true
		}
	case n > 0:
		r.body, r.length = lengthBody, n
	}
	if r.connect && r.body != noBody {
		return badRequest("CONNECT with a body")
	}
	r.expect = r.body != noBody && r.hasToken("expect", "100-continue")
	r.upgrade = r.hasToken("connection", "upgrade") && r.has("upgrade")
	r.keepAlive = !closeAfter && !r.hasToken("connection", "close") &&
		(r.minor == 1 || r.hasToken("connection", "keep-alive"))
	r.dropHopByHop(r.upgrade)
	// The mesh's own mark of an HTTP/1 request carried over HTTP/2 between
	// proxies (httpproxy.OrigProtoHeader) is never taken from a client.
	r.dropFields("mesh-orig-proto")
	return nil
}

// parseTarget finds the path and query of the request target, for the
// policy, the metrics and tap: origin form (/p?q), absolute form
// (http://h/p?q, forwarded as it came), "*" for OPTIONS, or the
// authority of a CONNECT.
func (r *request) parseTarget() error {
	t := r.get(r.target)
	r.path, r.query = nil, nil
	switch {
	case r.connect:
		if _, err := netip.ParseAddrPort(string(t)); err != nil && !validAuthority(t) {
			return badRequest("invalid CONNECT target")
		}
		return nil
	case len(t) > 0 && t[0] == '/':
	case string(t) == "*":
		r.path = t
		return nil
	default:
		// Absolute form: scheme "://" authority path.
		i := indexOf(t, "://")
		if i <= 0 {
			return badRequest("invalid request target")
		}
		rest := t[i+3:]
		j := 0
		for j < len(rest) && rest[j] != '/' && rest[j] != '?' {
			j++
		}
		t = rest[j:]
	}
	q := -1
	for i, c := range t {
		if c == '?' {
			q = i
			break
		}
		if c == '#' {
			return badRequest("fragment in the request target")
		}
	}
	if q >= 0 {
		r.path, r.query = t[:q], t[q+1:]
	} else {
		r.path = t
	}
	if len(r.path) == 0 {
		r.path = slash
	}
	return nil
}

var slash = []byte("/")

func indexOf(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}

// validAuthority accepts host:port with a port.
func validAuthority(t []byte) bool {
	i := len(t) - 1
	for i >= 0 && isDigit(t[i]) {
		i--
	}
	return i > 0 && i < len(t)-1 && t[i] == ':'
}

// has reports a field named name (lower case).
func (h *head) has(name string) bool {
	_, ok := h.value(name)
	return ok
}

// dropFields marks every field named name (lower case) not forwarded.
func (h *head) dropFields(name string) {
	for i := range h.fields {
		if h.is(&h.fields[i], name) {
			h.fields[i].drop = true
		}
	}
}

// dropHopByHop marks the fields that concern only this connection (RFC
// 9110 §7.6.1): Connection and the fields it names, Keep-Alive and
// Proxy-Connection. An upgrade keeps Upgrade, and gets "Connection:
// Upgrade" written back in place of its Connection fields.
// Proxy-Authorization goes on: the proxy is transparent, and a client
// configured with an HTTP proxy means it for that proxy, not for us.
func (h *head) dropHopByHop(upgrade bool) {
	for i := range h.fields {
		f := &h.fields[i]
		if !h.is(f, "connection") {
			continue
		}
		f.drop = true
		v := h.get(f.value)
		for len(v) > 0 {
			var item []byte
			item, v = nextItem(v)
			if len(item) == 0 || (upgrade && equalFold(item, "upgrade")) {
				continue
			}
			for j := range h.fields {
				if n := h.get(h.fields[j].name); len(n) == len(item) && equalFoldBytes(n, item) {
					h.fields[j].drop = true
				}
			}
		}
	}
	h.dropFields("keep-alive")
	h.dropFields("proxy-connection")
}

func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y || (a[i] != b[i] && !isLetter(a[i])) {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return (c|0x20) >= 'a' && (c|0x20) <= 'z' }

// writeHead writes h's start line and the fields it forwards to w,
// then extra (whole field lines with CRLF, possibly empty) and the empty
// line.
func writeHead(w *bufio.Writer, h *head, extra string) error {
	w.Write(h.get(h.start))
	w.WriteString("\r\n")
	for i := range h.fields {
		f := &h.fields[i]
		if f.drop {
			continue
		}
		w.Write(h.get(f.line))
		w.WriteString("\r\n")
	}
	w.WriteString(extra)
	_, err := w.WriteString("\r\n")
	return err
}
