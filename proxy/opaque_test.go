package proxy

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// tcpBackend accepts connections and hands each to serve, on loopback.
func tcpBackend(t testing.TB, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// echoHalfClose answers everything it read, but only after the client
// half-closed: it only works if the proxy propagates the half-close.
func echoHalfClose(c net.Conn) {
	b, _ := io.ReadAll(c)
	c.Write(b)
}

func TestOpaque(t *testing.T) {
	random := make([]byte, 64<<10)
	rand.Read(random)
	tests := []struct {
		name    string
		payload []byte
		port    bool // target's port marked opaque
		reason  string
	}{
		{name: "random bytes are forwarded as they are", payload: random, reason: "no-match"},
		{name: "redis protocol", payload: []byte("*1\r\n$4\r\nPING\r\n"), reason: "no-match"},
		{name: "opaque port skips detection", payload: []byte("GET / HTTP/1.1\r\n\r\n"), port: true, reason: "opaque-port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := tcpBackend(t, echoHalfClose)
			p := startProxy(t, target, func(c *Config) {
				if tc.port {
					c.OpaquePorts.UnmarshalText([]byte(target[len("127.0.0.1:"):]))
				}
			})
			c, err := net.Dial("tcp", p.inbound)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go func() {
				c.Write(tc.payload)
				c.(*net.TCPConn).CloseWrite()
			}()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.payload) {
				t.Errorf("echo differs: got %d bytes, want %d", len(got), len(tc.payload))
			}
			c.Close()
			waitFor(t, func() bool { return p.counter(t, "mesh_proxy_tcp_close_total") == 1 })
			if n := p.counter(t, "mesh_proxy_protocol_detections_total", "protocol", "opaque", "reason", tc.reason); n != 1 {
				t.Errorf("opaque detections with reason %q = %v, want 1", tc.reason, n)
			}
			if n := p.counter(t, "mesh_proxy_tcp_read_bytes_total"); n != float64(len(tc.payload)) {
				t.Errorf("bytes read counted = %v, want %d", n, len(tc.payload))
			}
		})
	}
}

// A server-speaks-first destination: the first client waits the detect
// timeout, then the destination is remembered and the next one does not.
func TestServerSpeaksFirstIsRemembered(t *testing.T) {
	target := tcpBackend(t, func(c net.Conn) {
		c.Write([]byte("220 smtp ready\r\n"))
		io.Copy(io.Discard, c)
	})
	p := startProxy(t, target, func(c *Config) { c.DetectTimeout = 300 * time.Millisecond })
	greet := func() time.Duration {
		start := time.Now()
		c, err := net.Dial("tcp", p.inbound)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "220 smtp ready\r\n" {
			t.Fatalf("greeting: %q, %v", buf, err)
		}
		return time.Since(start)
	}
	first, second := greet(), greet()
	t.Logf("first greeting after %v, second after %v", first, second)
	if first < 300*time.Millisecond {
		t.Errorf("first greeting after %v: the proxy should have waited for the client first", first)
	}
	if n := p.counter(t, "mesh_proxy_protocol_detections_total", "reason", "remembered-opaque"); n != 1 {
		t.Errorf("remembered-opaque detections = %v, want 1", n)
	}
}

func TestOpaqueTargetDownResetsClient(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	p := startProxy(t, closed)
	c, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0, 1, 2, 3})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || err == io.EOF {
		t.Errorf("read = %v, want a connection reset", err)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An idle client of a client-first protocol (an HTTP pool's pre-connect)
// times out detection too, but the destination must not be remembered as
// opaque: the client, not the server, speaks first in the end.
func TestSilentClientFirstIsNotRemembered(t *testing.T) {
	target := tcpBackend(t, func(c net.Conn) {
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err == nil {
			c.Write([]byte("pong"))
		}
		io.Copy(io.Discard, c)
	})
	p := startProxy(t, target, func(c *Config) { c.DetectTimeout = 100 * time.Millisecond })
	c, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(300 * time.Millisecond) // past the detect timeout
	c.Write([]byte("ping"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("answer %q, %v", buf, err)
	}
	if n := p.counter(t, "mesh_proxy_protocol_detections_total", "reason", "timeout"); n != 1 {
		t.Errorf("timeout detections = %v, want 1", n)
	}
	// A second connection is detected again, not forwarded as remembered.
	c2, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	c2.Write([]byte("ping"))
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c2, buf); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if n := p.counter(t, "mesh_proxy_protocol_detections_total", "reason", "remembered-opaque"); n != 0 {
		t.Errorf("remembered-opaque detections = %v, want 0: a client-first destination was remembered", n)
	}
}
