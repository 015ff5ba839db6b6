// Package detect tells which protocol a client speaks from the first bytes
// it sends, without consuming them, so the proxy can pick an HTTP/1, HTTP/2
// or opaque path and still forward every byte.
package detect

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"time"
)

// Protocol is what a client speaks.
type Protocol uint8

// Protocols the proxy tells apart.
const (
	Opaque Protocol = iota // anything else: forwarded as TCP
	HTTP1                  // HTTP/1.0 or HTTP/1.1 request line
	HTTP2                  // HTTP/2 with prior knowledge (h2c)
	TLS                    // a TLS ClientHello: application TLS, passed through
)

func (p Protocol) String() string {
	switch p {
	case HTTP1:
		return "http/1"
	case HTTP2:
		return "h2"
	case TLS:
		return "tls"
	}
	return "opaque"
}

// PeekLimit is the most Peek buffers before it decides. A request line
// longer than this still counts as HTTP/1 once its method is known; the
// HTTP server then answers 414 or 431 itself.
const PeekLimit = 16 << 10

// preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// knownMethods are the RFC 9110 §9 methods plus PATCH (RFC 5789). Another
// token is accepted as a method only with a complete request line.
var knownMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// Classify decides the protocol from the first bytes a client sent. done
// is false when b is a prefix of more than one possibility and more bytes
// are needed. It never panics, whatever b holds.
func Classify(b []byte) (p Protocol, done bool) {
	if len(b) == 0 {
		return Opaque, false
	}
	if len(b) < len(preface) && bytes.HasPrefix([]byte(preface), b) {
		return Opaque, false // maybe h2, maybe "PRI" as an HTTP/1 method
	}
	if bytes.HasPrefix(b, []byte(preface)) {
		return HTTP2, true
	}
	if b[0] == 0x16 {
		return classifyTLS(b)
	}
	return classifyHTTP1(b)
}

// classifyTLS recognises a TLS record header carrying a handshake (type
// 22, legacy version 3.x) whose first message is a ClientHello (type 1):
// RFC 8446 §5.1 and §4.
func classifyTLS(b []byte) (Protocol, bool) {
	if len(b) < 6 {
		if len(b) >= 2 && b[1] != 0x03 {
			return Opaque, true
		}
		if len(b) >= 3 && b[2] > 0x04 {
			return Opaque, true
		}
		return Opaque, false
	}
	if b[1] == 0x03 && b[2] <= 0x04 && b[5] == 0x01 {
		return TLS, true
	}
	return Opaque, true
}

// PartialHello reports whether b is the start of what may be a TLS
// ClientHello, too short yet for Classify to decide: a client that sent
// it speaks first and will wait for the server's answer, so waiting for
// the rest stalls no protocol where the server speaks first.
func PartialHello(b []byte) bool {
	_, done := Classify(b)
	return !done && len(b) > 0 && b[0] == 0x16
}

// classifyHTTP1 recognises a request line: method SP request-target SP
// HTTP-version CRLF (RFC 9112 §3).
func classifyHTTP1(b []byte) (Protocol, bool) {
	sp := bytes.IndexByte(b, ' ')
	if sp < 0 {
		// Still reading the method: it must stay a token, and no method
		// we accept is longer than 20 bytes.
		if len(b) > 20 || !isToken(b) {
			return Opaque, true
		}
		return Opaque, false
	}
	method := b[:sp]
	if len(method) == 0 || len(method) > 20 || !isToken(method) {
		return Opaque, true
	}
	eol := bytes.Index(b, []byte("\r\n"))
	line := b
	if eol >= 0 {
		line = b[:eol]
	}
	// Checked in the complete line too, so the verdict does not depend on
	// whether the CRLF arrived in the same read.
	if bytes.IndexByte(line, '\n') >= 0 || bytes.IndexByte(line[sp+1:], 0) >= 0 {
		return Opaque, true // a bare LF or a NUL: not a request line we forward as HTTP
	}
	if eol < 0 {
		if len(b) >= PeekLimit && isKnownMethod(method) {
			return HTTP1, true // a very long target; the server answers 414
		}
		return Opaque, false
	}
	last := bytes.LastIndexByte(line, ' ')
	if last <= sp {
		return Opaque, true // no version: HTTP/0.9 or not HTTP
	}
	version := line[last+1:]
	if len(version) == 8 && bytes.HasPrefix(version, []byte("HTTP/1.")) && version[7] >= '0' && version[7] <= '9' {
		return HTTP1, true
	}
	return Opaque, true
}

// isToken reports whether b is an RFC 9110 §5.6.2 token.
func isToken(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return len(b) > 0
}

func isKnownMethod(m []byte) bool {
	for _, k := range knownMethods {
		if string(m) == k {
			return true
		}
	}
	return false
}

// Result says what was detected and why. Reason is a metric label value:
// "preface", "request-line", "client-hello", "no-match", "timeout", "eof",
// "peek-limit", and (set by callers that skip Peek) "opaque-port" and
// "remembered-opaque".
type Result struct {
	Protocol Protocol
	Reason   string
}

// ErrClosed is returned by Peek when the client closed (or reset) the
// connection before sending a byte: there is nothing to forward.
var ErrClosed = errors.New("detect: client closed the connection before sending anything")

// Peek reads from conn until Classify decides, until timeout passes with
// the client silent or undecided, or until the client stops sending. The
// returned Conn replays every byte read. A silent client (a protocol where
// the server speaks first) gives Opaque with reason "timeout" and no
// error. Cancelling ctx ends the wait like a timeout would, but with
// ctx's error. Given a Conn an earlier Peek returned, Peek goes on from
// the bytes that one read, which it classifies again with the rest.
func Peek(ctx context.Context, conn net.Conn, timeout time.Duration) (Result, *Conn, error) {
	return peek(ctx, conn, time.Now().Add(timeout), peekBuffer)
}

// peekBuffer is the buffer Peek starts with, grown when a client sends more
// before Classify decides.
const peekBuffer = 1 << 10

// peek is Peek until deadline, the zero deadline waiting as long as the
// client takes, with a buffer of size bytes to start with.
func peek(ctx context.Context, conn net.Conn, deadline time.Time, size int) (Result, *Conn, error) {
	buf := make([]byte, 0, size)
	if pc, ok := conn.(*Conn); ok {
		buf, conn = append(buf, pc.head...), pc.Conn
		if p, done := Classify(buf); done {
			return Result{p, reasonFor(p)}, newConn(conn, buf), nil
		}
		if len(buf) >= PeekLimit {
			return Result{Opaque, "peek-limit"}, newConn(conn, buf), nil
		}
	}
	conn.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer func() {
		// Stop the cancel hook before clearing the deadline, so a
		// cancellation racing a successful Peek cannot leave the returned
		// Conn with a deadline in the past.
		stop()
		conn.SetReadDeadline(time.Time{})
	}()
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, max(len(buf), peekBuffer)) // PeekLimit bounds it
		}
		n, err := conn.Read(buf[len(buf):min(cap(buf), PeekLimit)])
		buf = buf[:len(buf)+n]
		if p, done := Classify(buf); done {
			return Result{p, reasonFor(p)}, newConn(conn, buf), nil
		}
		if len(buf) >= PeekLimit {
			return Result{Opaque, "peek-limit"}, newConn(conn, buf), nil
		}
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return Result{}, nil, ctx.Err()
		}
		var reason string
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			reason = "timeout"
		case len(buf) == 0:
			return Result{}, nil, ErrClosed
		case errors.Is(err, io.EOF):
			reason = "eof"
		default:
			return Result{}, nil, err
		}
		return Result{Opaque, reason}, newConn(conn, buf), nil
	}
}

func reasonFor(p Protocol) string {
	switch p {
	case HTTP1:
		return "request-line"
	case HTTP2:
		return "preface"
	case TLS:
		return "client-hello"
	}
	return "no-match"
}

// Conn is a connection whose first bytes were read by Peek; reading it
// returns them again before reading further from the connection. It is as
// safe for concurrent use as the connection it wraps, except that Read
// must not be called concurrently with itself.
type Conn struct {
	net.Conn
	head []byte
}

func newConn(c net.Conn, head []byte) *Conn { return &Conn{Conn: c, head: head} }

func (c *Conn) Read(b []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(b, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// Buffered returns the peeked bytes Read has not returned yet.
func (c *Conn) Buffered() []byte { return c.head }

// Raw returns the underlying connection, so a forwarder that first writes
// Buffered can copy the rest with splice(2).
func (c *Conn) Raw() net.Conn { return c.Conn }

// CloseWrite half-closes the underlying connection when it supports that.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
