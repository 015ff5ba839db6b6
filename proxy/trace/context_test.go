package trace

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// headers is a Getter over a map of lower-case names.
type headers map[string]string

func (h headers) Header(name string) (string, bool) { v, ok := h[name]; return v, ok }

func (h headers) Set(name, value string) { h[name] = value }
func (h headers) Del(name string)        { delete(h, name) }

const (
	tid = "4bf92f3577b34da6a3ce929d0e0e4736"
	sid = "00f067aa0ba902b7"
)

func ids(t, s string) ([16]byte, [8]byte) {
	var a [16]byte
	var b [8]byte
	if len(t) == 16 {
		lowerHex(a[8:], t)
	} else {
		lowerHex(a[:], t)
	}
	lowerHex(b[:], s)
	return a, b
}

func TestParseTraceparent(t *testing.T) {
	traceID, spanID := ids(tid, sid)
	tests := []struct {
		name string
		in   string
		ok   bool
		want Context
	}{
		{name: "sampled", in: "00-" + tid + "-" + sid + "-01", ok: true,
			want: Context{TraceID: traceID, SpanID: spanID, Decided: true, Sampled: true, Format: W3C}},
		{name: "not sampled", in: "00-" + tid + "-" + sid + "-00", ok: true,
			want: Context{TraceID: traceID, SpanID: spanID, Decided: true, Format: W3C}},
		{name: "other flags kept apart from sampled", in: "00-" + tid + "-" + sid + "-03", ok: true,
			want: Context{TraceID: traceID, SpanID: spanID, Decided: true, Sampled: true, Format: W3C}},
		{name: "surrounding spaces", in: " 00-" + tid + "-" + sid + "-01 ", ok: true,
			want: Context{TraceID: traceID, SpanID: spanID, Decided: true, Sampled: true, Format: W3C}},
		{name: "future version with more fields", in: "cc-" + tid + "-" + sid + "-01-what-the-future-holds", ok: true,
			want: Context{TraceID: traceID, SpanID: spanID, Decided: true, Sampled: true, Format: W3C}},
		{name: "future version, same length", in: "01-" + tid + "-" + sid + "-01", ok: true,
			want: Context{TraceID: traceID, SpanID: spanID, Decided: true, Sampled: true, Format: W3C}},
		{name: "future version, no dash after flags", in: "01-" + tid + "-" + sid + "-01x"},
		{name: "version ff", in: "ff-" + tid + "-" + sid + "-01"},
		{name: "version 00 with more", in: "00-" + tid + "-" + sid + "-01-x"},
		{name: "upper-case trace id", in: "00-4BF92F3577B34DA6A3CE929D0E0E4736-" + sid + "-01"},
		{name: "upper-case version", in: "0A-" + tid + "-" + sid + "-01"},
		{name: "all-zero trace id", in: "00-00000000000000000000000000000000-" + sid + "-01"},
		{name: "all-zero span id", in: "00-" + tid + "-0000000000000000-01"},
		{name: "short", in: "00-" + tid + "-" + sid + "-1"},
		{name: "not hex", in: "00-" + tid + "-" + sid + "-0g"},
		{name: "wrong separator", in: "00_" + tid + "-" + sid + "-01"},
		{name: "empty", in: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseTraceparent(tc.in)
			if ok != tc.ok {
				t.Fatalf("ParseTraceparent(%q) ok = %v, want %v", tc.in, ok, tc.ok)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseB3(t *testing.T) {
	traceID, spanID := ids(tid, sid)
	short, _ := ids("a3ce929d0e0e4736", sid)
	tests := []struct {
		name string
		in   string
		ok   bool
		want Context
	}{
		{name: "ids and sampled", in: tid + "-" + sid + "-1", ok: true,
			want: Context{TraceID: traceID, SpanID: spanID, Decided: true, Sampled: true, Format: B3Single}},
		{name: "ids deferred", in: tid + "-" + sid, ok: true,
			want: Context{TraceID: traceID, SpanID: spanID, Format: B3Single}},
		{name: "debug with parent", in: tid + "-" + sid + "-d-" + sid, ok: true,
			want: Context{TraceID: traceID, SpanID: spanID, Decided: true, Sampled: true, Format: B3Single}},
		{name: "64-bit trace id", in: "a3ce929d0e0e4736-" + sid + "-0", ok: true,
			want: Context{TraceID: short, SpanID: spanID, Decided: true, Format: B3Single}},
		{name: "deny alone", in: "0", ok: true, want: Context{Decided: true, Format: B3Single}},
		{name: "bad sampling", in: tid + "-" + sid + "-x"},
		{name: "bad parent", in: tid + "-" + sid + "-1-xyz"},
		{name: "zero ids", in: "00000000000000000000000000000000-" + sid},
		{name: "too many parts", in: tid + "-" + sid + "-1-" + sid + "-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseB3(tc.in)
			if ok != tc.ok {
				t.Fatalf("ParseB3(%q) ok = %v, want %v", tc.in, ok, tc.ok)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestExtract(t *testing.T) {
	traceID, spanID := ids(tid, sid)
	tests := []struct {
		name string
		h    headers
		want Context
	}{
		{name: "traceparent and tracestate",
			h:    headers{"traceparent": "00-" + tid + "-" + sid + "-01", "tracestate": "congo=t61rcWkgMzE", "b3": "0"},
			want: Context{TraceID: traceID, SpanID: spanID, Decided: true, Sampled: true, State: "congo=t61rcWkgMzE", Format: W3C}},
		{name: "invalid traceparent falls to b3",
			h:    headers{"traceparent": "00-" + tid + "-" + sid, "b3": tid + "-" + sid + "-0"},
			want: Context{TraceID: traceID, SpanID: spanID, Decided: true, Format: B3Single}},
		{name: "multi",
			h:    headers{"x-b3-traceid": tid, "x-b3-spanid": sid, "x-b3-sampled": "1"},
			want: Context{TraceID: traceID, SpanID: spanID, Decided: true, Sampled: true, Format: B3Multi}},
		{name: "multi, upper case, debug flag",
			h:    headers{"x-b3-traceid": "4BF92F3577B34DA6A3CE929D0E0E4736", "x-b3-spanid": sid, "x-b3-flags": "1"},
			want: Context{TraceID: traceID, SpanID: spanID, Decided: true, Sampled: true, Format: B3Multi}},
		{name: "multi, decision alone", h: headers{"x-b3-sampled": "0"}, want: Context{Decided: true, Format: B3Multi}},
		{name: "multi, span id missing", h: headers{"x-b3-traceid": tid}},
		{name: "none", h: headers{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Extract(tc.h)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzExtract: no header value makes Extract panic, and what it accepts
// names a trace or carries a decision.
func FuzzExtract(f *testing.F) {
	for _, s := range []string{"00-" + tid + "-" + sid + "-01", tid + "-" + sid + "-1", "d", "", "ff-"} { // seeds: each format, and edges
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, h := range []headers{{"traceparent": s}, {"b3": s}, {"x-b3-traceid": s, "x-b3-spanid": s}} {
			c := Extract(h)
			if c.Format != None && !c.HasIDs() && !c.Decided {
				t.Fatalf("Extract(%v) = %+v: a context with neither IDs nor a decision", h, c)
			}
		}
	})
}
