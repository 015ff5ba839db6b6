package h2

import (
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// goAwayLinger is how long a connection that ended in a connection error
// stays open after its GOAWAY, read and discarded, so that the client
// reads the GOAWAY rather than a reset (net/http waits as long).
const goAwayLinger = time.Second

// Rapid reset (CVE-2023-44487): a client that opens streams and resets
// them before their response costs the proxy and its target work for
// nothing. Past earlyResetLimit such resets, and more of them than
// streams that ended normally, the connection is closed with
// ENHANCE_YOUR_CALM.
const earlyResetLimit = 200

// serverConn is a client's HTTP/2 connection. Its reader goroutine (serve)
// owns the fields marked reader only; mu guards the stream table and what
// the comments say.
type serverConn struct {
	*peer
	p         *Proxy
	info      httpproxy.ConnInfo
	targetStr string

	mu         sync.Mutex
	streams    map[uint32]*stream // open streams; guarded by mu
	initWindow int32              // the client's initial stream window; guarded by mu
	draining   bool               // GOAWAY sent: closes once streams are done; guarded by mu
	idle       *time.Timer        // closes the connection when no stream is open; guarded by mu

	goingAway atomic.Bool   // a GOAWAY was sent
	lastID    atomic.Uint32 // the highest stream ID the client opened
	completed atomic.Int64  // streams that ended without the client resetting them

	// Reader only.
	sawSettings bool
	unacked     int // our SETTINGS not yet acknowledged
	errAway     bool
	earlyResets int64
	fl          flusher
}

func newServerConn(p *Proxy, c *peer, info httpproxy.ConnInfo) *serverConn {
	sc := &serverConn{peer: c, p: p, info: info, streams: map[uint32]*stream{}, initWindow: defaultWindow}
	return sc
}

func (sc *serverConn) target() string {
	if sc.targetStr == "" {
		sc.targetStr = sc.info.Target.String()
	}
	return sc.targetStr
}

// serve reads the client's frames until the connection ends.
func (sc *serverConn) serve() {
	defer sc.teardown()
	preface, err := sc.br.Peek(len(http2.ClientPreface))
	if err != nil || string(preface) != http2.ClientPreface {
		return
	}
	sc.br.Discard(len(preface))
	cfg := &sc.p.cfg
	sc.lock()
	sc.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: cfg.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(cfg.MaxHeaderBytes)},
	)
	sc.wfr.WriteWindowUpdate(0, connWindow-defaultWindow)
	sc.unlock(nil)
	sc.unacked = 1
	sc.recv = connWindow
	sc.mu.Lock()
	sc.idle = time.AfterFunc(cfg.IdleTimeout, sc.closeIdle)
	sc.mu.Unlock()
	for {
		if !frameBuffered(sc.br) {
			sc.fl.flushAll()
		}
		f, err := sc.readFrame()
		if err == nil {
			err = sc.process(f)
		}
		if err != nil && !sc.handle(err) {
			return
		}
	}
}

// handle acts on what reading or processing a frame found wrong, and
// reports whether the connection goes on.
func (sc *serverConn) handle(err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		if se.StreamID%2 == 1 && se.StreamID > sc.lastID.Load() {
			sc.lastID.Store(se.StreamID) // a stream refused as it opened is closed
		}
		sc.resetStream(se.StreamID, se.Code)
		return true
	case errors.Is(err, http2.ErrFrameTooLarge):
		sc.goAway(http2.ErrCodeFrameSize)
	case errors.As(err, &ce):
		sc.goAway(http2.ErrCode(ce))
	default:
		return false // the connection broke, or the client closed it
	}
	// What follows a connection error may not even be frames (a frame
	// too large is left unread): read and drop it until goAway closes
	// the connection.
	io.Copy(io.Discard, sc.br)
	return false
}

// goAway ends the connection for a connection error: GOAWAY with code,
// and the connection closes a little later.
func (sc *serverConn) goAway(code http2.ErrCode) {
	if sc.errAway {
		return
	}
	sc.errAway = true
	sc.goingAway.Store(true)
	sc.lock()
	sc.wfr.WriteGoAway(sc.lastID.Load(), code, nil)
	sc.unlock(&sc.fl)
	sc.fl.flushAll()
	c := sc.c
	time.AfterFunc(goAwayLinger, func() { c.Close() })
}

// resetStream answers a stream error with RST_STREAM, ending the stream.
func (sc *serverConn) resetStream(id uint32, code http2.ErrCode) {
	if s := sc.lookup(id); s != nil {
		s.mu.Lock()
		s.x.failed = s.x.status != 0
		s.resetBoth(&sc.fl, code, http2.ErrCodeCancel, true, true)
		s.mu.Unlock()
		return
	}
	sc.writeRST(&sc.fl, id, code)
}

func (sc *serverConn) lookup(id uint32) *stream {
	sc.mu.Lock()
	s := sc.streams[id]
	sc.mu.Unlock()
	return s
}

// idleState says whether id names a stream the client has not opened yet
// (RFC 9113 §5.1).
func (sc *serverConn) idleState(id uint32) bool {
	return id%2 == 1 && id > sc.lastID.Load()
}

func (sc *serverConn) process(f http2.Frame) error {
	if !sc.sawSettings {
		if _, ok := f.(*http2.SettingsFrame); !ok {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		sc.sawSettings = true
	}
	// After a GOAWAY, frames of streams it did not admit are ignored, and
	// all after an error; their DATA still counts against the window.
	if sc.goingAway.Load() && (sc.errAway || f.Header().StreamID > sc.lastID.Load()) {
		if d, ok := f.(*http2.DataFrame); ok {
			if !sc.take(d.Length) {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			sc.credit(&sc.fl, int64(d.Length))
		}
		return nil
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return sc.processSettings(f)
	case *http2.HeadersFrame:
		return sc.processHeaders(&sc.blocks.b)
	case *http2.DataFrame:
		return sc.processData(f)
	case *http2.WindowUpdateFrame:
		return sc.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return sc.processReset(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			sc.lock()
			sc.wfr.WritePing(true, f.Data)
			sc.unlock(&sc.fl)
		}
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
		}
	case *http2.GoAwayFrame:
		sc.drain() // the client opens no more streams; those open finish
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // a client cannot push
	}
	return nil // unknown frame types are ignored (RFC 9113 §5.5)
}

func (sc *serverConn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		if sc.unacked--; sc.unacked < 0 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil
	}
	if f.NumSettings() > 100 || f.HasDuplicates() {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	var window *uint32
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingHeaderTableSize:
			sc.lock()
			sc.enc.SetMaxDynamicTableSizeLimit(s.Val)
			sc.unlock(&sc.fl)
		case http2.SettingMaxFrameSize:
			sc.lock()
			sc.maxOut = s.Val
			sc.unlock(&sc.fl)
		case http2.SettingInitialWindowSize:
			window = &s.Val
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Acknowledged before the new window lets DATA go, as net/http's
	// server orders them.
	sc.lock()
	sc.wfr.WriteSettingsAck()
	sc.unlock(&sc.fl)
	if window == nil {
		return nil
	}
	sc.mu.Lock()
	delta := int32(*window) - sc.initWindow
	sc.initWindow = int32(*window)
	open := sc.snapshot()
	sc.mu.Unlock()
	for _, st := range open {
		st.mu.Lock()
		ok := st.closed || st.res.addWindow(&sc.fl, delta)
		st.mu.Unlock()
		if !ok {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	}
	return nil
}

func (sc *serverConn) snapshot() []*stream {
	open := make([]*stream, 0, len(sc.streams))
	for _, s := range sc.streams {
		open = append(open, s)
	}
	return open
}

func (sc *serverConn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	if f.StreamID == 0 {
		woken, ok := sc.addWindow(f.Increment)
		if !ok {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		wake(&sc.fl, woken)
		return nil
	}
	if sc.idleState(f.StreamID) {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	s := sc.lookup(f.StreamID)
	if s == nil {
		return nil // closed: a late update is no error (RFC 9113 §5.1)
	}
	s.mu.Lock()
	ok := s.closed || s.res.addWindow(&sc.fl, int32(f.Increment))
	s.mu.Unlock()
	if !ok {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	return nil
}

// wake drains the halves that waited for a connection's window.
func wake(fl *flusher, woken []*half) {
	for _, h := range woken {
		h.s.mu.Lock()
		if !h.s.closed {
			h.drain(fl)
		}
		h.s.mu.Unlock()
	}
}

func (sc *serverConn) processReset(f *http2.RSTStreamFrame) error {
	if sc.idleState(f.StreamID) {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	s := sc.lookup(f.StreamID)
	if s == nil {
		return nil
	}
	s.mu.Lock()
	early := !s.resBegan
	if !s.res.done {
		s.x.canceled = true
		s.x.failed = s.x.status != 0
	}
	s.resetBoth(&sc.fl, 0, f.ErrCode, false, true)
	s.mu.Unlock()
	if early {
		if sc.earlyResets++; sc.earlyResets > earlyResetLimit && sc.earlyResets > sc.completed.Load() {
			sc.p.cfg.Log.Info("closing a connection that resets its streams early (rapid reset)",
				"direction", sc.p.cfg.Direction, "client", sc.c.RemoteAddr().String(), "resets", sc.earlyResets)
			return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
		}
	}
	return nil
}

func (sc *serverConn) processData(f *http2.DataFrame) error {
	id := f.StreamID
	if id == 0 || sc.idleState(id) {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if !sc.take(f.Length) {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	// Credited as it arrives: what a stream queues is bounded by its own
	// window, and no stream holds up the others.
	sc.credit(&sc.fl, int64(f.Length))
	s := sc.lookup(id)
	if s == nil {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil // reset meanwhile: frames in flight are ignored
	}
	if s.req.end {
		s.x.failed = s.x.status != 0
		s.resetBoth(&sc.fl, http2.ErrCodeStreamClosed, http2.ErrCodeCancel, true, true)
		return nil
	}
	if int32(f.Length) > s.req.recv {
		s.x.failed = s.x.status != 0
		s.resetBoth(&sc.fl, http2.ErrCodeFlowControl, http2.ErrCodeCancel, true, true)
		return nil
	}
	s.req.recv -= int32(f.Length)
	data := f.Data()
	s.req.credit += int32(int(f.Length) - len(data)) // padding: nothing to forward
	s.gotLen += int64(len(data))
	if s.declLen >= 0 && (s.gotLen > s.declLen || (f.StreamEnded() && s.gotLen != s.declLen)) {
		// RFC 9113 §8.1.1: a body that is not as long as its
		// content-length is malformed.
		s.x.failed = s.x.status != 0
		s.resetBoth(&sc.fl, http2.ErrCodeProtocol, http2.ErrCodeCancel, true, true)
		return nil
	}
	s.noteMove()
	s.req.push(&sc.fl, data, f.StreamEnded())
	return nil
}

// processHeaders opens a stream, or ends one with trailers.
func (sc *serverConn) processHeaders(f *headerBlock) error {
	id := f.StreamID
	if id%2 != 1 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if s := sc.lookup(id); s != nil {
		return sc.trailers(s, f)
	}
	if id <= sc.lastID.Load() {
		return http2.ConnectionError(http2.ErrCodeProtocol) // a stream ID used again
	}
	sc.lastID.Store(id)
	if f.HasPriority() && f.Priority.StreamDep == id {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	s, err := sc.newStream(f)
	if err != nil {
		return err
	}
	sc.mu.Lock()
	if uint32(len(sc.streams)) >= sc.p.cfg.MaxConcurrentStreams {
		sc.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	s.res.window = sc.initWindow
	sc.streams[id] = s
	sc.idle.Stop()
	sc.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Truncated {
		// net/http's server answers a header list past its limit with 431.
		s.x.uncounted = true
		s.answer(&sc.fl, 431, 8, "header list too large", "mesh-proxy: request header fields too large") // 8: RESOURCE_EXHAUSTED
		return nil
	}
	if s.origH1 {
		go s.serveHTTP1()
		return nil
	}
	s.dispatch(&sc.fl)
	return nil
}

// trailers ends a stream's request with its trailer fields.
func (sc *serverConn) trailers(s *stream, f *headerBlock) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil
	case s.req.end:
		s.x.failed = s.x.status != 0
		s.resetBoth(&sc.fl, http2.ErrCodeStreamClosed, http2.ErrCodeCancel, true, true)
		return nil
	case !f.StreamEnded() || len(f.PseudoFields()) > 0 || (s.declLen >= 0 && s.gotLen != s.declLen):
		s.x.failed = s.x.status != 0
		s.resetBoth(&sc.fl, http2.ErrCodeProtocol, http2.ErrCodeCancel, true, true)
		return nil
	}
	s.req.trailers = slices.Clone(f.Fields)
	s.req.push(&sc.fl, nil, true)
	return nil
}

// newStream checks a request head as net/http's server does (RFC 9113
// §8.3.1, §8.2.2) and makes its stream; a malformed one is a stream error.
func (sc *serverConn) newStream(f *headerBlock) (*stream, error) {
	bad := http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
	s := &stream{sc: sc, id: f.StreamID, fields: slices.Clone(f.Fields), declLen: -1, grpcStatus: -1}
	var scheme, protocol string
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			s.method = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":authority":
			s.authority = hf.Value
		case ":path":
			s.path = hf.Value
		case ":protocol":
			protocol = hf.Value
		default:
			return nil, bad // :status in a request
		}
	}
	switch {
	case protocol != "":
		return nil, bad // extended CONNECT is not offered
	case s.method == "CONNECT":
		if s.path != "" || scheme != "" || s.authority == "" {
			return nil, bad
		}
	case s.method == "" || s.path == "" || (scheme != "http" && scheme != "https"):
		return nil, bad
	}
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return nil, bad
		case "te":
			if hf.Value != "trailers" {
				return nil, bad
			}
		case "content-length":
			n, err := strconv.ParseUint(hf.Value, 10, 63)
			if err != nil || (s.declLen >= 0 && int64(n) != s.declLen) {
				return nil, bad
			}
			s.declLen = int64(n)
		case "content-type":
			s.grpc = strings.HasPrefix(hf.Value, "application/grpc")
		case "host":
			if s.authority == "" {
				s.authority = hf.Value
			}
		case strings.ToLower(httpproxy.OrigProtoHeader):
			s.origH1 = hf.Value == "HTTP/1.1" && sc.info.ClientID != "" && sc.p.cfg.Direction == metrics.Inbound
		}
	}
	if f.StreamEnded() && s.declLen > 0 {
		return nil, bad
	}
	s.x.start = time.Now()
	s.req = half{s: s, src: sc.peer, srcID: f.StreamID, recv: streamWindow, keep: keepRequestField}
	s.res = half{s: s, dst: sc.peer, dstID: f.StreamID, recv: streamWindow, keep: keepResponseField}
	if f.StreamEnded() {
		s.req.end = true
	}
	return s, nil
}

// keepRequestField says which request fields go to the target: all that
// HTTP/2 allows, but the mark of the HTTP/1.1 compatibility path, which is
// the proxies' alone.
func keepRequestField(name string) bool {
	return name != "mesh-orig-proto"
}

// keepResponseField drops the connection-specific fields a target may
// send, which HTTP/2 forbids (RFC 9113 §8.2.2), and the not-delivered
// mark of the proxies' HTTP/1 (resend.go), which only the proxy's own
// answer to a peer proxy may carry: never one a target sent, nor one to a
// client.
func keepResponseField(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", notDeliveredField:
		return false
	}
	return true
}

// forget takes a closed stream off the connection.
func (sc *serverConn) forget(s *stream) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.streams[s.id] != s {
		return
	}
	delete(sc.streams, s.id)
	if len(sc.streams) == 0 {
		if sc.draining {
			go sc.closeSoon()
		} else if sc.idle != nil {
			sc.idle.Reset(sc.p.cfg.IdleTimeout)
		}
	}
}

// closeIdle closes the connection once it has been idle for IdleTimeout.
func (sc *serverConn) closeIdle() {
	sc.mu.Lock()
	idle := len(sc.streams) == 0
	sc.mu.Unlock()
	if idle {
		sc.drain()
	}
}

// drain sends GOAWAY: the client opens no more streams, and the
// connection closes once those it opened are done.
func (sc *serverConn) drain() {
	sc.mu.Lock()
	if sc.draining {
		sc.mu.Unlock()
		return
	}
	sc.draining = true
	empty := len(sc.streams) == 0
	sc.mu.Unlock()
	sc.goingAway.Store(true)
	sc.lock()
	sc.wfr.WriteGoAway(sc.lastID.Load(), http2.ErrCodeNo, nil)
	sc.unlock(nil)
	if empty {
		sc.closeSoon()
	}
}

// closeSoon closes a drained connection: at once when the client has
// closed its side, else after goAwayLinger, for the client to read the
// last frames rather than a reset.
func (sc *serverConn) closeSoon() {
	sc.flush()
	c := sc.c
	time.AfterFunc(goAwayLinger, func() { c.Close() })
}

// teardown ends what is left once the reader has stopped: every stream
// still open is cancelled at its target.
func (sc *serverConn) teardown() {
	sc.fl.flushAll()
	sc.c.Close()
	sc.mu.Lock()
	sc.draining = true
	if sc.idle != nil {
		sc.idle.Stop()
	}
	open := sc.snapshot()
	sc.mu.Unlock()
	for _, s := range open {
		s.mu.Lock()
		if !s.res.done {
			s.x.canceled = true
			s.x.failed = s.x.status != 0
		}
		s.resetBoth(nil, 0, http2.ErrCodeCancel, false, true)
		s.mu.Unlock()
	}
}
