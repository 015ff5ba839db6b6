package proxy

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
)

func TestListenOutboundTakesBothLoopbacks(t *testing.T) {
	var lc net.ListenConfig
	ln, err := listenOutbound(&lc, "127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, ok := ln.(*multiListener); !ok {
		t.Skip("this machine has no IPv6 loopback; only 127.0.0.1 is bound")
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	for _, host := range []string{"127.0.0.1", "::1"} {
		c, err := net.Dial("tcp", net.JoinHostPort(host, port))
		if err != nil {
			t.Fatalf("dial %s: %v", host, err)
		}
		got, err := ln.Accept()
		if err != nil {
			t.Fatalf("accept from %s: %v", host, err)
		}
		if want := c.LocalAddr().String(); got.RemoteAddr().String() != want {
			t.Errorf("accepted %s, want the connection from %s", got.RemoteAddr(), want)
		}
		got.Close()
		c.Close()
	}
	if err := ln.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := ln.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Error("Accept after Close succeeded")
	}
}
