package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// dialHeld dials the proxy and sends bytes the echo backend answers only
// at EOF, so the connection stays open and holds a slot.
func dialHeld(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMaxConnections(t *testing.T) {
	target := tcpBackend(t, echoHalfClose)
	p := startProxy(t, target, func(c *Config) { c.MaxConnections = 2 })
	first := dialHeld(t, p.inbound)
	dialHeld(t, p.inbound)
	waitFor(t, func() bool { return p.counter(t, "mesh_proxy_tcp_open_total") == 2 })

	// The reset may reach the client as soon as it connects, or on its read.
	over, err := net.Dial("tcp", p.inbound)
	if err == nil {
		defer over.Close()
		over.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(over)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("third connection: %v, want a reset", err)
	}
	waitFor(t, func() bool {
		return p.counter(t, "mesh_proxy_connections_refused_total", "direction", "inbound", "reason", "limit") == 1
	})

	// Closing one frees its slot for the next client.
	first.Close()
	waitFor(t, func() bool { return p.counter(t, "mesh_proxy_tcp_close_total") == 1 })
	next := dialHeld(t, p.inbound)
	next.(*net.TCPConn).CloseWrite()
	next.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(next); err != nil || string(got) != "*1\r\n$4\r\nPING\r\n" {
		t.Errorf("after a slot was freed: read %q, %v", got, err)
	}
}

func TestOpaqueIdleTimeout(t *testing.T) {
	target := tcpBackend(t, echoHalfClose)
	p := startProxy(t, target, func(c *Config) { c.OpaqueIdleTimeout = 200 * time.Millisecond })
	c := dialHeld(t, p.inbound)
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("idle stream: %v, want it closed", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("closed after %s, before the idle timeout", d)
	}
	waitFor(t, func() bool { return p.counter(t, "mesh_proxy_tcp_close_total") == 1 })
}

func TestHTTP1BodyIdleTimeout(t *testing.T) {
	const idle = 200 * time.Millisecond
	t.Run("a stalled request body ends the request", func(t *testing.T) {
		readErr := make(chan error, 1)
		target := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, err := io.ReadAll(r.Body)
			readErr <- err
		}))
		p := startProxy(t, target, func(c *Config) { c.HTTP1BodyIdleTimeout = idle })
		c, err := net.Dial("tcp", p.inbound)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nabc")
		select {
		case err := <-readErr:
			if err == nil {
				t.Error("the application read a whole body, want it cut short")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the request is still waiting for its body")
		}
	})
	t.Run("a slow but steady response body is whole; a stalled one ends", func(t *testing.T) {
		target := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for range 8 {
				w.Write([]byte("x"))
				w.(http.Flusher).Flush()
				time.Sleep(idle / 4)
			}
			if r.URL.Path == "/stall" {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			}
		}))
		p := startProxy(t, target, func(c *Config) { c.HTTP1BodyIdleTimeout = idle })
		client := h1Client(t)
		resp, err := client.Get("http://" + p.inbound + "/steady")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "xxxxxxxx" {
			t.Errorf("steady body: %q, %v; want it whole", body, err)
		}

		start := time.Now()
		resp, err = client.Get("http://" + p.inbound + "/stall")
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Error("stalled body read to the end, want an error")
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("stalled body ended after %s, want about the idle timeout", d)
		}
	})
}
