// Package admin serves the probes of a demo component on its admin port
// (:9900 in the pod): /live always answers 200, /ready answers 200 while the
// component takes traffic and 503 before it listens and while it drains.
package admin

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Handler returns the probe mux. ready is called on every /ready request,
// from many goroutines at once.
func Handler(ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("live\n"))
	})
	return mux
}

// Serve answers probes on ln until ctx ends. Probes are quick, so it closes
// at once rather than draining.
func Serve(ctx context.Context, ln net.Listener, ready func() bool) error {
	srv := &http.Server{Handler: Handler(ready), ReadHeaderTimeout: 5 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
