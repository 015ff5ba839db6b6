package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestDirectDialIsRefused: a client that dials the inbound listener itself,
// so that iptables did not redirect it, has no original destination. The
// proxy must reset it rather than forward it anywhere: otherwise any pod
// could use every meshed pod as an open relay.
func TestDirectDialIsRefused(t *testing.T) {
	var hits atomic.Int64
	backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	cfg := DefaultConfig()
	cfg.InboundAddr, cfg.OutboundAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.ShutdownGrace = time.Second
	// The real SO_ORIGINAL_DST lookup: a connection no nat rule touched has none.
	p, err := New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	in, _, _ := p.Addrs()
	c, err := net.Dial("tcp", in.String())
	if err != nil {
		// Reset while connecting: refused, as it should be.
		t.Logf("dial: %v", err)
		return
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 64))
	if err == nil || n > 0 {
		t.Fatalf("a direct dial got %d bytes back (err %v); want the connection closed unanswered", n, err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a direct dial was left open; want it closed at once")
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the application got %d requests from a direct dial", n)
	}
}
