package admin

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestProbes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ready atomic.Bool
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, ready.Load, nil) }()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	tests := []struct {
		name     string
		ready    bool
		path     string
		wantCode int
		wantBody string
	}{
		{name: "not ready yet", path: "/ready", wantCode: 503, wantBody: "not ready\n"},
		{name: "live before ready", path: "/live", wantCode: 200, wantBody: "live\n"},
		{name: "ready", ready: true, path: "/ready", wantCode: 200, wantBody: "ready\n"},
		{name: "unknown path", ready: true, path: "/metrics", wantCode: 404, wantBody: "404 page not found\n"},
		{name: "no fault without a switch", ready: true, path: "/fault", wantCode: 404, wantBody: "404 page not found\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ready.Store(tc.ready)
			code, body := get(tc.path)
			if code != tc.wantCode || body != tc.wantBody {
				t.Errorf("GET %s = %d %q, want %d %q", tc.path, code, body, tc.wantCode, tc.wantBody)
			}
		})
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
