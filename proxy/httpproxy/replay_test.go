package httpproxy

import (
	"bytes"
	"testing"
)

// TestReplay: a body is kept whole up to its limit, in writes of any
// size, and not at all past it; Reset keeps the buffer for another
// recording; a limit past the pooled classes grows as far as it.
func TestReplay(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 10<<10) // 160 KiB
	tests := []struct {
		name       string
		limit      int
		size       int // of the body, written in chunks of chunk
		chunk      int
		wantCapped bool
	}{
		{name: "empty", size: 0, chunk: 1},
		{name: "small", size: 100, chunk: 7},
		{name: "across classes", size: 40 << 10, chunk: 3000},
		{name: "exactly the default", size: DefaultReplayLimit, chunk: 16 << 10},
		{name: "one past the default", size: DefaultReplayLimit + 1, chunk: 16 << 10, wantCapped: true},
		{name: "small limit", limit: 1000, size: 1001, chunk: 1001, wantCapped: true},
		{name: "large limit", limit: 150 << 10, size: 150 << 10, chunk: 5000},
		{name: "past a large limit", limit: 150 << 10, size: 160 << 10, chunk: 5000, wantCapped: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &Replay{Limit: tc.limit}
			for off := 0; off < tc.size; off += tc.chunk {
				r.Add(body[off:min(off+tc.chunk, tc.size)])
			}
			if r.Capped() != tc.wantCapped {
				t.Fatalf("Capped() = %v, want %v", r.Capped(), tc.wantCapped)
			}
			if tc.wantCapped {
				if r.Len() != 0 || r.Bytes() != nil {
					t.Errorf("capped, yet %d bytes kept", r.Len())
				}
				return
			}
			if !bytes.Equal(r.Bytes(), body[:tc.size]) || r.Len() != tc.size {
				t.Errorf("kept %d bytes, not the body's %d", r.Len(), tc.size)
			}
			r.Reset()
			if r.Len() != 0 {
				t.Errorf("%d bytes after Reset", r.Len())
			}
			r.Add(body[:10])
			if !bytes.Equal(r.Bytes(), body[:10]) {
				t.Errorf("after Reset kept %q", r.Bytes())
			}
			r.Release()
			if r.Len() != 0 || r.Capped() {
				t.Errorf("after Release: %d bytes, capped %v", r.Len(), r.Capped())
			}
		})
	}
}

// TestReplayPooled: recording and releasing a small body, again and
// again, allocates nothing once the pool holds a buffer. Under the race
// detector sync.Pool drops a quarter of what is put back, at random, so
// there the bound is under one of the two buffers a recording takes
// without a pool.
func TestReplayPooled(t *testing.T) {
	want := 0.0
	if raceEnabled {
		want = 1
	}
	b := make([]byte, 3000)
	allocs := testing.AllocsPerRun(100, func() {
		var r Replay
		r.Add(b)
		r.Add(b) // grows to the next class
		r.Release()
	})
	if allocs > want {
		t.Errorf("%v allocations per recording, want at most %v (two without the pool)", allocs, want)
	}
}
