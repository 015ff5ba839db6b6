package h2

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzBlockReader is a differential test of the header block reader
// against x/net's (Framer.ReadMetaHeaders), which it replaces to keep its
// fields from block to block: for any block, split into a HEADERS and a
// CONTINUATION anywhere, both decode the same fields and truncate alike,
// or fail with the same kind of error.
//
//	go test -run '^$' -fuzz FuzzBlockReader -fuzztime 60s ./proxy/h2/
func FuzzBlockReader(f *testing.F) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":path", Value: "/"}, {Name: "x-a", Value: "b"}} {
		enc.WriteField(hf)
	}
	f.Add(buf.Bytes(), uint8(2), uint16(4096))                              // a request head, split
	f.Add(buf.Bytes(), uint8(0), uint16(40))                                // past the list size
	f.Add([]byte{0x82, 0x40, 0x01, 'A', 0x01, 'b'}, uint8(9), uint16(4096)) // an upper-case name
	f.Add([]byte{0x40, 0x01, 'a', 0x01, 'b', 0x82}, uint8(9), uint16(4096)) // a pseudo-header after a field
	f.Add([]byte{0xff, 0xff, 0xff}, uint8(1), uint16(4096))                 // not HPACK
	f.Fuzz(func(t *testing.T, block []byte, split uint8, max uint16) {
		if max == 0 {
			t.Skip() // x/net's zero means its default; the proxy always sets one
		}
		cut := min(int(split), len(block))
		var wire bytes.Buffer
		w := http2.NewFramer(&wire, nil)
		w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:cut], EndHeaders: cut == len(block)})
		if cut < len(block) {
			w.WriteContinuation(1, true, block[cut:])
		}
		raw := wire.Bytes()

		ref := http2.NewFramer(nil, bytes.NewReader(raw))
		ref.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		ref.MaxHeaderListSize = uint32(max)
		want := outcome(ref.ReadFrame())

		ours := http2.NewFramer(nil, bytes.NewReader(raw))
		r := newBlockReader(uint32(max))
		fr, err := ours.ReadFrame()
		var got string
		if err != nil {
			got = outcome(nil, err)
		} else {
			b, err := r.read(ours, fr.(*http2.HeadersFrame))
			if err != nil {
				got = outcome(nil, err)
			} else {
				got = fmt.Sprintf("fields %q truncated %v", b.Fields, b.Truncated)
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("block %x split at %d, max %d (-x/net +ours):\n%s", block, cut, max, diff)
		}
	})
}

// outcome describes what reading a header block gave: its fields, or the
// kind of error.
func outcome(f http2.Frame, err error) string {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("stream error %v", se.Code)
	case errors.As(err, &ce):
		return fmt.Sprintf("connection error %v", http2.ErrCode(ce))
	case err != nil:
		return "error"
	}
	mh := f.(*http2.MetaHeadersFrame)
	return fmt.Sprintf("fields %q truncated %v", mh.Fields, mh.Truncated)
}
