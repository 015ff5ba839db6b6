package h2

import (
	"context"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/route"
)

// stream is one client stream and, once it has one, the target stream it
// is forwarded on. mu guards everything but what the comments say the
// client's reader owns; it may be held while taking a connection's write
// lock, flow lock or stream table lock, never the other way round.
type stream struct {
	sc *serverConn
	id uint32 // on the client's connection

	mu   sync.Mutex
	uc   *upConn // nil until the stream is sent on a target connection
	upID uint32  // its ID there

	req half // client to target
	res half // target to client

	// The request as the client sent it; set by the client's reader before
	// the stream is shared, read-only after, but for fields, which its
	// route edits (route.go) under mu before the request is sent. fields
	// is the stream's own copy.
	fields    []hpack.HeaderField
	method    string
	authority string
	path      string // :path, with its query
	grpc      bool
	declLen   int64 // content-length, -1 for none; gotLen counts DATA (reader only)
	gotLen    int64

	origH1     bool               // carried from HTTP/1.1 by an older proxy: goes on as HTTP/1.1 (origproto.go)
	resBegan   bool               // a final response head went to the client
	grpcStatus int                // from the response, -1 for none
	closed     bool               // over both ways; removed from its connections
	hinted     bool               // an informational head other than 100 Continue went to the client: no retry may contradict it
	rule       *route.Rule        // the route rule the request matched; nil for none
	backend    string             // the authority of the rule's backend it goes to; "" for its target
	cancel     context.CancelFunc // ends the HTTP/1.1 path's request; nil on the others
	// kept is the request body forwarded to a proven peer proxy, or under
	// a retry policy, for a resend when it refuses the stream (resend.go)
	// or a retry (retry.go).
	kept httpproxy.Replay

	// lim is what bounds the request (retry.go): timeouts, retries, a
	// fault's delay; nil for a request that has none, as most have.
	lim *limits

	x exchange
}

// half is one direction of a stream: the frames its source sent, on their
// way to its destination, and the flow control of both sides.
type half struct {
	s     *stream
	src   *peer
	srcID uint32
	dst   *peer // nil while the request waits for its target connection
	dstID uint32

	window int32 // what dst lets the proxy send on dstID

	q    []byte // DATA waiting for window, from qoff on
	qoff int
	qbuf *[]byte // q's pooled buffer, if it has one

	end      bool                // the source ended its side
	trailers []hpack.HeaderField // to follow the queue, with END_STREAM
	done     bool                // END_STREAM went to dst, or the half was abandoned
	recv     int32               // what src may still send on srcID
	credit   int32               // written onward, not yet credited to src
	blocked  bool                // waits for dst's connection window; guarded by dst.flowMu
	keep     func(string) bool   // which trailer fields go on
	sentData bool                // DATA or trailers went to dst: the request cannot be sent again, unless rec holds it
	// rec, while set, keeps a copy of the DATA sent (resend.go); resent
	// is how much of the queue's head was sent before, and credited to
	// the source then.
	rec    *httpproxy.Replay
	resent int
	// moved counts the DATA bytes the source sent, for the access log.
	moved int64
	// cond, on the HTTP/1.1 path only, wakes its goroutine when the queue
	// changes; nil on the others.
	cond *sync.Cond
}

// creditBatch is how much a stream gathers before crediting its sender
// with a WINDOW_UPDATE: below the 65535 a sender has before it learns the
// proxy's larger window, so that credit always flows.
const creditBatch = 32 << 10

var queueBufs = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

func (h *half) queued() int { return len(h.q) - h.qoff }

// grant is how much of want may go to dst now, its stream window and
// connection window both taken.
func (h *half) grant(want int) int {
	n := int32(min(want, int(h.window)))
	if n <= 0 {
		return 0
	}
	return int(h.dst.reserve(n, h))
}

// push forwards DATA the source sent, or queues what dst has no window
// for. Called with s.mu held.
func (h *half) push(fl *flusher, data []byte, end bool) {
	if h.done {
		return
	}
	h.moved += int64(len(data))
	if h.dst != nil && h.queued() == 0 {
		for len(data) > 0 || end {
			n := 0
			if len(data) > 0 {
				if n = h.grant(len(data)); n == 0 {
					break
				}
			}
			last := end && n == len(data) && h.trailers == nil
			if n == 0 && !last {
				break // only trailers to send: drain sends them
			}
			h.dst.lock()
			h.dst.dataLocked(h.dstID, data[:n], last)
			h.dst.unlock(fl)
			h.sentData = h.sentData || n > 0
			h.keepSent(data[:n])
			h.window -= int32(n)
			h.credit += h.creditFor(n)
			data = data[n:]
			if last {
				h.end = true
				h.finished()
				return
			}
			if len(data) == 0 {
				break
			}
		}
	}
	if len(data) > 0 {
		if h.qbuf == nil && h.queued() == 0 {
			h.qbuf = queueBufs.Get().(*[]byte)
			h.q, h.qoff = (*h.qbuf)[:0], 0
		}
		h.q = append(h.q, data...)
	}
	if end {
		h.end = true
	}
	h.drain(fl)
	if h.cond != nil {
		h.cond.Broadcast()
	}
}

// drain sends what waits in the queue as far as the windows let it, and
// the end of the half once the queue is empty. Called with s.mu held.
func (h *half) drain(fl *flusher) {
	for h.dst != nil && !h.done && h.queued() > 0 {
		n := h.grant(h.queued())
		if n == 0 {
			break
		}
		last := h.end && n == h.queued() && h.trailers == nil
		h.dst.lock()
		h.dst.dataLocked(h.dstID, h.q[h.qoff:h.qoff+n], last)
		h.dst.unlock(fl)
		h.sentData = true
		h.keepSent(h.q[h.qoff : h.qoff+n])
		h.qoff += n
		h.window -= int32(n)
		h.credit += h.creditFor(n)
		if last {
			h.releaseQueue()
			h.finished()
			return
		}
	}
	if h.cond != nil {
		h.cond.Broadcast()
	}
	if h.queued() == 0 {
		h.releaseQueue()
		if h.dst != nil && h.end && !h.done {
			h.dst.lock()
			if h.trailers != nil {
				h.dst.headersLocked(h.dstID, true, h.trailers, h.keep)
				h.sentData = true
			} else {
				h.dst.dataLocked(h.dstID, nil, true)
			}
			h.dst.unlock(fl)
			h.finished()
			return
		}
	}
	h.giveCredit(fl)
}

func (h *half) releaseQueue() {
	if h.qbuf != nil {
		*h.qbuf = (*h.qbuf)[:0]
		if cap(*h.qbuf) == 32<<10 {
			queueBufs.Put(h.qbuf)
		}
		h.qbuf = nil
	}
	h.q, h.qoff = nil, 0
}

// finished marks END_STREAM sent; the stream closes once both halves are.
// The request's end starts its response timeout.
func (h *half) finished() {
	h.done = true
	if h == &h.s.req {
		h.s.requestSent()
	}
	h.s.closeIfDone()
}

// giveCredit returns to the source what went onward, in batches.
func (h *half) giveCredit(fl *flusher) {
	if h.credit < creditBatch || h.end || h.s.closed || h.src == nil {
		return // nil src: the HTTP/1.1 path, whose source is a body reader
	}
	n := h.credit
	h.credit = 0
	h.recv += n
	h.src.writeWindowUpdate(fl, h.srcID, uint32(n))
}

// abandon drops what the half still holds: the stream was reset.
func (h *half) abandon() {
	h.releaseQueue()
	h.trailers = nil
	h.done = true
}

// addWindow applies a stream WINDOW_UPDATE (or a change of the initial
// window) from dst; false means the window overflowed. Called with s.mu held.
func (h *half) addWindow(fl *flusher, n int32) bool {
	if int64(h.window)+int64(n) > 1<<31-1 {
		return false
	}
	h.window += n
	if h.window > 0 {
		h.drain(fl)
	}
	return true
}

// closeIfDone closes the stream once both halves are done. Called with
// s.mu held.
func (s *stream) closeIfDone() {
	if !s.closed && s.req.done && s.res.done {
		s.close()
	}
}

// close ends the stream on both connections and records how it went.
// Called with s.mu held.
func (s *stream) close() {
	if s.closed {
		return
	}
	s.closed = true
	if l := s.lim; l != nil {
		l.stop()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.req.rec = nil
	s.kept.Release()
	if s.req.cond != nil {
		s.req.cond.Broadcast()
	}
	s.req.abandon()
	s.res.abandon()
	if s.uc != nil {
		s.uc.forget(s)
	}
	s.sc.forget(s)
	s.x.finish(s)
}

// resetBoth ends the stream with RST_STREAM to the client (clientCode)
// and to the target (upCode) where each still has it open. Called with
// s.mu held.
func (s *stream) resetBoth(fl *flusher, clientCode, upCode http2.ErrCode, toClient, toTarget bool) {
	if s.closed {
		return
	}
	if toTarget && s.uc != nil && !(s.req.done && s.res.done) {
		s.uc.writeRST(fl, s.upID, upCode)
	}
	if toClient {
		s.sc.writeRST(fl, s.id, clientCode)
	}
	s.close()
}
