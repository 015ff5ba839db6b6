package graceful

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestShutdown(t *testing.T) {
	tests := []struct {
		name      string
		work      time.Duration // how long the request in flight takes
		grace     time.Duration
		wantReply bool // whether it is answered, or cut off
	}{
		{name: "finishes within grace", work: 100 * time.Millisecond, grace: 5 * time.Second, wantReply: true},
		{name: "cut off after grace", work: time.Hour, grace: 100 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t)
			started := make(chan struct{})
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				select {
				case <-time.After(tc.work):
					io.WriteString(w, "done")
				case <-r.Context().Done():
				}
			})}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- ServeHTTP(ctx, ln, srv, tc.grace) }()

			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			reply := make(chan error, 1)
			go func() {
				resp, err := (&http.Client{Transport: tr}).Get("http://" + ln.Addr().String())
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				reply <- err
			}()
			<-started
			cancel()
			if err := <-reply; (err == nil) != tc.wantReply {
				t.Errorf("request in flight at shutdown: err = %v, want an answer: %v", err, tc.wantReply)
			}
			if err := <-done; err != nil {
				t.Errorf("ServeHTTP = %v", err)
			}
		})
	}
}

func TestServeError(t *testing.T) {
	ln := listen(t)
	ln.Close()
	if err := ServeHTTP(t.Context(), ln, &http.Server{}, 0); err == nil {
		t.Error("ServeHTTP on a closed listener = nil, want an error")
	}
}
