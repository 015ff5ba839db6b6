package payments

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/testdata/demo/demotest"
	"github.com/mesh-dev/mesh/testdata/demo/fault"
)

// start runs a payments server with cfg and returns its address.
func start(t testing.TB, cfg Config) string {
	t.Helper()
	return demotest.Serve(t, func(ctx context.Context, ln net.Listener) error {
		return Serve(ctx, ln, cfg)
	})
}

// dial opens a raw connection with a deadline so a broken server fails the
// test instead of hanging it.
func dial(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func TestConversation(t *testing.T) {
	addr := start(t, Config{})
	c, r := dial(t, addr)
	// One connection, several requests: malformed lines get ERR and the
	// connection keeps working.
	steps := []struct {
		send       string
		wantPrefix string
	}{
		{send: "PAY ord-1 100\n", wantPrefix: "OK tx-"},
		{send: "HELLO\n", wantPrefix: "ERR unknown command\n"},
		{send: "PAY ord-2 -1\n", wantPrefix: "ERR bad amount\n"},
		{send: "PAY ord/3 1\n", wantPrefix: "ERR bad order id\n"},
		{send: "PAY ord-4\r\n", wantPrefix: "ERR syntax: want PAY <order-id> <cents>\n"},
		{send: "PAY ord-5 2\r\n", wantPrefix: "OK tx-"},
	}
	for _, st := range steps {
		if _, err := io.WriteString(c, st.send); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", st.send, err)
		}
		if !strings.HasPrefix(got, st.wantPrefix) {
			t.Errorf("answer to %q = %q, want prefix %q", st.send, got, st.wantPrefix)
		}
	}
}

func TestPipelined(t *testing.T) {
	addr := start(t, Config{})
	c, r := dial(t, addr)
	io.WriteString(c, "PAY a 1\nPAY b 2\nnope\nPAY c 3\n")
	var got []string
	for range 4 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, line[:2])
	}
	if want := "OK OK ER OK"; strings.Join(got, " ") != want {
		t.Errorf("answers start %q, want %q", got, want)
	}
}

func TestClosesCleanly(t *testing.T) {
	tests := []struct {
		name string
		send string
		half bool // close the write side after sending
		want string
	}{
		{name: "line too long", send: "PAY " + strings.Repeat("9", 200) + "\n", want: "ERR line too long\n"},
		{name: "endless line", send: strings.Repeat("x", 100_000), want: "ERR line too long\n"},
		{name: "cut off by EOF", send: "PAY a 1", half: true, want: "ERR incomplete line\n"},
	}
	addr := start(t, Config{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, r := dial(t, addr)
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.half {
				c.(*net.TCPConn).CloseWrite()
			}
			got, err := r.ReadString('\n')
			if err != nil || got != tc.want {
				t.Fatalf("answer = %q, %v; want %q", got, err, tc.want)
			}
			// Then a clean end of stream, not a reset.
			if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
				t.Errorf("after the answer: %q, %v; want a clean EOF", rest, err)
			}
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	addr := start(t, Config{IdleTimeout: 50 * time.Millisecond})
	_, r := dial(t, addr)
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection: read = %v, want EOF", err)
	}
}

func TestClient(t *testing.T) {
	tests := []struct {
		name        string
		fault       fault.Fault
		down        bool
		orderID     string
		wantRefused string // reason of a *RefusedError
		wantDown    bool   // ErrUnavailable
	}{
		{name: "paid", orderID: "ord-1"},
		{name: "injected failure", fault: fault.Fault{FailRate: 1}, orderID: "ord-1", wantRefused: "unavailable"},
		{name: "server down", down: true, orderID: "ord-1", wantDown: true},
		{name: "bad order id is caught before sending", down: true, orderID: "a b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := demotest.ClosedAddr(t)
			if !tc.down {
				addr = start(t, Config{Fault: tc.fault})
			}
			c := &Client{Addr: addr}
			txid, err := c.Pay(t.Context(), tc.orderID, 1299)
			var refused *RefusedError
			switch {
			case tc.wantRefused != "":
				if !errors.As(err, &refused) || refused.Reason != tc.wantRefused {
					t.Errorf("Pay = %q, %v; want refused %q", txid, err, tc.wantRefused)
				}
			case tc.wantDown:
				if !errors.Is(err, ErrUnavailable) {
					t.Errorf("Pay = %q, %v; want ErrUnavailable", txid, err)
				}
			case strings.Contains(tc.orderID, " "):
				if !errors.Is(err, ErrBadOrderID) {
					t.Errorf("Pay = %q, %v; want ErrBadOrderID", txid, err)
				}
			case err != nil || !strings.HasPrefix(txid, "tx-"):
				t.Errorf("Pay = %q, %v; want a txid", txid, err)
			}
		})
	}
}

func TestClientHonorsContext(t *testing.T) {
	// The server is still asleep in the injected latency when the test
	// ends; a short grace period lets it stop without waiting for it.
	addr := start(t, Config{Fault: fault.Fault{Latency: time.Minute}, ShutdownGrace: 10 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	c := &Client{Addr: addr}
	if _, err := c.Pay(ctx, "o", 1); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Pay past its deadline = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
}

func TestLatency(t *testing.T) {
	addr := start(t, Config{Fault: fault.Fault{Latency: 50 * time.Millisecond}})
	c := &Client{Addr: addr}
	start := time.Now()
	if _, err := c.Pay(t.Context(), "o", 1); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("Pay took %s, want at least the injected 50ms", d)
	}
}

func TestGracefulShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	log, requested := demotest.Logged("payment requested")
	go func() {
		done <- Serve(ctx, ln, Config{Fault: fault.Fault{Latency: 200 * time.Millisecond}, Logger: log})
	}()
	_, idleR := dial(t, ln.Addr().String())
	busy, busyR := dial(t, ln.Addr().String())
	io.WriteString(busy, "PAY o 1\n")
	<-requested
	cancel()

	// The request in flight is answered, then both connections end.
	if got, err := busyR.ReadString('\n'); err != nil || !strings.HasPrefix(got, "OK ") {
		t.Errorf("request in flight at shutdown: %q, %v; want OK", got, err)
	}
	for name, r := range map[string]*bufio.Reader{"busy": busyR, "idle": idleR} {
		if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
			t.Errorf("%s connection after shutdown: %v, want EOF", name, err)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("Serve = %v", err)
	}
}

func TestShutdownGraceExpires(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	log, requested := demotest.Logged("payment requested")
	cfg := Config{Fault: fault.Fault{Latency: time.Hour}, ShutdownGrace: 50 * time.Millisecond, Logger: log}
	go func() { done <- Serve(ctx, ln, cfg) }()
	c, r := dial(t, ln.Addr().String())
	io.WriteString(c, "PAY o 1\n")
	<-requested
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running 5s after a 50ms grace period")
	}
	// The stuck request is told why, or at least the connection ends.
	if got, err := r.ReadString('\n'); err == nil && got != "ERR shutting down\n" {
		t.Errorf("stuck request at the end of the grace period got %q", got)
	}
}

func TestListenerClosedUnderneath(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := Serve(t.Context(), ln, Config{}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve on a closed listener = %v, want net.ErrClosed", err)
	}
}
