package h2

import (
	"bufio"
	"bytes"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Flow-control windows the proxy gives its peers (RFC 9113 §5.2). A
// stream's window bounds what the proxy holds for it when the receiving
// side is slower than the sending one: DATA is credited back to the
// stream's sender only once it has been written onward, so a stream never
// queues more than streamWindow. The connection's window is credited as
// DATA arrives, whether it is written onward or queued, so that one slow
// stream never stalls the others of its connection; what a connection
// holds is then bounded by its streams' windows.
const (
	streamWindow = 256 << 10 // moves a 100 MB stream at loopback speed
	connWindow   = 1 << 20
	// defaultWindow is the window every peer starts with (RFC 9113 §6.9.2).
	defaultWindow = 65535
	// defaultMaxFrame is the largest frame a peer takes until it says
	// otherwise (SETTINGS_MAX_FRAME_SIZE), and the largest the proxy reads.
	defaultMaxFrame = 16384
	// maxResponseHeaderList bounds a response's header block, as h1 bounds
	// a response head: generous, for cookies, yet a bound.
	maxResponseHeaderList = 1 << 20
)

// peer is one HTTP/2 connection, to a client or to a target: its frame
// reader, used by the connection's own reader goroutine only, and its
// writer, used by whichever goroutine has a frame for it.
//
// Writes go under wmu into bw, with header blocks encoded under the same
// lock (HPACK state follows the order on the wire). A writer flushes when
// nobody else waits for the lock, so that the frames of many streams share
// a syscall; a reader goroutine leaves its flushes to its flusher, which
// flushes before the goroutine blocks in a read.
type peer struct {
	c      net.Conn
	br     *bufio.Reader
	fr     *http2.Framer
	blocks *blockReader // decodes the header blocks fr reads

	waiting atomic.Int32 // goroutines waiting for wmu
	wmu     sync.Mutex
	bw      *bufio.Writer  // guarded by wmu
	enc     *hpack.Encoder // guarded by wmu
	hbuf    bytes.Buffer   // the header block being encoded; guarded by wmu
	wfr     *http2.Framer  // writes into bw; guarded by wmu
	maxOut  uint32         // the peer's SETTINGS_MAX_FRAME_SIZE; guarded by wmu
	// werr is the first write failure; guarded by wmu. The connection is
	// closed then, so that its reader ends and takes its streams down.
	werr error

	flowMu  sync.Mutex
	window  int64   // connection-level send window; guarded by flowMu
	blocked []*half // halves waiting for window; guarded by flowMu

	// writeTimeout bounds each write: a peer that stops reading its
	// socket while it lets the proxy send (its window is open) would
	// otherwise hold the writer, and with it the connection whose reader
	// forwards to it, shared by other clients' streams. wdeadline is the
	// write deadline last set; guarded by wmu.
	writeTimeout time.Duration
	wdeadline    time.Time

	// recv is what the peer may still send on the connection before the
	// proxy credits it, and unacked the credit not yet sent. Reader only.
	recv    int64
	unacked int64
}

func newPeer(c net.Conn, maxHeaderList int, writeTimeout time.Duration) *peer {
	p := &peer{c: c, maxOut: defaultMaxFrame, window: defaultWindow, recv: defaultWindow, writeTimeout: writeTimeout}
	p.br = bufio.NewReaderSize(c, 16<<10)
	p.bw = bufio.NewWriterSize(c, 32<<10)
	p.fr = http2.NewFramer(nil, p.br)
	p.fr.SetReuseFrames()
	p.fr.SetMaxReadFrameSize(defaultMaxFrame) // what the peer assumes, as the proxy says no other
	p.blocks = newBlockReader(uint32(maxHeaderList))
	p.wfr = http2.NewFramer(p.bw, nil)
	p.enc = hpack.NewEncoder(&p.hbuf)
	return p
}

// readFrame reads the next frame; a HEADERS frame comes with its header
// block decoded, CONTINUATIONs and all, in p.blocks.b. Reader only.
func (p *peer) readFrame() (http2.Frame, error) {
	f, err := p.fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	if h, ok := f.(*http2.HeadersFrame); ok {
		if _, err := p.blocks.read(p.fr, h); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// lock takes the write lock; unlock releases it, flushing as the type
// says. The write deadline moves on with the writes, a few times per
// writeTimeout rather than per write (each move is a timer update).
func (p *peer) lock() {
	p.waiting.Add(1)
	p.wmu.Lock()
	p.waiting.Add(-1)
	if now := time.Now(); p.wdeadline.Sub(now) < p.writeTimeout/2 {
		p.wdeadline = now.Add(p.writeTimeout)
		p.c.SetWriteDeadline(p.wdeadline)
	}
}

func (p *peer) unlock(fl *flusher) {
	if p.werr == nil && p.bw.Buffered() > 0 {
		switch {
		case fl != nil:
			fl.add(p)
		case p.waiting.Load() == 0:
			p.noteWrite(p.bw.Flush())
		}
	}
	p.wmu.Unlock()
}

func (p *peer) flush() {
	p.lock()
	if p.werr == nil {
		p.noteWrite(p.bw.Flush())
	}
	p.wmu.Unlock()
}

// noteWrite records a write failure and closes the connection.
func (p *peer) noteWrite(err error) {
	if err != nil && p.werr == nil {
		p.werr = err
		p.c.Close()
	}
}

// headersLocked encodes fields as one header block and writes it on
// stream id, in CONTINUATION frames past the peer's frame size.
func (p *peer) headersLocked(id uint32, end bool, fields []hpack.HeaderField, keep func(name string) bool) {
	p.hbuf.Reset()
	for _, f := range fields {
		if keep == nil || keep(f.Name) {
			p.enc.WriteField(f)
		}
	}
	p.blockLocked(id, end)
}

// blockLocked writes the header block in hbuf on stream id.
func (p *peer) blockLocked(id uint32, end bool) {
	block := p.hbuf.Bytes()
	max := int(p.maxOut)
	first := block
	if len(first) > max {
		first = first[:max]
	}
	block = block[len(first):]
	err := p.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0})
	for len(block) > 0 && err == nil {
		frag := block
		if len(frag) > max {
			frag = frag[:max]
		}
		block = block[len(frag):]
		err = p.wfr.WriteContinuation(id, len(block) == 0, frag)
	}
	p.noteWrite(err)
}

// dataLocked writes data on stream id in frames the peer takes.
func (p *peer) dataLocked(id uint32, data []byte, end bool) {
	max := int(p.maxOut)
	for {
		n := min(len(data), max)
		last := n == len(data)
		if err := p.wfr.WriteData(id, end && last, data[:n]); err != nil {
			p.noteWrite(err)
			return
		}
		data = data[n:]
		if last {
			return
		}
	}
}

func (p *peer) writeRST(fl *flusher, id uint32, code http2.ErrCode) {
	p.lock()
	p.noteWrite(p.wfr.WriteRSTStream(id, code))
	p.unlock(fl)
}

func (p *peer) writeWindowUpdate(fl *flusher, id uint32, n uint32) {
	p.lock()
	p.noteWrite(p.wfr.WriteWindowUpdate(id, n))
	p.unlock(fl)
}

// credit gives the peer n more bytes of connection window, once enough
// has gathered to be worth a frame. Reader only.
func (p *peer) credit(fl *flusher, n int64) {
	p.unacked += n
	if p.unacked >= connWindow/4 {
		p.recv += p.unacked
		p.writeWindowUpdate(fl, 0, uint32(p.unacked))
		p.unacked = 0
	}
}

// take accounts for n bytes of DATA received on the connection; false
// means the peer sent past its window. Reader only.
func (p *peer) take(n uint32) bool {
	if int64(n) > p.recv {
		return false
	}
	p.recv -= int64(n)
	return true
}

// reserve takes up to want bytes of the connection's send window for h.
// When none is left, h waits among the blocked until a WINDOW_UPDATE.
func (p *peer) reserve(want int32, h *half) int32 {
	p.flowMu.Lock()
	defer p.flowMu.Unlock()
	n := int32(min(int64(want), p.window))
	if n <= 0 {
		if !h.blocked {
			h.blocked = true
			p.blocked = append(p.blocked, h)
		}
		return 0
	}
	p.window -= int64(n)
	return n
}

// unblock takes h off the halves waiting for the connection's window: it
// leaves for another connection.
func (p *peer) unblock(h *half) {
	p.flowMu.Lock()
	defer p.flowMu.Unlock()
	if h.blocked {
		p.blocked = slices.DeleteFunc(p.blocked, func(b *half) bool { return b == h })
		h.blocked = false
	}
}

// addWindow adds a connection-level WINDOW_UPDATE's increment and returns
// the halves that waited for it; false means the window overflowed.
func (p *peer) addWindow(n uint32) ([]*half, bool) {
	p.flowMu.Lock()
	defer p.flowMu.Unlock()
	if p.window+int64(n) > math.MaxInt32 {
		return nil, false
	}
	p.window += int64(n)
	woken := p.blocked
	p.blocked = nil
	for _, h := range woken {
		h.blocked = false
	}
	return woken, true
}

// flusher is a reader goroutine's list of connections it wrote to
// without flushing: it flushes them before it blocks in a read, so that
// all the frames it forwards from one read of its connection go out
// together.
type flusher struct {
	dirty []*peer
}

func (f *flusher) add(p *peer) {
	for _, d := range f.dirty {
		if d == p {
			return
		}
	}
	f.dirty = append(f.dirty, p)
}

func (f *flusher) flushAll() {
	for i, p := range f.dirty {
		p.flush()
		f.dirty[i] = nil
	}
	f.dirty = f.dirty[:0]
}

// frameBuffered reports whether br holds a whole frame, which the next
// read returns without blocking.
func frameBuffered(br *bufio.Reader) bool {
	n := br.Buffered()
	if n < 9 {
		return false
	}
	h, _ := br.Peek(9)
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	return n >= 9+length
}
