// Package httpserver runs an http.Server for the life of a context: the
// serve-until-cancelled-then-drain loop every component's Run shares.
package httpserver

import (
	"context"
	"fmt"
	"time"
)

// Server is the part of *http.Server that Run drives.
type Server interface {
	Shutdown(context.Context) error
	Close() error
}

// Run calls serve (srv.Serve or srv.ServeTLS on a bound listener) until it
// fails or ctx is done; then it shuts srv down, letting requests in flight
// finish within grace before closing what is left. It returns nil after a
// clean shutdown by ctx.
func Run(ctx context.Context, srv Server, serve func() error, grace time.Duration) error {
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
