package h2

import (
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// headerBlock is a decoded header block: a HEADERS frame and its
// CONTINUATIONs. Its fields are the reader's, reused by the next block: a
// stream that keeps them copies them.
type headerBlock struct {
	StreamID    uint32
	ended       bool
	hasPriority bool
	Priority    http2.PriorityParam
	Fields      []hpack.HeaderField
	// Truncated says the header list went past the reader's limit: the
	// fields past it were decoded (HPACK state follows every block) and
	// dropped.
	Truncated bool
}

func (b *headerBlock) StreamEnded() bool { return b.ended }
func (b *headerBlock) HasPriority() bool { return b.hasPriority }

// PseudoFields returns the leading pseudo-header fields.
func (b *headerBlock) PseudoFields() []hpack.HeaderField {
	for i, f := range b.Fields {
		if !f.IsPseudo() {
			return b.Fields[:i]
		}
	}
	return b.Fields
}

// RegularFields returns the fields after the pseudo-header fields.
func (b *headerBlock) RegularFields() []hpack.HeaderField {
	return b.Fields[len(b.PseudoFields()):]
}

// PseudoValue returns the value of pseudo-header ":"+name, "" if absent.
func (b *headerBlock) PseudoValue(name string) string {
	for _, f := range b.PseudoFields() {
		if f.Name[1:] == name {
			return f.Value
		}
	}
	return ""
}

// blockReader decodes header blocks into fields it keeps from block to
// block, so that a stream's head costs no allocation for the fields the
// HPACK tables already hold (x/net's ReadMetaHeaders builds a new field
// list per block). It checks what x/net's does, with the same errors: a
// field name or value HTTP/2 forbids or a pseudo-header field out of place
// is a stream error, a header list past max truncates the block, and a
// block that keeps coming past that (CONTINUATION flood, CVE-2024-27316)
// or does not decode is a connection error. Used by one reader goroutine.
type blockReader struct {
	dec *hpack.Decoder
	max uint32
	b   headerBlock

	// State of the block being decoded.
	remain     uint32
	sawRegular bool
	invalid    error
}

func newBlockReader(max uint32) *blockReader {
	r := &blockReader{max: max}
	r.dec = hpack.NewDecoder(4096, r.emit)
	r.dec.SetMaxStringLength(int(max))
	return r
}

var errPseudoAfterRegular = errors.New("pseudo header field after regular")

func (r *blockReader) emit(f hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		r.invalid = errors.New("invalid header field value for " + f.Name)
	}
	if strings.HasPrefix(f.Name, ":") {
		if r.sawRegular {
			r.invalid = errPseudoAfterRegular
		}
	} else {
		r.sawRegular = true
		if !validFieldName(f.Name) {
			r.invalid = errors.New("invalid header field name")
		}
	}
	if r.invalid != nil {
		r.dec.SetEmitEnabled(false)
		return
	}
	if size := f.Size(); size > r.remain {
		r.dec.SetEmitEnabled(false)
		r.b.Truncated = true
		r.remain = 0
		return
	} else {
		r.remain -= size
	}
	r.b.Fields = append(r.b.Fields, f)
}

// validFieldName reports a field name HTTP/2 allows: a token, in lower
// case (RFC 9113 §8.2.1).
func validFieldName(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !httpguts.IsTokenRune(rune(c)) || ('A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// read decodes the block that h begins, reading its CONTINUATION frames
// from fr (the framer keeps them together, or fails the connection).
func (r *blockReader) read(fr *http2.Framer, h *http2.HeadersFrame) (*headerBlock, error) {
	b := &r.b
	clear(b.Fields)
	*b = headerBlock{
		StreamID: h.StreamID, ended: h.StreamEnded(), hasPriority: h.HasPriority(), Priority: h.Priority,
		Fields: b.Fields[:0],
	}
	r.remain, r.sawRegular, r.invalid = r.max, false, nil
	r.dec.SetEmitEnabled(true)
	frag, done := h.HeaderBlockFragment(), h.HeadersEnded()
	for {
		// A fragment far past what the list may still hold is not worth
		// decoding, nor is one after an invalid field (as x/net's reader).
		limit := 2 * (int64(r.remain) + int64(r.max))
		if b.Truncated {
			limit = 0
		}
		if int64(len(frag)) > limit || r.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := r.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if done {
			break
		}
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		c, ok := f.(*http2.ContinuationFrame)
		if !ok {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		frag, done = c.HeaderBlockFragment(), c.HeadersEnded()
	}
	if err := r.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if r.invalid != nil {
		return nil, http2.StreamError{StreamID: b.StreamID, Code: http2.ErrCodeProtocol, Cause: r.invalid}
	}
	if err := checkPseudos(b.PseudoFields()); err != nil {
		return nil, http2.StreamError{StreamID: b.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return b, nil
}

// checkPseudos refuses an unknown pseudo-header field, one twice, and
// request and response ones together (RFC 9113 §8.3).
func checkPseudos(pf []hpack.HeaderField) error {
	var request, response bool
	for i, f := range pf {
		switch f.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return errors.New("invalid pseudo-header " + f.Name)
		}
		for _, g := range pf[:i] {
			if f.Name == g.Name {
				return errors.New("duplicate pseudo-header " + f.Name)
			}
		}
	}
	if request && response {
		return errors.New("request and response pseudo-headers together")
	}
	return nil
}
