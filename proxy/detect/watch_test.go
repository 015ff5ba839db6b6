package detect

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestWatcher: a Watcher's Peek decides on its own as Peek does; stopped
// from another goroutine, it keeps every byte the client sent, even one
// it was reading, and leaves the connection readable with no deadline. A
// Stop after Peek returned changes nothing.
func TestWatcher(t *testing.T) {
	hello := clientHello(3)
	tests := []struct {
		name string
		// sent before Stop; "rest" is sent after Peek returned.
		before, rest string
		stopAfter    time.Duration // 0: no Stop until Peek returned
		want         Result
	}{
		{name: "decides on its own", before: "GET / HTTP/1.1\r\n\r\n", want: Result{HTTP1, "request-line"}},
		{name: "a ClientHello", before: string(hello), rest: "more", want: Result{TLS, "client-hello"}},
		{name: "stopped while silent", rest: "+OK", stopAfter: 30 * time.Millisecond, want: Result{Opaque, "timeout"}},
		{name: "stopped mid-request-line", before: "GET /slow", rest: " HTTP/1.1\r\n\r\n",
			stopAfter: 50 * time.Millisecond, want: Result{Opaque, "timeout"}},
		{name: "stopped mid-ClientHello", before: string(hello[:3]), rest: string(hello[3:]),
			stopAfter: 50 * time.Millisecond, want: Result{Opaque, "timeout"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			if tc.before != "" {
				if _, err := client.Write([]byte(tc.before)); err != nil {
					t.Fatal(err)
				}
			}
			w := NewWatcher(server)
			if tc.stopAfter > 0 {
				time.AfterFunc(tc.stopAfter, w.Stop)
			}
			start := time.Now()
			res, conn, err := w.Peek(t.Context(), time.Minute)
			if err != nil {
				t.Fatalf("Peek: %v", err)
			}
			if took := time.Since(start); took < tc.stopAfter || took > 5*time.Second {
				t.Errorf("Peek returned after %v; want it stopped after %v", took, tc.stopAfter)
			}
			if diff := cmp.Diff(tc.want, res); diff != "" {
				t.Errorf("result mismatch (-want +got):\n%s", diff)
			}
			w.Stop() // too late: must not touch the connection
			sent := send(client, []byte(tc.rest), 0, 0)
			got, err := io.ReadAll(conn) // fails on a deadline left behind
			if err != nil {
				t.Fatalf("reading after Peek: %v", err)
			}
			if want := tc.before + tc.rest; string(got) != want {
				t.Errorf("read %q after Peek, want %q", got, want)
			}
			if err := <-sent; err != nil {
				t.Errorf("client write: %v", err)
			}
		})
	}
}

func TestWatcherTimeout(t *testing.T) {
	_, server := tcpPair(t)
	res, _, err := NewWatcher(server).Peek(t.Context(), 20*time.Millisecond)
	if err != nil || res != (Result{Opaque, "timeout"}) {
		t.Errorf("Peek = %v, %v; want a timeout and no error", res, err)
	}
}

func TestWatcherClientLeaves(t *testing.T) {
	client, server := tcpPair(t)
	client.Close()
	if _, conn, err := NewWatcher(server).Peek(t.Context(), 0); !errors.Is(err, ErrClosed) || conn != nil {
		t.Errorf("Peek = %v, %v; want %v and no Conn", conn, err, ErrClosed)
	}
}

func TestWatcherContextCanceled(t *testing.T) {
	_, server := tcpPair(t)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, _, err := NewWatcher(server).Peek(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Peek error = %v, want %v", err, context.Canceled)
	}
}

// TestWatcherGoesOn: watching a Conn of an earlier Peek classifies its
// bytes with the rest.
func TestWatcherGoesOn(t *testing.T) {
	client, server := tcpPair(t)
	client.Write([]byte("GET /x"))
	_, first, err := Peek(t.Context(), server, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	sent := send(client, []byte(" HTTP/1.1\r\n\r\n"), 0, 0)
	res, conn, err := NewWatcher(first).Peek(t.Context(), time.Minute)
	if err != nil || res != (Result{HTTP1, "request-line"}) {
		t.Fatalf("Peek = %v, %v; want the request line", res, err)
	}
	if got, err := io.ReadAll(conn); err != nil || string(got) != "GET /x HTTP/1.1\r\n\r\n" {
		t.Errorf("read %q, %v; want the request once", got, err)
	}
	if err := <-sent; err != nil {
		t.Errorf("client write: %v", err)
	}
}

// TestPeekGoesOn: given a Conn of an earlier Peek that timed out undecided,
// Peek classifies its bytes with the rest, and replays them all once.
func TestPeekGoesOn(t *testing.T) {
	hello := clientHello(1)
	client, server := tcpPair(t)
	client.Write(hello[:2])
	res, first, err := Peek(t.Context(), server, 30*time.Millisecond)
	if err != nil || res != (Result{Opaque, "timeout"}) {
		t.Fatalf("first Peek = %v, %v; want a timeout", res, err)
	}
	if !PartialHello(first.Buffered()) {
		t.Errorf("PartialHello(%q) = false after two bytes of a ClientHello", first.Buffered())
	}
	sent := send(client, hello[2:], 0, 0)
	res, conn, err := Peek(t.Context(), first, time.Minute)
	if err != nil || res != (Result{TLS, "client-hello"}) {
		t.Fatalf("second Peek = %v, %v; want the ClientHello", res, err)
	}
	if conn.Raw() != server {
		t.Error("the second Peek's Conn wraps the first one instead of the connection")
	}
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != string(hello) {
		t.Errorf("read %q, %v; want the ClientHello once", got, err)
	}
	if err := <-sent; err != nil {
		t.Errorf("client write: %v", err)
	}
}

func TestPartialHello(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{in: "", want: false},
		{in: "\x16", want: true},
		{in: "\x16\x03\x01\x02", want: true},
		{in: string(clientHello(3)), want: false}, // decided: no longer partial
		{in: "\x16\x02", want: false},             // not TLS
		{in: "GET", want: false},
	} {
		if got := PartialHello([]byte(tc.in)); got != tc.want {
			t.Errorf("PartialHello(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
