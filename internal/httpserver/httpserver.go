// Package httpserver runs an http.Server for the life of a context: the
// serve-until-cancelled-then-drain loop every component's Run shares.
package httpserver

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// DefaultIdleTimeout is the idle timeout Run gives a server that sets
// none: how long a keep-alive connection may wait for its next request.
// Without one, net/http keeps such a connection for as long as the client
// likes, and every pod that can reach the port can hold as many as it
// opens.
const DefaultIdleTimeout = 60 * time.Second

// Run calls serve (srv.Serve or srv.ServeTLS on a bound listener) until it
// fails or ctx is done; then it shuts srv down, letting requests in flight
// finish within grace before closing what is left. It returns nil after a
// clean shutdown by ctx. A srv with neither IdleTimeout nor ReadTimeout
// (which net/http uses for idle connections in its place) gets
// DefaultIdleTimeout before it serves.
func Run(ctx context.Context, srv *http.Server, serve func() error, grace time.Duration) error {
	if srv.IdleTimeout == 0 && srv.ReadTimeout == 0 {
		srv.IdleTimeout = DefaultIdleTimeout
	}
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if err != nil {
		srv.Close()
		err = fmt.Errorf("shutdown: %w", err)
	}
	<-errc // http.ErrServerClosed
	return err
}
