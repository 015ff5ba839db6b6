// Package graceful runs an http.Server until a context ends, then shuts it
// down the way Kubernetes expects on SIGTERM: stop accepting, finish the
// requests in flight within a grace period, close the rest.
package graceful

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// DefaultGrace is the grace period when none is given.
const DefaultGrace = 10 * time.Second

// ServeHTTP serves srv on ln until ctx ends, then shuts srv down, giving
// requests in flight up to grace (zero means DefaultGrace) before closing
// their connections. It returns nil after a shutdown, or the error that
// made srv stop on its own. It closes ln.
func ServeHTTP(ctx context.Context, ln net.Listener, srv *http.Server, grace time.Duration) error {
	if grace <= 0 {
		grace = DefaultGrace
	}
	shutdown := make(chan error, 1)
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
		defer cancel()
		err := srv.Shutdown(sctx)
		if errors.Is(err, context.DeadlineExceeded) {
			err = srv.Close() // the grace period is over: cut the stragglers
		}
		shutdown <- err
	})
	err := srv.Serve(ln)
	if !stop() {
		return <-shutdown
	}
	srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve %s: %w", ln.Addr(), err)
}
