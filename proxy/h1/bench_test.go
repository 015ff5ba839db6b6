package h1

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkForward measures one keep-alive GET through the forwarder, on
// loopback, against a minimal target: what the proxy's own data path costs
// per request (allocations above all; time is loopback's as much as ours).
//
//	go test -run '^$' -bench Forward -benchmem ./proxy/h1/
func BenchmarkForward(b *testing.B) {
	backend := rawBackend(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			for {
				l, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(l) == 2 {
					break
				}
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
		}
	})
	p := startTestProxy(b, backend)
	c := dial(b, p.addr)
	c.SetDeadline(time.Time{})
	br := bufio.NewReader(c)
	req := []byte("GET /items?id=7 HTTP/1.1\r\nHost: catalog\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.Write(req)
		for {
			l, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(l) == 2 {
				break
			}
		}
		if _, err := br.Discard(2); err != nil {
			b.Fatal(err)
		}
	}
}
