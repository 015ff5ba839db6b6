package trace

import "encoding/hex"

// Setter edits a request's header fields on its way to the next hop.
type Setter interface {
	Set(name, value string) // replaces every field of name with one
	Del(name string)
}

// Inject writes the span's context into the request for the next hop:
// traceparent always (W3C Trace Context is what the mesh speaks), with
// tracestate left as it came; and the B3 headers in the form the request
// came with them, with this span as the parent. A request sent again
// (a retry) carries the same span: it is one request of this proxy's.
func (s *Span) Inject(h Setter) {
	if s == nil {
		return
	}
	tid, sid := s.sc.TraceID(), s.sc.SpanID()
	sampled := s.sc.IsSampled()
	var b [55]byte
	copy(b[:], "00-")
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52], b[53], b[54] = '-', '0', '0'
	if sampled {
		b[54] = '1'
	}
	h.Set(hTraceparent, string(b[:]))
	if s.in.Format != W3C {
		h.Del(hTracestate) // one that came without a traceparent belongs to no trace
	}
	switch s.in.Format {
	case B3Single:
		v := s.traceB + "-" + sid.String() + "-0"
		if sampled {
			v = v[:len(v)-1] + "1"
		}
		h.Set(hB3, v)
	case B3Multi:
		h.Set(hB3TraceID, s.traceB)
		h.Set(hB3SpanID, sid.String())
		if s.in.HasIDs() {
			h.Set(hB3Parent, hex.EncodeToString(s.in.SpanID[:]))
		} else {
			h.Del(hB3Parent)
		}
		h.Del(hB3Flags) // debug travels as sampled
		if sampled {
			h.Set(hB3Sampled, "1")
		} else {
			h.Set(hB3Sampled, "0")
		}
	}
}
