package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// A head is one message head as it came off the wire: the start line and
// the header fields, name case and order kept, so that what the proxy
// writes on is what it read but for the hop-by-hop fields it removes.
// Its slices point into buf, which is reused from message to message.
type head struct {
	buf    []byte
	start  span // the start line, without its CRLF
	fields []field

	// Request heads.
	method, target span
	// Response heads.
	status int
	// minor is the HTTP/1 minor version: 0 or 1.
	minor int
}

// span is a part of head.buf.
type span struct{ off, end int }

func (h *head) get(s span) []byte { return h.buf[s.off:s.end] }

// field is one header field line: its name, its value with the optional
// whitespace around it trimmed, and the whole line as read (without CRLF).
type field struct {
	name, value, line span
	// drop marks a hop-by-hop field that is not forwarded.
	drop bool
}

// reset empties h for the next message, keeping its memory.
func (h *head) reset() {
	h.buf = h.buf[:0]
	h.fields = h.fields[:0]
	h.start, h.method, h.target = span{}, span{}, span{}
	h.status, h.minor = 0, 0
}

// A protoError is a message the proxy refuses to forward: the request or
// response breaks HTTP/1.1's syntax or framing rules (RFC 9112) in a way
// that two parsers could read differently, the ground of request
// smuggling. status is the answer for a request (400, 431, 501, 505).
type protoError struct {
	status int
	msg    string
}

func (e *protoError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &protoError{status: 400, msg: fmt.Sprintf(format, args...)}
}

// errHeadTooLarge is a head past the size limit: 431 for a request.
var errHeadTooLarge = &protoError{status: 431, msg: "message head too large"}

// readHead reads one message head from r into h: up to max bytes of lines,
// each ending in CRLF, up to the empty line. A bare LF, a line folded onto
// the previous one (obs-fold), a field name with whitespace or an invalid
// byte, and a value with a control character are all refused: RFC 9112
// lets a server reject them, and reading them some other way than the
// next hop would is how requests get smuggled. io.EOF means the peer
// closed before the head's first byte: a clean end between messages.
func readHead(r *bufio.Reader, h *head, max int) error {
	h.reset()
	haveStart := false
	for {
		line, err := readLine(r, h, max)
		if err != nil {
			if errors.Is(err, io.EOF) && (haveStart || len(line) > 0) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		off := len(h.buf)
		h.buf = append(h.buf, line...)
		s := span{off, off + len(line)}
		switch {
		case !haveStart:
			if len(line) == 0 {
				// RFC 9112 §2.2 lets a server skip it; net/http refuses it,
				// and what the proxy forwards must read the same to it.
				return badRequest("empty line before the start line")
			}
			h.start, haveStart = s, true
		case len(line) == 0:
			return nil
		default:
			f, err := parseField(h.buf, s)
			if err != nil {
				return err
			}
			h.fields = append(h.fields, f)
		}
	}
}

// readLine returns the next line of r without its CRLF, refusing a bare
// LF and counting it against what is left of max. The line is valid until
// the next read from r.
func readLine(r *bufio.Reader, h *head, max int) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// Longer than the reader's buffer: gather it after the head so far.
		off := len(h.buf)
		h.buf = append(h.buf, line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(h.buf) <= max {
			line, err = r.ReadSlice('\n')
			h.buf = append(h.buf, line...)
		}
		line = append(line[:0:0], h.buf[off:]...)
		h.buf = h.buf[:off]
	}
	if len(h.buf)+len(line) > max {
		return nil, errHeadTooLarge
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			return line, io.EOF
		}
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, badRequest("line not ending in CRLF")
	}
	return line[:len(line)-2], nil
}

// parseField checks one field line, buf[s.off:s.end], and splits it.
func parseField(buf []byte, s span) (field, error) {
	line := buf[s.off:s.end]
	if line[0] == ' ' || line[0] == '\t' {
		return field{}, badRequest("obsolete line folding in a header field")
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return field{}, badRequest("header field without a name and colon")
	}
	for _, c := range line[:colon] {
		if !isTokenChar(c) {
			return field{}, badRequest("invalid byte %q in a header field name", c)
		}
	}
	v0, v1 := colon+1, len(line)
	for v0 < v1 && (line[v0] == ' ' || line[v0] == '\t') {
		v0++
	}
	for v1 > v0 && (line[v1-1] == ' ' || line[v1-1] == '\t') {
		v1--
	}
	for _, c := range line[v0:v1] {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return field{}, badRequest("control character in the value of header field %q", line[:colon])
		}
	}
	return field{
		name:  span{s.off, s.off + colon},
		value: span{s.off + v0, s.off + v1},
		line:  s,
	}, nil
}

// parseRequestLine splits h's start line: method SP request-target SP
// HTTP-version, each part as RFC 9112 §3 allows and nothing else.
func (h *head) parseRequestLine() error {
	line := h.get(h.start)
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return badRequest("malformed request line")
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return badRequest("malformed request line")
	}
	for _, c := range line[:sp1] {
		if !isTokenChar(c) {
			return badRequest("invalid method")
		}
	}
	for _, c := range rest[:sp2] {
		if c <= ' ' || c == 0x7f {
			return badRequest("invalid request target")
		}
	}
	minor, err := parseVersion(rest[sp2+1:])
	if err != nil {
		return err
	}
	h.minor = minor
	h.method = span{h.start.off, h.start.off + sp1}
	h.target = span{h.start.off + sp1 + 1, h.start.off + sp1 + 1 + sp2}
	return nil
}

// parseVersion accepts HTTP/1.0 and HTTP/1.1; another HTTP/1.x is
// answered as the highest 1.x we speak would be (RFC 9110 §2.5), another
// major version with 505.
func parseVersion(v []byte) (int, error) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' || !isDigit(v[5]) || !isDigit(v[7]) {
		return 0, badRequest("malformed HTTP version")
	}
	if v[5] != '1' {
		return 0, &protoError{status: 505, msg: "HTTP version not supported"}
	}
	if v[7] == '0' {
		return 0, nil
	}
	return 1, nil
}

// parseStatusLine splits a response's status line: HTTP-version SP
// 3DIGIT SP [reason].
func (h *head) parseStatusLine() error {
	line := h.get(h.start)
	if len(line) < 12 || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return fmt.Errorf("malformed status line %q", truncate(line))
	}
	minor, err := parseVersion(line[:8])
	if err != nil {
		return fmt.Errorf("malformed status line %q", truncate(line))
	}
	code := line[9:12]
	if !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) || code[0] == '0' {
		return fmt.Errorf("malformed status code in %q", truncate(line))
	}
	h.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	h.minor = minor
	return nil
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isTokenChar reports a tchar of RFC 9110 §5.6.2.
func isTokenChar(c byte) bool {
	return c < 0x80 && tokenChars[c]
}

var tokenChars = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// is reports whether the field's name is name, which must be lower case.
func (h *head) is(f *field, name string) bool {
	n := h.get(f.name)
	if len(n) != len(name) {
		return false
	}
	for i, c := range n {
		if c|0x20 != name[i] && c != name[i] {
			return false
		}
	}
	return true
}

// value returns the value of the first field named name (lower case).
func (h *head) value(name string) ([]byte, bool) {
	for i := range h.fields {
		if h.is(&h.fields[i], name) {
			return h.get(h.fields[i].value), true
		}
	}
	return nil, false
}

// hasToken reports whether a comma-separated list field named name holds
// token, compared without regard to case.
func (h *head) hasToken(name, token string) bool {
	for i := range h.fields {
		f := &h.fields[i]
		if !h.is(f, name) {
			continue
		}
		v := h.get(f.value)
		for len(v) > 0 {
			var item []byte
			item, v = nextItem(v)
			if equalFold(item, token) {
				return true
			}
		}
	}
	return false
}

// nextItem splits the first element off a comma-separated list.
func nextItem(v []byte) (item, rest []byte) {
	i := bytes.IndexByte(v, ',')
	if i < 0 {
		item, rest = v, nil
	} else {
		item, rest = v[:i], v[i+1:]
	}
	return bytes.Trim(item, " \t"), rest
}

// equalFold compares ASCII b with lower-case s without regard to case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// contentLength returns the message's Content-Length, -1 when it has none.
// Several fields, or a list, must all say the same number (RFC 9112 §6.3
// item 5); anything else is refused.
func (h *head) contentLength() (int64, error) {
	n := int64(-1)
	for i := range h.fields {
		f := &h.fields[i]
		if !h.is(f, "content-length") {
			continue
		}
		v := h.get(f.value)
		if len(v) == 0 {
			return 0, badRequest("empty Content-Length")
		}
		for len(v) > 0 {
			var item []byte
			item, v = nextItem(v)
			m, err := parseLength(item)
			if err != nil {
				return 0, err
			}
			if n >= 0 && m != n {
				return 0, badRequest("conflicting Content-Length values")
			}
			n = m
		}
	}
	return n, nil
}

// parseLength parses 1*DIGIT, as Content-Length must be: no sign, no
// spaces, no hex.
func parseLength(b []byte) (int64, error) {
	if len(b) == 0 || len(b) > 18 {
		return 0, badRequest("invalid Content-Length %q", truncate(b))
	}
	for _, c := range b {
		if !isDigit(c) {
			return 0, badRequest("invalid Content-Length %q", truncate(b))
		}
	}
	return strconv.ParseInt(string(b), 10, 64)
}

// chunked reports whether the message has a Transfer-Encoding, and
// whether chunked is its final coding. A coding list ending in anything
// else leaves a request's length unknowable (RFC 9112 §6.3 item 4).
func (h *head) transferEncoding() (present, chunked bool) {
	var last []byte
	for i := range h.fields {
		f := &h.fields[i]
		if !h.is(f, "transfer-encoding") {
			continue
		}
		present = true
		v := h.get(f.value)
		for len(v) > 0 {
			var item []byte
			item, v = nextItem(v)
			if len(item) > 0 {
				last = item
			}
		}
	}
	return present, present && equalFold(last, "chunked")
}

// hostCount counts the request's Host fields.
func (h *head) hostCount() int {
	n := 0
	for i := range h.fields {
		if h.is(&h.fields[i], "host") {
			n++
		}
	}
	return n
}
