package httpserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs Run for srv on a loopback listener until the returned stop is
// called; stop returns what Run returned.
func serve(t *testing.T, srv *http.Server) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, srv, func() error { return srv.Serve(ln) }, time.Second) }()
	return ln.Addr().String(), func() error {
		cancel()
		return <-done
	}
}

func live(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "live\n") }

// TestIdleTimeout: Run gives a server that has none the default idle
// timeout, and keeps the one a server sets, or its ReadTimeout, which
// net/http uses in its place.
func TestIdleTimeout(t *testing.T) {
	tests := []struct {
		name      string
		srv       *http.Server
		wantIdle  time.Duration
		wantClose time.Duration // an idle connection is closed after about this; 0: not checked
	}{
		{name: "none", srv: &http.Server{}, wantIdle: DefaultIdleTimeout},
		{name: "its own", srv: &http.Server{IdleTimeout: 150 * time.Millisecond}, wantIdle: 150 * time.Millisecond, wantClose: 150 * time.Millisecond},
		{name: "read timeout stands in", srv: &http.Server{ReadTimeout: 150 * time.Millisecond}, wantClose: 150 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.srv.Handler = http.HandlerFunc(live)
			addr, stop := serve(t, tc.srv)
			if tc.wantClose > 0 {
				if waited := idleFor(t, addr); waited < tc.wantClose/2 || waited > 5*time.Second {
					t.Errorf("an idle connection was closed after %s, want about %s", waited, tc.wantClose)
				}
			}
			if err := stop(); err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
			if tc.srv.IdleTimeout != tc.wantIdle {
				t.Errorf("IdleTimeout = %s, want %s", tc.srv.IdleTimeout, tc.wantIdle)
			}
		})
	}
}

// idleFor sends one request on a keep-alive connection to addr, then
// returns how long the server kept the connection open without another.
func idleFor(t *testing.T, addr string) time.Duration {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	start := time.Now()
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("read on the idle connection: %v, want EOF", err)
	}
	return time.Since(start)
}

// TestServeFails: a serve that cannot start is Run's error.
func TestServeFails(t *testing.T) {
	refused := errors.New("address in use")
	err := Run(t.Context(), &http.Server{}, func() error { return refused }, time.Second)
	if !errors.Is(err, refused) {
		t.Errorf("Run = %v, want the serve error", err)
	}
}
