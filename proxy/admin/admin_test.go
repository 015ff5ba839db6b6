package admin

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestHandler(t *testing.T) {
	var ready, shutdowns atomic.Bool
	h := Handler(Config{
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("m 1\n")) }),
		Ready: func() error {
			if !ready.Load() {
				return errors.New("no inbound policy from the controller yet")
			}
			return nil
		},
		Shutdown: func() { shutdowns.Store(true) },
	})
	tests := []struct {
		name       string
		method     string
		path       string
		remote     string
		ready      bool
		wantCode   int
		wantBody   string
		wantShutdn bool
	}{
		{name: "metrics", method: "GET", path: "/metrics", wantCode: 200, wantBody: "m 1"},
		{name: "not ready says why", method: "GET", path: "/ready", wantCode: 503, wantBody: "not ready: no inbound policy from the controller yet"},
		{name: "ready", method: "GET", path: "/ready", ready: true, wantCode: 200, wantBody: "ready"},
		{name: "live", method: "GET", path: "/live", wantCode: 200, wantBody: "live"},
		{name: "shutdown from loopback", method: "POST", path: "/shutdown", remote: "127.0.0.1:5555", wantCode: 200, wantShutdn: true},
		{name: "shutdown from v6 loopback", method: "POST", path: "/shutdown", remote: "[::1]:5555", wantCode: 200, wantShutdn: true},
		{name: "shutdown from the network", method: "POST", path: "/shutdown", remote: "10.1.2.3:5555", wantCode: 403},
		{name: "shutdown by GET", method: "GET", path: "/shutdown", remote: "127.0.0.1:5555", wantCode: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ready.Store(tc.ready)
			shutdowns.Store(false)
			req := httptest.NewRequest(tc.method, tc.path, nil)
			if tc.remote != "" {
				req.RemoteAddr = tc.remote
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.wantCode {
				t.Errorf("code = %d, want %d", rec.Code, tc.wantCode)
			}
			if !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Errorf("body = %q, want it to contain %q", rec.Body, tc.wantBody)
			}
			if shutdowns.Load() != tc.wantShutdn {
				t.Errorf("shutdown called = %v, want %v", shutdowns.Load(), tc.wantShutdn)
			}
		})
	}
}
