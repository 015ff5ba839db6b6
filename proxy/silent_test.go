package proxy

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestSilentConnectionsHoldNoBuffers: connections that send nothing (an
// idle connection flood, issue 12 test 6) are relayed as opaque once the
// detect timeout passes, and wait there for a first byte. They must not
// hold copy buffers while they wait: with two 32 KiB buffers each, 2,000
// of them took a proxy past its 64 MiB and it was OOM-killed. A
// connection that does speak later is still relayed whole.
func TestSilentConnectionsHoldNoBuffers(t *testing.T) {
	const conns = 500
	target := tcpBackend(t, func(c net.Conn) { io.Copy(c, c) })
	p := startProxy(t, target, func(c *Config) { c.DetectTimeout = 20 * time.Millisecond })

	before := heapInuse()
	held := make([]net.Conn, 0, conns)
	for range conns {
		c, err := net.Dial("tcp", p.inbound)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitFor(t, func() bool { return p.counter(t, "mesh_proxy_tcp_open_total") == conns })
	// Past the detect timeout, every relay is waiting for a first byte.
	time.Sleep(200 * time.Millisecond)
	// The heap may also shrink meanwhile (garbage of earlier tests of the
	// package collected): that is no growth, not a huge unsigned number.
	grown := uint64(max(int64(heapInuse())-int64(before), 0))
	t.Logf("%d silent connections: heap grew %d KiB (%d bytes each)", conns, grown>>10, grown/conns)
	// Two copy buffers each would be 32 MiB; goroutines and connection
	// state are a few KiB each.
	if limit := uint64(conns * 16 << 10); grown > limit {
		t.Errorf("%d silent connections grew the heap by %d KiB, more than %d KiB: they hold copy buffers", conns, grown>>10, limit>>10)
	}

	// One of them speaks, late: its bytes reach the echo and come back.
	c := held[0]
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("late hello")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("late hello"))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "late hello" {
		t.Errorf("a late speaker got %q, %v back; want its own bytes", got, err)
	}
}

// heapInuse returns the heap in use after a collection.
func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
