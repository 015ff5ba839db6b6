package tcp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns both ends of a loopback TCP connection.
func pair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dialed.Close(); accepted.Close() })
	return dialed.(*net.TCPConn), accepted.(*net.TCPConn)
}

// prefixed replays head before reading conn, like detect.Conn.
type prefixed struct {
	net.Conn
	head []byte
}

func (p *prefixed) Buffered() []byte { return p.head }
func (p *prefixed) Raw() net.Conn    { return p.Conn }

func TestForwardHalfClose(t *testing.T) {
	client, proxyClient := pair(t)
	proxyUp, server := pair(t)
	type result struct {
		st  Stats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := Forward(context.Background(), &prefixed{Conn: proxyClient, head: []byte("head:")}, proxyUp, 0)
		done <- result{st, err}
	}()
	// The client sends and half-closes; the server reads to EOF, then
	// answers on the still-open other half.
	client.Write([]byte("request"))
	client.CloseWrite()
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "head:request" {
		t.Fatalf("server read %q, %v", got, err)
	}
	answer := bytes.Repeat([]byte("a"), 1<<20)
	server.Write(answer)
	server.CloseWrite()
	back, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(back, answer) {
		t.Fatalf("client read %d bytes, %v", len(back), err)
	}
	r := <-done
	if r.err != nil {
		t.Errorf("Forward: %v", r.err)
	}
	if want := (Stats{FromClient: 12, ToClient: 1 << 20}); r.st != want {
		t.Errorf("stats = %+v, want %+v", r.st, want)
	}
}

func TestForwardCancel(t *testing.T) {
	_, proxyClient := pair(t)
	proxyUp, _ := pair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := Forward(ctx, proxyClient, proxyUp, 0); done <- err }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Forward after cancel: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Forward did not return after cancel")
	}
}

func TestForwardResetAbortsBoth(t *testing.T) {
	client, proxyClient := pair(t)
	proxyUp, server := pair(t)
	done := make(chan struct{})
	go func() { Forward(context.Background(), proxyClient, proxyUp, 0); close(done) }()
	server.SetLinger(0)
	server.Close() // RST towards the proxy
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(client); err != nil {
		t.Logf("client saw %v", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Forward still running after the upstream reset")
	}
}

func TestForwardIdleTimeout(t *testing.T) {
	const idle = 100 * time.Millisecond
	tests := []struct {
		name string
		// talk runs on the client before it goes silent.
		talk func(t *testing.T, client, server *net.TCPConn)
	}{
		{name: "silent from the start"},
		{
			name: "one direction busy for several timeouts keeps the stream",
			talk: func(t *testing.T, client, server *net.TCPConn) {
				go io.Copy(io.Discard, server)
				for end := time.Now().Add(4 * idle); time.Now().Before(end); {
					if _, err := client.Write([]byte("x")); err != nil {
						t.Fatalf("write while active: %v", err)
					}
					time.Sleep(idle / 5)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, proxyClient := pair(t)
			proxyUp, server := pair(t)
			done := make(chan error, 1)
			go func() { _, err := Forward(context.Background(), proxyClient, proxyUp, idle); done <- err }()
			if tc.talk != nil {
				tc.talk(t, client, server)
			}
			silent := time.Now()
			select {
			case err := <-done:
				t.Fatalf("Forward ended before the idle timeout: %v", err)
			case <-time.After(idle / 2):
			}
			select {
			case err := <-done:
				if !errors.Is(err, ErrIdle) {
					t.Errorf("Forward: %v, want ErrIdle", err)
				}
				// talk sleeps idle/5 after its last byte.
				if d := time.Since(silent); d < idle*3/4 || d > 2*idle {
					t.Errorf("closed %s into the silence, want about %s", d, idle)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("idle stream still open")
			}
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(client); err != nil {
				t.Logf("client saw %v", err)
			}
		})
	}
}
