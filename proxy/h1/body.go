package h1

import (
	"bufio"
	"errors"
	"io"
	"sync"
)

// framing is how a message's body ends (RFC 9112 §6.3).
type framing int

const (
	noBody     framing = iota
	lengthBody         // Content-Length bytes
	chunkedBody
	closeBody // until the connection closes: responses only
)

// bufSize is the copy buffer of a body: big enough that a stream moves in
// few system calls, small enough that thousands of them in flight stay
// cheap. Buffers are pooled: a request allocates none.
const bufSize = 16 << 10

var bufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

func getBuf() *[]byte  { return bufs.Get().(*[]byte) }
func putBuf(b *[]byte) { bufs.Put(b) }

// errBadChunk is a chunked body the proxy cannot read the same way its peer
// would: the stream is cut rather than passed on.
var errBadChunk = errors.New("malformed chunked encoding")

// copyBody copies one body framed as f (n bytes for lengthBody) from src to
// dst, flushing dst whenever src has nothing more buffered, so that a
// stream (server-sent events, a long poll's answer) reaches the reader as
// it comes. It returns the body bytes copied.
func copyBody(dst *bufio.Writer, src *bufio.Reader, f framing, n int64) (int64, error) {
	switch f {
	case lengthBody:
		return copyN(dst, src, n)
	case chunkedBody:
		return copyChunked(dst, src, false)
	case closeBody:
		return copyN(dst, src, -1)
	}
	return 0, nil
}

// copyN copies n bytes, or everything up to EOF when n < 0.
func copyN(dst *bufio.Writer, src *bufio.Reader, n int64) (int64, error) {
	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	var done int64
	for n < 0 || done < n {
		p := buf
		if n >= 0 && int64(len(p)) > n-done {
			p = p[:n-done]
		}
		m, err := src.Read(p)
		if m > 0 {
			if _, werr := dst.Write(p[:m]); werr != nil {
				return done, &writeError{werr}
			}
			done += int64(m)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if n < 0 {
					return done, dst.Flush()
				}
				return done, io.ErrUnexpectedEOF
			}
			return done, err
		}
		if src.Buffered() == 0 && (n < 0 || done < n) {
			if err := dst.Flush(); err != nil {
				return done, &writeError{err}
			}
		}
	}
	return done, nil
}

// copyChunked re-frames a chunked body chunk by chunk: sizes checked and
// written in plain hex, chunk extensions dropped (as Go's and most
// servers' readers do), the trailer section passed on field by field.
// With plain it writes the data alone, for an HTTP/1.0 client, whose
// connection's end ends the body; trailers are then read and dropped.
func copyChunked(dst *bufio.Writer, src *bufio.Reader, plain bool) (int64, error) {
	var done int64
	var line [20]byte
	for {
		if src.Buffered() == 0 {
			// The next chunk may be a while: what came so far goes now.
			if err := dst.Flush(); err != nil {
				return done, &writeError{err}
			}
		}
		size, err := readChunkSize(src)
		if err != nil {
			return done, err
		}
		if !plain {
			b := appendHex(line[:0], size)
			b = append(b, '\r', '\n')
			if _, err := dst.Write(b); err != nil {
				return done, &writeError{err}
			}
		}
		if size == 0 {
			if plain {
				return done, copyTrailers(nil, src)
			}
			return done, copyTrailers(dst, src)
		}
		m, err := copyN(dst, src, size)
		done += m
		if err != nil {
			return done, err
		}
		if err := expectCRLF(src); err != nil {
			return done, err
		}
		if plain {
			continue
		}
		if _, err := dst.WriteString("\r\n"); err != nil {
			return done, &writeError{err}
		}
	}
}

// readChunkSize reads a chunk-size line: 1 to 16 hex digits, then
// optionally ";" and extensions, then CRLF. Whitespace before the ";"
// (BWS) is accepted, nothing else.
func readChunkSize(src *bufio.Reader) (int64, error) {
	line, err := src.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, io.ErrUnexpectedEOF
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			return 0, errBadChunk
		}
		return 0, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return 0, errBadChunk
	}
	line = line[:len(line)-2]
	var size int64
	i := 0
	for ; i < len(line) && i <= 16; i++ {
		d := unhex(line[i])
		if d < 0 {
			break
		}
		size = size<<4 | int64(d)
	}
	if i == 0 || i > 15 {
		return 0, errBadChunk // no digits, or more than a sane body holds
	}
	rest := line[i:]
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	if len(rest) > 0 && rest[0] != ';' {
		return 0, errBadChunk
	}
	for _, c := range rest {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return 0, errBadChunk
		}
	}
	return size, nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func appendHex(b []byte, n int64) []byte {
	const digits = "0123456789abcdef"
	if n == 0 {
		return append(b, '0')
	}
	var tmp [16]byte
	i := len(tmp)
	for n > 0 {
		i--
		tmp[i] = digits[n&0xf]
		n >>= 4
	}
	return append(b, tmp[i:]...)
}

func expectCRLF(src *bufio.Reader) error {
	b, err := src.Peek(2)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if b[0] != '\r' || b[1] != '\n' {
		return errBadChunk
	}
	src.Discard(2)
	return nil
}

// maxTrailerBytes bounds a chunked body's trailer section.
const maxTrailerBytes = 16 << 10

// copyTrailers passes on the trailer section after the last chunk, each
// field checked like a header field, and the empty line that ends it; a
// nil dst drops them.
func copyTrailers(dst *bufio.Writer, src *bufio.Reader) error {
	var t head // small, rare: trailers are mostly gRPC's, over HTTP/2
	total := 0
	for {
		line, err := readLine(src, &t, maxTrailerBytes-total)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			var pe *protoError
			if errors.As(err, &pe) {
				return errBadChunk
			}
			return err
		}
		total += len(line) + 2
		if len(line) > 0 {
			off := len(t.buf)
			t.buf = append(t.buf, line...)
			if _, err := parseField(t.buf, span{off, len(t.buf)}); err != nil {
				return errBadChunk
			}
		}
		if dst == nil {
			if len(line) == 0 {
				return nil
			}
			continue
		}
		if _, err := dst.Write(line); err != nil {
			return &writeError{err}
		}
		if _, err := dst.WriteString("\r\n"); err != nil {
			return &writeError{err}
		}
		if len(line) == 0 {
			return nil // the caller flushes, once it is done with the source
		}
	}
}

// writeError is a failure to write to the destination of a copy, told
// apart from a failure to read its source: which side broke decides who
// is told and what is counted.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }
