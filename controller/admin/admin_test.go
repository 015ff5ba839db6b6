package admin

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRun(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Inc()
	var ready atomic.Bool

	ctx, cancel := context.WithCancel(t.Context())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Addr: "127.0.0.1:0", Gatherer: reg, OnListen: func(a net.Addr) { addr <- a },
			Ready: func() error {
				if !ready.Load() {
					return errors.New("waiting for the cache")
				}
				return nil
			},
		})
	}()
	base := "http://" + (<-addr).String()

	tests := []struct {
		name     string
		path     string
		ready    bool
		wantCode int
		wantBody string
	}{
		{name: "not ready says why", path: "/ready", wantCode: http.StatusServiceUnavailable, wantBody: "not ready: waiting for the cache\n"},
		{name: "ready", path: "/ready", ready: true, wantCode: http.StatusOK, wantBody: "ready\n"},
		{name: "live", path: "/live", wantCode: http.StatusOK, wantBody: "live\n"},
		{name: "metrics", path: "/metrics", wantCode: http.StatusOK, wantBody: "test_things_total 1\n"},
		{name: "unknown", path: "/shutdown", wantCode: http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ready.Store(tc.ready)
			resp, err := http.Get(base + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tc.wantCode, tc.wantBody)
			}
		})
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
}

// TestIdleConnectionClosed: a keep-alive connection that sends no next
// request is closed after the idle timeout.
func TestIdleConnectionClosed(t *testing.T) {
	const idle = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Addr: "127.0.0.1:0", Gatherer: prometheus.NewRegistry(), Ready: func() error { return nil },
			OnListen: func(a net.Addr) { addr <- a }, IdleTimeout: idle,
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	}()
	c, err := net.Dial("tcp", (<-addr).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /live HTTP/1.1\r\nHost: admin\r\n\r\n")
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
	if waited := time.Since(start); waited < idle/2 || waited > 5*time.Second {
		t.Errorf("closed after %s idle, want about %s", waited, idle)
	}
}
