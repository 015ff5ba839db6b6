package tcp

import (
	"bytes"
	"context"
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
		st, err := Forward(context.Background(), &prefixed{Conn: proxyClient, head: []byte("head:")}, proxyUp)
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
	go func() { _, err := Forward(ctx, proxyClient, proxyUp); done <- err }()
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
	go func() { Forward(context.Background(), proxyClient, proxyUp); close(done) }()
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
