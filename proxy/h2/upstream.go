package h2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
)

// assumedMaxStreams is how many streams a target takes until its SETTINGS
// say; the proxy waits for them before it uses a new connection, so this
// only matters for a target whose SETTINGS leave the limit out (no limit).
const assumedMaxStreams = 1000

// maxStreamID is the last stream ID a connection may open (RFC 9113 §5.1.1);
// a connection that gets there takes no more streams.
const maxStreamID = 1<<31 - 1

// poolKey names the connections that may carry a request: those to its
// endpoint, proving its identity (none in plain text).
type poolKey struct {
	addr     netip.AddrPort
	identity string
}

// pool holds the connections to targets, several per endpoint when one's
// streams are all taken. mu guards conns and dials.
type pool struct {
	p     *Proxy
	d     *net.Dialer
	mu    sync.Mutex
	conns map[poolKey][]*upConn
	dials map[poolKey]*dial
}

// dial is a connection being made; requests for the same endpoint wait
// for it rather than dial each (and each pay a TLS handshake).
type dial struct {
	done chan struct{}
	err  error
}

func newPool(p *Proxy) *pool {
	return &pool{
		p:     p,
		d:     &net.Dialer{Timeout: p.cfg.ConnectTimeout, KeepAlive: 30 * time.Second},
		conns: map[poolKey][]*upConn{},
		dials: map[poolKey]*dial{},
	}
}

// take returns a connection to k with a stream slot taken for the caller,
// or nil when none has one free.
func (pl *pool) take(k poolKey) *upConn {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	cs := pl.conns[k]
	for i := len(cs) - 1; i >= 0; i-- {
		if cs[i].reserve() {
			return cs[i]
		}
	}
	return nil
}

// get returns a connection to k with a stream slot taken for the caller,
// connecting when none has one; requests that need a connection while one
// is being made wait for it, and share its failure. A connection the
// caller made itself has its first slot taken for the caller.
func (pl *pool) get(k poolKey) (*upConn, error) {
	for {
		if uc := pl.take(k); uc != nil {
			return uc, nil
		}
		pl.mu.Lock()
		if d := pl.dials[k]; d != nil {
			pl.mu.Unlock()
			<-d.done
			if d.err != nil {
				return nil, d.err
			}
			continue // its slots may all be taken: then dial another
		}
		d := &dial{done: make(chan struct{})}
		pl.dials[k] = d
		pl.mu.Unlock()
		uc, err := pl.connect(k)
		ok := err == nil && uc.reserve()
		pl.mu.Lock()
		delete(pl.dials, k)
		if err == nil {
			pl.conns[k] = append(pl.conns[k], uc)
		}
		pl.mu.Unlock()
		d.err = err
		close(d.done)
		switch {
		case err != nil:
			return nil, err
		case !ok:
			return nil, &httpproxy.ConnectError{Err: errors.New("the target takes no streams")}
		}
		return uc, nil
	}
}

// connect dials k, in mesh TLS when it has an identity, and opens HTTP/2
// on the connection: the preface and SETTINGS both ways. The target's
// SETTINGS are awaited so that its stream limit is known before any
// stream is sent.
func (pl *pool) connect(k poolKey) (*upConn, error) {
	cfg := &pl.p.cfg
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ConnectTimeout)
	defer cancel()
	c, err := pl.d.DialContext(ctx, "tcp", k.addr.String())
	if err != nil {
		return nil, &httpproxy.ConnectError{Err: err}
	}
	if k.identity != "" {
		tc, err := cfg.MeshTLS(ctx, c, k.identity)
		if err != nil {
			c.Close()
			return nil, &httpproxy.ConnectError{Err: err}
		}
		c = tc
	}
	uc := &upConn{peer: newPeer(c, maxResponseHeaderList, pl.p.writeTimeout), pool: pl, key: k, streams: map[uint32]*stream{},
		nextID: 1, maxStreams: assumedMaxStreams, initWindow: defaultWindow, idleSince: time.Now()}
	uc.lock()
	uc.bw.WriteString(http2.ClientPreface)
	uc.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxResponseHeaderList},
	)
	uc.wfr.WriteWindowUpdate(0, connWindow-defaultWindow)
	uc.unlock(nil)
	uc.recv = connWindow
	if deadline, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(deadline)
	}
	f, err := uc.fr.ReadFrame()
	if err == nil {
		if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
			err = fmt.Errorf("the target's first frame is %v, not SETTINGS", f.Header().Type)
		} else {
			err = uc.processSettings(sf)
		}
	}
	if err != nil {
		c.Close()
		return nil, &httpproxy.ConnectError{Err: fmt.Errorf("opening HTTP/2: %w", err)}
	}
	c.SetReadDeadline(time.Time{})
	go uc.readLoop()
	return uc, nil
}

// remove takes uc out of the pool: it takes no more streams.
func (pl *pool) remove(uc *upConn) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	cs := pl.conns[uc.key]
	for i, c := range cs {
		if c == uc {
			cs = append(cs[:i], cs[i+1:]...)
			break
		}
	}
	if len(cs) == 0 {
		delete(pl.conns, uc.key)
	} else {
		pl.conns[uc.key] = cs
	}
}

// closeIdle closes the connections that carry no stream, or have carried
// none since before, when before is not zero.
func (pl *pool) closeIdle(before time.Time) {
	pl.mu.Lock()
	var idle []*upConn
	for _, cs := range pl.conns {
		for _, uc := range cs {
			if uc.idle(before) {
				idle = append(idle, uc)
			}
		}
	}
	pl.mu.Unlock()
	for _, uc := range idle {
		uc.shut()
	}
}

// checkLive pings the connections that carry streams and read nothing
// since the last check, and closes those whose ping went unanswered since
// then: a target that vanished without a FIN (its node died) fails the
// streams on it instead of hanging them, as net/http's transport did
// with its ping timeout.
func (pl *pool) checkLive() {
	pl.mu.Lock()
	var all []*upConn
	for _, cs := range pl.conns {
		all = append(all, cs...)
	}
	pl.mu.Unlock()
	for _, uc := range all {
		reads := uc.reads.Load()
		uc.mu.Lock()
		silent := reads == uc.seenReads && uc.reserved > 0
		dead := silent && uc.pinged
		uc.seenReads, uc.pinged = reads, silent
		uc.mu.Unlock()
		switch {
		case dead:
			pl.p.cfg.Log.Info("closing a target connection that answers no ping", "target", uc.key.addr.String())
			uc.c.Close()
		case silent:
			uc.lock()
			uc.wfr.WritePing(false, [8]byte{'l', 'i', 'v', 'e'})
			uc.unlock(nil)
		}
	}
}

// closeAll closes every connection.
func (pl *pool) closeAll() {
	pl.mu.Lock()
	var all []*upConn
	for _, cs := range pl.conns {
		all = append(all, cs...)
	}
	pl.mu.Unlock()
	for _, uc := range all {
		uc.c.Close()
	}
}

// upConn is an HTTP/2 connection to a target. Its reader goroutine
// (readLoop) owns what the comments say; mu guards the rest.
type upConn struct {
	*peer
	pool *pool
	key  poolKey

	nextID uint32 // the next stream's ID; guarded by wmu, as IDs must reach the wire in order

	mu         sync.Mutex
	streams    map[uint32]*stream // by their ID here
	reserved   int                // streams taken, open or about to be
	maxStreams int                // the target's SETTINGS_MAX_CONCURRENT_STREAMS
	initWindow int32              // the target's initial stream window
	retired    bool               // GOAWAY received, or closing: no new streams
	lastID     uint32             // a GOAWAY's last stream ID, when retired by one
	idleSince  time.Time          // when it last had no stream
	seenReads  uint64             // reads at the last liveness check
	pinged     bool               // a liveness ping is unanswered

	reads atomic.Uint64 // frames read, for the liveness check
	fl    flusher       // reader only
}

// reserve takes a stream slot; false means the connection has none.
// Called with the pool's mu held.
func (uc *upConn) reserve() bool {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.retired || uc.reserved >= uc.maxStreams {
		return false
	}
	uc.reserved++
	return true
}

// release gives back a slot no stream used.
func (uc *upConn) release() {
	uc.mu.Lock()
	uc.reserved--
	uc.afterStream()
	uc.mu.Unlock()
}

// register adds s, about to open on this connection, and returns the
// window the target gives its new streams; false means the connection was
// retired meanwhile. Called with wmu held.
func (uc *upConn) register(s *stream) (int32, bool) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.retired || s.upID > maxStreamID {
		return 0, false
	}
	uc.streams[s.upID] = s
	if s.upID+2*uint32(uc.reserved) >= maxStreamID {
		uc.retired = true // out of stream IDs: those reserved still fit
	}
	return uc.initWindow, true
}

// forget takes a stream off the connection and frees its slot.
func (uc *upConn) forget(s *stream) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.streams[s.upID] != s {
		return
	}
	delete(uc.streams, s.upID)
	uc.reserved--
	uc.afterStream()
}

// afterStream closes a retired connection once it carries nothing.
// Called with mu held.
func (uc *upConn) afterStream() {
	if uc.reserved > 0 {
		return
	}
	uc.idleSince = time.Now()
	if uc.retired {
		go uc.c.Close()
	}
}

func (uc *upConn) idle(before time.Time) bool {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	return uc.reserved == 0 && (before.IsZero() || uc.idleSince.Before(before))
}

// shut retires an idle connection with GOAWAY and closes it.
func (uc *upConn) shut() {
	uc.mu.Lock()
	if uc.reserved > 0 || uc.retired {
		uc.mu.Unlock()
		return
	}
	uc.retired = true
	uc.mu.Unlock()
	uc.pool.remove(uc)
	uc.lock()
	uc.wfr.WriteGoAway(0, http2.ErrCodeNo, nil)
	uc.unlock(nil)
	uc.c.Close()
}

func (uc *upConn) lookup(id uint32) *stream {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	return uc.streams[id]
}

func (uc *upConn) snapshot() []*stream {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	open := make([]*stream, 0, len(uc.streams))
	for _, s := range uc.streams {
		open = append(open, s)
	}
	return open
}

// readLoop reads the target's frames until the connection ends, then
// fails the streams still on it.
func (uc *upConn) readLoop() {
	var err error
	for err == nil {
		if !frameBuffered(uc.br) {
			uc.fl.flushAll()
		}
		var f http2.Frame
		f, err = uc.readFrame()
		uc.reads.Add(1)
		if err == nil {
			err = uc.process(f)
		} else {
			var se http2.StreamError
			if errors.As(err, &se) {
				err = nil
				uc.streamError(se.StreamID, se.Code, fmt.Errorf("malformed response: %v", se.Cause))
			}
		}
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		uc.lock()
		uc.wfr.WriteGoAway(0, http2.ErrCode(ce), nil)
		uc.unlock(&uc.fl)
	}
	uc.mu.Lock()
	uc.retired = true
	uc.mu.Unlock()
	uc.pool.remove(uc)
	uc.c.Close()
	for _, s := range uc.snapshot() {
		s.mu.Lock()
		if s.uc == uc {
			s.broken(&uc.fl, fmt.Errorf("the target's connection broke: %w", err))
		}
		s.mu.Unlock()
	}
	uc.fl.flushAll()
}

// broken ends a stream whose target stream or connection failed: the
// client gets 502 when no response began, or a reset. Called with s.mu held.
func (s *stream) broken(fl *flusher, err error) {
	if s.closed {
		return
	}
	if !s.resBegan {
		s.failed(fl, err)
		s.close()
		return
	}
	s.x.failed = true
	s.sc.p.cfg.Log.Info("response broke off", "direction", s.sc.p.cfg.Direction,
		"target", s.sc.info.Target.String(), "err", err)
	s.resetBoth(fl, http2.ErrCodeInternal, 0, true, false)
}

// streamError resets a target stream that sent what HTTP/2 forbids.
func (uc *upConn) streamError(id uint32, code http2.ErrCode, err error) {
	uc.writeRST(&uc.fl, id, code)
	if s := uc.lookup(id); s != nil {
		s.mu.Lock()
		s.broken(&uc.fl, err)
		s.mu.Unlock()
	}
}

func (uc *upConn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		uc.processHeaders(&uc.blocks.b)
	case *http2.DataFrame:
		return uc.processData(f)
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			woken, ok := uc.addWindow(f.Increment)
			if !ok {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			wake(&uc.fl, woken)
			return nil
		}
		if s := uc.lookup(f.StreamID); s != nil {
			s.mu.Lock()
			ok := s.closed || s.req.addWindow(&uc.fl, int32(f.Increment))
			s.mu.Unlock()
			if !ok {
				uc.streamError(f.StreamID, http2.ErrCodeFlowControl, errors.New("the target's window overflowed"))
			}
		}
	case *http2.RSTStreamFrame:
		uc.processReset(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := uc.processSettings(f); err != nil {
			return err
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			uc.lock()
			uc.wfr.WritePing(true, f.Data)
			uc.unlock(&uc.fl)
		}
	case *http2.GoAwayFrame:
		uc.processGoAway(f)
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // push is off (SETTINGS_ENABLE_PUSH 0)
	}
	return nil
}

// processSettings applies the target's settings and acknowledges them.
func (uc *upConn) processSettings(f *http2.SettingsFrame) error {
	var open []*stream
	var delta int32
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			uc.mu.Lock()
			uc.maxStreams = int(min(s.Val, assumedMaxStreams))
			uc.mu.Unlock()
		case http2.SettingInitialWindowSize:
			uc.mu.Lock()
			delta += int32(s.Val) - uc.initWindow
			uc.initWindow = int32(s.Val)
			uc.mu.Unlock()
		case http2.SettingHeaderTableSize:
			uc.lock()
			uc.enc.SetMaxDynamicTableSizeLimit(s.Val)
			uc.unlock(&uc.fl)
		case http2.SettingMaxFrameSize:
			uc.lock()
			uc.maxOut = s.Val
			uc.unlock(&uc.fl)
		}
		return nil
	})
	if err != nil {
		return err
	}
	uc.lock()
	uc.wfr.WriteSettingsAck()
	uc.unlock(&uc.fl)
	if delta != 0 {
		open = uc.snapshot()
	}
	for _, s := range open {
		s.mu.Lock()
		ok := s.closed || s.uc != uc || s.req.addWindow(&uc.fl, delta)
		s.mu.Unlock()
		if !ok {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	}
	return nil
}

// processHeaders relays a response head, an informational (1xx) one, or
// the response's trailers.
func (uc *upConn) processHeaders(f *headerBlock) {
	s := uc.lookup(f.StreamID)
	if s == nil {
		return // reset by the proxy meanwhile
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.uc != uc {
		return
	}
	sc := s.sc
	if f.Truncated {
		uc.writeRST(&uc.fl, s.upID, http2.ErrCodeCancel)
		s.broken(&uc.fl, errors.New("the response's header list is larger than the proxy takes"))
		return
	}
	if s.resBegan {
		// Trailers: they end the stream and carry no pseudo-fields.
		if s.res.end || !f.StreamEnded() || len(f.PseudoFields()) > 0 {
			uc.writeRST(&uc.fl, s.upID, http2.ErrCodeProtocol)
			s.broken(&uc.fl, errors.New("malformed trailers"))
			return
		}
		s.noteGRPCStatus(f)
		s.res.trailers = slices.Clone(f.RegularFields())
		s.res.push(&uc.fl, nil, true)
		return
	}
	code, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || code < 100 || code > 999 || code == 101 || len(f.PseudoValue("status")) != 3 {
		uc.writeRST(&uc.fl, s.upID, http2.ErrCodeProtocol)
		s.broken(&uc.fl, fmt.Errorf("malformed response: :status %q", f.PseudoValue("status")))
		return
	}
	if code < 200 {
		if f.StreamEnded() {
			uc.writeRST(&uc.fl, s.upID, http2.ErrCodeProtocol)
			s.broken(&uc.fl, errors.New("malformed response: an informational head ends the stream"))
			return
		}
		s.hinted = s.hinted || code != 100
		s.noteMove()
		sc.lock()
		sc.headersLocked(s.id, false, f.Fields, keepResponseField)
		sc.unlock(&uc.fl)
		return
	}
	if s.lim != nil && s.lim.retry.Policy != nil && s.retryHead(&uc.fl, f, code) {
		return
	}
	s.resBegan = true
	if s.lim != nil {
		s.noteMove()
		s.armTimer() // the request's and the idle bounds go on
	}
	s.req.rec = nil // nothing is sent again once a response came
	s.kept.Release()
	s.x.status, s.x.after = code, time.Since(s.x.start)
	s.countRequest()
	if f.StreamEnded() {
		s.noteGRPCStatus(f) // a trailers-only response
	}
	fields := f.Fields
	if s.rule != nil && s.rule.ResponseHeaders != nil {
		e := fieldEditor{fields: fields} // the reader's: copied as it is first changed
		s.rule.ResponseHeaders.Apply(&e)
		fields = e.fields
	}
	sc.lock()
	sc.headersLocked(s.id, f.StreamEnded(), fields, keepResponseField)
	sc.unlock(&uc.fl)
	if f.StreamEnded() {
		s.res.end = true
		s.res.finished()
	}
}

// noteGRPCStatus keeps the response's grpc-status, for its success.
func (s *stream) noteGRPCStatus(f *headerBlock) {
	for _, hf := range f.RegularFields() {
		if hf.Name == "grpc-status" {
			n, err := strconv.Atoi(hf.Value)
			if err != nil || n < 0 {
				n = 2 // UNKNOWN: a status that is not a number is not OK
			}
			s.grpcStatus = n
		}
	}
}

func (uc *upConn) processData(f *http2.DataFrame) error {
	if !uc.take(f.Length) {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	uc.credit(&uc.fl, int64(f.Length))
	s := uc.lookup(f.StreamID)
	if s == nil {
		return nil // reset by the proxy meanwhile
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.uc != uc {
		return nil
	}
	if !s.resBegan || s.res.end || int32(f.Length) > s.res.recv {
		uc.writeRST(&uc.fl, s.upID, http2.ErrCodeProtocol)
		s.broken(&uc.fl, errors.New("malformed response: DATA out of place or past the window"))
		return nil
	}
	s.res.recv -= int32(f.Length)
	data := f.Data()
	s.res.credit += int32(int(f.Length) - len(data))
	s.noteMove()
	s.res.push(&uc.fl, data, f.StreamEnded())
	return nil
}

// processReset relays a target's RST_STREAM: a stream it refused before
// processing goes to another connection when its request can be sent
// again; one it cancelled reaches the client as the same reset; otherwise
// the client gets 502 before a response, the reset after.
func (uc *upConn) processReset(f *http2.RSTStreamFrame) {
	s := uc.lookup(f.StreamID)
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.uc != uc {
		return
	}
	if f.ErrCode == http2.ErrCodeRefusedStream && !s.resBegan {
		if uc.key.identity != "" {
			// A proven peer proxy that refuses a stream could not reach its
			// application, or takes no more streams: another endpoint.
			s.elsewhere(&uc.fl)
			return
		}
		if s.detach() {
			return
		}
	}
	if !s.resBegan && f.ErrCode == http2.ErrCodeCancel {
		// The target gave the stream up, as a gRPC server does once the
		// deadline its client sent has passed: the client hears it as the
		// target said it, and a gRPC client past its deadline reads that
		// reset as DEADLINE_EXCEEDED, where a 502 from the proxy would
		// read as UNAVAILABLE.
		s.resetBoth(&uc.fl, f.ErrCode, 0, true, false)
		return
	}
	if !s.resBegan {
		s.failed(&uc.fl, fmt.Errorf("the target reset the stream: %v", f.ErrCode))
		s.close()
		return
	}
	if !s.res.done {
		s.x.failed = true
	}
	s.resetBoth(&uc.fl, f.ErrCode, 0, true, false)
}

// processGoAway retires the connection; the streams it did not process
// (above its last stream ID) go to another connection when they can, or
// back to the client as REFUSED_STREAM, which clients retry safely.
func (uc *upConn) processGoAway(f *http2.GoAwayFrame) {
	uc.mu.Lock()
	uc.retired, uc.lastID = true, f.LastStreamID
	if uc.reserved == 0 {
		go uc.c.Close()
	}
	uc.mu.Unlock()
	uc.pool.remove(uc)
	for _, s := range uc.snapshot() {
		if s.upID <= f.LastStreamID {
			continue
		}
		s.mu.Lock()
		if !s.closed && s.uc == uc && !s.detach() {
			s.resetBoth(&uc.fl, http2.ErrCodeRefusedStream, 0, true, false)
		}
		s.mu.Unlock()
	}
}
