package trace

import "strings"

// Format is how a request carried its trace context, and so how it is
// passed on: the same headers, with this proxy's span in them.
type Format uint8

const (
	// None: the request carried no valid context.
	None Format = iota
	// W3C: traceparent (and tracestate), W3C Trace Context Level 1.
	W3C
	// B3Single: the b3 header of openzipkin/b3-propagation.
	B3Single
	// B3Multi: the X-B3-* headers.
	B3Multi
)

// Context is a trace context a request arrived with.
type Context struct {
	TraceID [16]byte
	SpanID  [8]byte // the caller's span: this proxy's span's parent
	// Decided says whether the caller made a sampling decision, Sampled
	// which one. A B3 context may carry IDs with no decision ("defer"),
	// and a b3 of "0" or "1" a decision with no IDs.
	Decided, Sampled bool
	State            string // tracestate, as received; W3C only
	Format           Format
}

// HasIDs reports whether c names a trace and a parent span.
func (c Context) HasIDs() bool { return c.TraceID != [16]byte{} && c.SpanID != [8]byte{} }

// Getter reads a request's header field by its lower-case name: the
// values of repeated fields joined with ", ", and whether any is present.
type Getter interface {
	Header(name string) (string, bool)
}

// Header names, lower case as HTTP/2 writes them (HTTP/1 matches them
// case-insensitively).
const (
	hTraceparent = "traceparent"
	hTracestate  = "tracestate"
	hB3          = "b3"
	hB3TraceID   = "x-b3-traceid"
	hB3SpanID    = "x-b3-spanid"
	hB3Parent    = "x-b3-parentspanid"
	hB3Sampled   = "x-b3-sampled"
	hB3Flags     = "x-b3-flags"
)

// Extract reads the trace context of a request: traceparent when it is
// valid, else b3, else the X-B3-* headers. A context that does not parse
// is as none: the request starts a trace of its own, as W3C Trace Context
// §4.3 asks of a traceparent that cannot be parsed.
func Extract(h Getter) Context {
	if v, ok := h.Header(hTraceparent); ok {
		if c, ok := ParseTraceparent(v); ok {
			if s, ok := h.Header(hTracestate); ok && len(s) <= maxTracestate {
				c.State = s
			}
			return c
		}
	}
	if v, ok := h.Header(hB3); ok {
		if c, ok := ParseB3(v); ok {
			return c
		}
	}
	if c, ok := parseB3Multi(h); ok {
		return c
	}
	return Context{}
}

// maxTracestate bounds the tracestate passed on: W3C Trace Context §3.3.1
// allows 32 members of at most 256 bytes each; past that it is dropped.
const maxTracestate = 32 * 257

// ParseTraceparent parses a traceparent header (W3C Trace Context §3.2):
// version-traceid-parentid-flags in lower-case hex. Version ff is invalid;
// a version above 00 may carry more after the flags, behind a '-', which
// is ignored (§3.2.4); IDs of all zeros are invalid.
func ParseTraceparent(v string) (Context, bool) {
	v = strings.TrimSpace(v) // OWS around a field value is not part of it
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return Context{}, false
	}
	var ver [1]byte
	if !lowerHex(ver[:], v[:2]) || ver[0] == 0xff {
		return Context{}, false
	}
	if ver[0] == 0 && len(v) != 55 {
		return Context{}, false
	}
	if len(v) > 55 && v[55] != '-' {
		return Context{}, false
	}
	var c Context
	var flags [1]byte
	if !lowerHex(c.TraceID[:], v[3:35]) || !lowerHex(c.SpanID[:], v[36:52]) || !lowerHex(flags[:], v[53:55]) {
		return Context{}, false
	}
	if !c.HasIDs() {
		return Context{}, false
	}
	c.Decided, c.Sampled, c.Format = true, flags[0]&1 == 1, W3C
	return c, true
}

// ParseB3 parses a b3 header (openzipkin/b3-propagation, single header):
// traceid-spanid[-sampling[-parentspanid]], or a sampling decision alone:
// 0, 1 or d (debug, which samples). A 64-bit trace ID is taken as the low
// half of a 128-bit one, as Zipkin does.
func ParseB3(v string) (Context, bool) {
	v = strings.TrimSpace(v)
	c := Context{Format: B3Single}
	if len(v) == 1 {
		return c, parseB3Sampling(&c, v)
	}
	parts := strings.Split(v, "-")
	if len(parts) < 2 || len(parts) > 4 {
		return Context{}, false
	}
	if !parseTraceID(&c, parts[0]) || len(parts[1]) != 16 || !lowerHex(c.SpanID[:], parts[1]) || !c.HasIDs() {
		return Context{}, false
	}
	if len(parts) >= 3 && !parseB3Sampling(&c, parts[2]) {
		return Context{}, false
	}
	if len(parts) == 4 {
		var parent [8]byte
		if len(parts[3]) != 16 || !lowerHex(parent[:], parts[3]) {
			return Context{}, false
		}
	}
	return c, true
}

func parseB3Sampling(c *Context, v string) bool {
	switch v {
	case "0":
		c.Decided, c.Sampled = true, false
	case "1", "d":
		c.Decided, c.Sampled = true, true
	default:
		return false
	}
	return true
}

// parseTraceID reads a trace ID of 16 or 32 hex digits into c.
func parseTraceID(c *Context, v string) bool {
	switch len(v) {
	case 32:
		return lowerHex(c.TraceID[:], v)
	case 16:
		return lowerHex(c.TraceID[8:], v)
	}
	return false
}

// parseB3Multi reads the X-B3-* headers. X-B3-Sampled takes 0 and 1 (and
// true and false, which older tracers sent); X-B3-Flags: 1 is debug,
// which samples. A decision alone, without IDs, is a context too.
func parseB3Multi(h Getter) (Context, bool) {
	c := Context{Format: B3Multi}
	tid, okT := h.Header(hB3TraceID)
	sid, okS := h.Header(hB3SpanID)
	if okT || okS {
		tid, sid = strings.ToLower(strings.TrimSpace(tid)), strings.ToLower(strings.TrimSpace(sid))
		if !parseTraceID(&c, tid) || len(sid) != 16 || !lowerHex(c.SpanID[:], sid) || !c.HasIDs() {
			return Context{}, false
		}
	}
	if f, ok := h.Header(hB3Flags); ok && strings.TrimSpace(f) == "1" {
		c.Decided, c.Sampled = true, true
	} else if s, ok := h.Header(hB3Sampled); ok {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "1", "true":
			c.Decided, c.Sampled = true, true
		case "0", "false":
			c.Decided, c.Sampled = true, false
		default:
			return Context{}, false
		}
	}
	if !okT && !okS && !c.Decided {
		return Context{}, false
	}
	return c, true
}

// lowerHex decodes s, lower-case hex of exactly 2*len(dst) digits, into dst.
func lowerHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := nibble(s[2*i])
		lo, ok2 := nibble(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

// nibble is the value of a lower-case hex digit: W3C Trace Context
// forbids upper case (§3.2.2.3).
func nibble(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
