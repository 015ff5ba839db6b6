// Package admin serves the admin port of a demo component (:9900 in the
// pod): /live always answers 200, /ready answers 200 while the component
// takes traffic and 503 before it listens and while it drains, and /fault
// reads and changes the fault the component injects (see faultAPI).
package admin

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/mesh-dev/mesh/testdata/demo/fault"
)

// Handler returns the admin mux. ready is called on every /ready request,
// from many goroutines at once. faults is the component's fault, served on
// GET and PUT /fault; nil (loadgen, which injects nothing) leaves /fault
// unrouted.
func Handler(ready func() bool, faults *fault.Switch) http.Handler {
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
	if faults != nil {
		api := faultAPI{faults: faults}
		mux.HandleFunc("GET /fault", api.get)
		mux.HandleFunc("PUT /fault", api.put)
	}
	return mux
}

// Serve answers Handler(ready, faults) on ln until ctx ends. Admin
// requests are quick, so it closes at once rather than draining.
func Serve(ctx context.Context, ln net.Listener, ready func() bool, faults *fault.Switch) error {
	srv := &http.Server{Handler: Handler(ready, faults), ReadHeaderTimeout: 5 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
