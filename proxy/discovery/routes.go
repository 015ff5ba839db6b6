package discovery

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/internal/backoff"
	"github.com/mesh-dev/mesh/proxy/balance"
	"github.com/mesh-dev/mesh/proxy/route"
)

// Routes returns the destination's route table: the last table the
// controller streamed for the authority that compiled (docs/traffic.md
// 2.4). It is nil when there is none: the controller serves no routes
// (UNIMPLEMENTED), the authority is not a Service port (NOT_FOUND, a pod
// IP for one), no table came yet, or none compiled. A Service with no
// route has a table that is Empty. Either way the request goes as Get
// alone says. The table is immutable and replaced whole by the next one;
// the call is one atomic load.
func (d *Destination) Routes() *route.Table { return d.routes.Load() }

// followRoutes keeps the destination's Routes stream open until ctx ends,
// the same context as its Get stream, so that eviction or a NOT_FOUND of
// Get ends both. Called on its own goroutine.
//
// Every table replaces the last one. While the stream is broken the last
// good table keeps serving, and the stream is opened again with the
// backoff of the Get stream. NOT_FOUND, INVALID_ARGUMENT and UNIMPLEMENTED
// are answers, not failures: the destination has no routes, and the
// controller is asked again only after NotFoundTTL, so that a pod IP or
// a controller without routes (an older one, or a cluster without the
// Gateway API) costs one call per NotFoundTTL, not one per request or per
// backoff.
func (d *Destination) followRoutes(ctx context.Context) {
	// A Get waiting for the first answer must not wait for a stream that
	// ended.
	defer d.routesAnswered()
	c := d.cache
	bo := backoff.Backoff{Min: c.cfg.MinBackoff, Max: c.cfg.MaxBackoff}
	exhausted := false // as in follow
	for {
		delivered, err := d.routesStream(ctx)
		if ctx.Err() != nil {
			return
		}
		if delivered {
			bo.Reset()
			exhausted = false
		}
		var wait time.Duration
		switch code := status.Code(err); code {
		case codes.NotFound, codes.InvalidArgument, codes.Unimplemented:
			d.noRoutes(err)
			bo.Reset() // the controller answered
			exhausted = false
			wait = c.cfg.NotFoundTTL
		default:
			level := slog.LevelDebug
			if !bo.Failing() {
				level = slog.LevelWarn
			}
			if code != codes.ResourceExhausted || exhausted {
				wait = bo.Next()
			}
			exhausted = code == codes.ResourceExhausted
			c.log.Log(ctx, level, "routes stream broke; keeping the last route table and reconnecting",
				"authority", d.authority, "err", err, "retry_in", wait)
			// Get waits through a failure only while the Get stream has
			// not answered either: the controller is starting, and both
			// answers are likely to come together. When endpoints are
			// there, a Routes stream that fails would only delay the
			// destination's first requests.
			if signalled(d.ready) {
				d.routesAnswered()
			}
		}
		if sleep(ctx, wait) != nil {
			return
		}
	}
}

// routesStream reads one Routes stream until it fails, applying its
// tables, and reports whether it received any. WaitForReady as in stream:
// a controller that comes back is asked again as soon as the connection
// finds it.
func (d *Destination) routesStream(ctx context.Context) (delivered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := d.cache
	s, err := c.cfg.Client.Routes(ctx, &destinationv1.GetDestinationRequest{
		Authority:        d.authority,
		ContextNamespace: c.cfg.ContextNamespace,
	}, grpc.WaitForReady(true))
	if err != nil {
		return false, err
	}
	c.metrics.routeStreamOpened()
	defer c.metrics.routeStreamClosed()
	for {
		t, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return delivered, errStreamEnded
		}
		if err != nil {
			return delivered, err
		}
		delivered = true
		d.applyRoutes(t)
	}
}

// applyRoutes compiles a table and makes it the destination's. A table
// that does not compile is refused and the last good one stays: the
// controller checks the API's invariants before it sends, so this is a
// proxy older or stricter than its controller, and serving the last table
// it understood is better than dropping every route.
func (d *Destination) applyRoutes(t *destinationv1.RouteTable) {
	c := d.cache
	compiled, err := route.Compile(t)
	if err != nil {
		c.log.Warn("refusing a route table that does not compile; keeping the last good one",
			"authority", d.authority, "version", t.GetVersion(), "err", err)
		c.metrics.routeTable(tableRefused)
	} else {
		d.setRoutes(compiled)
		c.log.Debug("route table", "authority", d.authority, "version", t.GetVersion(),
			"http_rules", len(t.GetHttpRules()), "grpc_rules", len(t.GetGrpcRules()))
		c.metrics.routeTable(tableApplied)
	}
	d.routesAnswered()
}

// noRoutes records an answer that the destination has no routes.
func (d *Destination) noRoutes(err error) {
	c := d.cache
	d.setRoutes(nil)
	if status.Code(err) == codes.Unimplemented && c.unimplementedLogged.CompareAndSwap(false, true) {
		// Once per cache: it is the controller's, not the destination's.
		c.log.Info("the controller serves no routes; requests go as addressed", "err", err)
	}
	c.log.Debug("no routes for the destination",
		"authority", d.authority, "err", err, "ask_again_in", c.cfg.NotFoundTTL)
	d.routesAnswered()
}

// setRoutes makes t the destination's table, and its failure accrual
// the balancer's, unless the destination was closed or found not to exist
// meanwhile: those clear the table for good. A nil table, or one without
// failure accrual, gives the balancer the cache's own again.
func (d *Destination) setRoutes(t *route.Table) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.NotFound() {
		return
	}
	d.routes.Store(t)
	d.setAccrual(t.FailureAccrual())
}

// setAccrual tunes the balancer by a Service's failure accrual
// (balancer.mesh.dev/*, docs/traffic.md 3.6), in place: endpoints keep
// their state. Called with d.mu held, which orders the changes.
func (d *Destination) setAccrual(fa route.FailureAccrual) {
	want := accrualOf(d.cache.cfg.Balance.FailureAccrual(), fa)
	if want == d.accrual {
		return
	}
	// route.Compile refuses backoffs in the wrong order and accrualOf
	// widens the one a table leaves to the default, so this is a bug:
	// the balancer keeps what it had.
	if err := d.bal.SetFailureAccrual(want); err != nil {
		d.cache.log.Error("balancer refused a failure accrual", "authority", d.authority, "failure_accrual", fa, "err", err)
		return
	}
	d.accrual = want
	d.cache.log.Debug("balancer failure accrual", "authority", d.authority, "max_failures", want.MaxFailures,
		"min_backoff", want.MinBackoff, "max_backoff", want.MaxBackoff)
}

// accrualOf is the balancer's failure accrual for a table's fa: base,
// the cache's own (Config.Balance), with what fa sets. Disabled is a
// negative MaxFailures. A backoff fa sets alone may cross the other's
// value in base: the other then moves to meet it, so that a Service that
// asks for a first ejection of 5 minutes gets 5 minutes, not a refusal
// for a maximum of 1.
func accrualOf(base balance.FailureAccrual, fa route.FailureAccrual) balance.FailureAccrual {
	out := base
	if fa.Disabled {
		out.MaxFailures = -1
		return out
	}
	if fa.MaxFailures > 0 {
		out.MaxFailures = fa.MaxFailures
	}
	if fa.MinBackoff > 0 {
		out.MinBackoff = fa.MinBackoff
	}
	if fa.MaxBackoff > 0 {
		out.MaxBackoff = fa.MaxBackoff
	}
	lo, hi := cmp.Or(out.MinBackoff, balance.DefaultMinBackoff), cmp.Or(out.MaxBackoff, balance.DefaultMaxBackoff)
	switch {
	case lo <= hi:
	case fa.MaxBackoff == 0:
		out.MaxBackoff = lo
	case fa.MinBackoff == 0:
		out.MinBackoff = hi
	}
	return out
}

// routesAnswered releases the Gets waiting for the Routes stream's first
// answer.
func (d *Destination) routesAnswered() {
	d.routesOnce.Do(func() { close(d.routesReady) })
}
