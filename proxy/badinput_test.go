package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Bad input gets a clear answer or a close, and never a crash or a leak
// (goleak in TestMain checks every test here).

func TestSlowClientHeadersTimeOut(t *testing.T) {
	target := backend(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	p := startProxy(t, target, func(c *Config) { c.HeaderReadTimeout = 300 * time.Millisecond })
	c, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A request line and one header, then nothing: slow loris.
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: a\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("want the proxy to close the connection, got %v", err)
	}
	t.Logf("closed after %v with %q", time.Since(start), b)
}

func TestOversizedHeadersGet431(t *testing.T) {
	target := backend(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	p := startProxy(t, target, func(c *Config) { c.MaxHeaderBytes = 4 << 10 })
	req, _ := http.NewRequest("GET", "http://"+p.inbound+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("b", 64<<10))
	res, err := h1Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status = %d, want 431", res.StatusCode)
	}
}

func TestTruncatedPrefaceIsForwardedAsIs(t *testing.T) {
	got := make(chan []byte, 1)
	target := tcpBackend(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		got <- b
	})
	p := startProxy(t, target)
	c, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	partial := []byte(http2.ClientPreface[:10])
	c.Write(partial)
	time.Sleep(400 * time.Millisecond) // past the detect timeout
	c.(*net.TCPConn).CloseWrite()
	select {
	case b := <-got:
		if !bytes.Equal(b, partial) {
			t.Errorf("target got %q, want %q", b, partial)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("target got nothing")
	}
	c.Close()
}

func TestTooManyStreamsAreRefused(t *testing.T) {
	release := make(chan struct{})
	target := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer close(release)
	const limit = 4
	p := startProxy(t, target, func(c *Config) { c.MaxConcurrentStreams = limit })
	c, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, bufio.NewReader(c))
	fr.WriteSettings()
	// Read the server's SETTINGS and acknowledge them, so that extra streams
	// are refused (REFUSED_STREAM) rather than treated as a protocol error.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			if v, ok := sf.Value(http2.SettingMaxConcurrentStreams); !ok || v != limit {
				t.Errorf("advertised max streams = %d, want %d", v, limit)
			}
			fr.WriteSettingsAck()
			break
		}
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := range limit + 3 {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	}
	refused := 0
	for refused < 3 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d refused streams: %v", refused, err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok {
			if rst.ErrCode != http2.ErrCodeRefusedStream && rst.ErrCode != http2.ErrCodeProtocol {
				t.Errorf("stream %d reset with %v", rst.StreamID, rst.ErrCode)
			}
			refused++
		}
	}
}

func TestClientClosesAtOnce(t *testing.T) {
	target := tcpBackend(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	p := startProxy(t, target)
	for range 20 {
		c, err := net.Dial("tcp", p.inbound)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	waitFor(t, func() bool { return p.counter(t, "mesh_proxy_tcp_close_total") == 20 })
}
