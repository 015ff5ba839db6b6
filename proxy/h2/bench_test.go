package h2

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/route"
)

// BenchmarkForward measures one request (a GET with a 2-byte response)
// through the forwarder on one client connection, on loopback, between a
// client and a target made of frames: what the proxy's own data path costs
// per stream (allocations above all; time is loopback's as much as ours).
// Its cases: no routing (the inbound side), a target with no route table
// (which must cost nothing more), and one whose table routes the request
// by its path prefix to a backend, with a request header set.
//
//	go test -run '^$' -bench Forward -benchmem ./proxy/h2/
func BenchmarkForward(b *testing.B) {
	backend := rawH2Backend(b)
	b.Run("routes=off", func(b *testing.B) { benchForward(b, backend) })
	b.Run("routes=none", func(b *testing.B) {
		benchForward(b, backend, func(c *Config, _ *httpproxy.ConnInfo) {
			c.Routes = func(netip.AddrPort) *route.Table { return nil }
		})
	})
	b.Run("routes=prefix", func(b *testing.B) {
		r := rule("0", prefix("/items"), backendRef(v1Authority, 1))
		r.Filters = []*destinationv1.Filter{{Kind: &destinationv1.Filter_RequestHeaders{RequestHeaders: headers([][2]string{{"x-routed", "yes"}}, nil)}}}
		table, err := route.Compile(httpTable(rule("1", prefix("/admin")), r))
		if err != nil {
			b.Fatal(err)
		}
		addr := netip.MustParseAddrPort(backend)
		benchForward(b, backend, func(c *Config, _ *httpproxy.ConnInfo) {
			c.Routes = func(netip.AddrPort) *route.Table { return table }
			c.Pick = func(context.Context, netip.AddrPort, string) (httpproxy.Endpoint, error) {
				return httpproxy.Endpoint{Addr: addr}, nil
			}
		})
	})
}

func benchForward(b *testing.B, backend string, opts ...func(*Config, *httpproxy.ConnInfo)) {
	p := startTestProxy(b, backend, opts...)
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	fr := http2.NewFramer(c, c)
	io.WriteString(c, http2.ClientPreface)
	fr.WriteSettings()
	fr.WriteWindowUpdate(0, 1<<30)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "catalog"}, {":path", "/items?id=7"}, {"user-agent", "bench"}, {"accept", "*/*"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	id := uint32(1)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true, EndStream: true})
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			if f.Header().StreamID == id && f.Header().Flags.Has(http2.FlagDataEndStream) {
				break
			}
		}
		id += 2
	}
}

// rawH2Backend answers every stream with a fixed 200 and "ok", from
// frames, so that only the proxy allocates in a benchmark.
func rawH2Backend(b testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "text/plain"})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				pre := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(c, pre); err != nil {
					return
				}
				fr := http2.NewFramer(c, c)
				fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				fr.WriteSettings()
				fr.WriteWindowUpdate(0, 1<<30)
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if h, ok := f.(*http2.MetaHeadersFrame); ok {
						fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: block.Bytes(), EndHeaders: true})
						fr.WriteData(h.StreamID, true, []byte("ok"))
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
