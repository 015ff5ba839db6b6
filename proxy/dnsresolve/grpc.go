package dnsresolve

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc/resolver"

	"github.com/mesh-dev/mesh/internal/backoff"
)

// Scheme is the gRPC target scheme a Builder serves by default, as in
// "meshdns:///mesh-controller.mesh-system.svc.cluster.local.:8086".
const Scheme = "meshdns"

// DefaultMinResolveInterval is the default for
// BuilderConfig.MinResolveInterval.
const DefaultMinResolveInterval = 5 * time.Second

// maxRetryInterval caps the backoff between failed resolutions.
const maxRetryInterval = 2 * time.Minute

// BuilderConfig configures a Builder. The zero value is usable.
type BuilderConfig struct {
	// Scheme is the target scheme the Builder serves. Empty means Scheme.
	Scheme string
	// DefaultPort is used for targets without a port. Empty means targets
	// must have one.
	DefaultPort string
	// MinResolveInterval is the least time between a resolution and one
	// that gRPC asks for with ResolveNow, which it does after every failed
	// connection attempt. It is also the first retry delay after a failed
	// resolution, doubling up to two minutes. Zero means
	// DefaultMinResolveInterval.
	MinResolveInterval time.Duration
}

// Builder is a gRPC resolver.Builder that resolves targets with a Resolver
// and follows their TTLs. It is safe for concurrent use.
type Builder struct {
	ctx context.Context
	res *Resolver
	cfg BuilderConfig
}

// NewBuilder returns a Builder that looks names up with res. ctx bounds the
// life of every resolver it builds: they stop when it ends, as well as when
// gRPC closes them. Pass it to grpc.WithResolvers.
func NewBuilder(ctx context.Context, res *Resolver, cfg BuilderConfig) *Builder {
	cfg.Scheme = orDefault(cfg.Scheme, Scheme)
	cfg.MinResolveInterval = orDefault(cfg.MinResolveInterval, DefaultMinResolveInterval)
	return &Builder{ctx: ctx, res: res, cfg: cfg}
}

// Scheme returns the scheme of the targets the Builder resolves.
func (b *Builder) Scheme() string { return b.cfg.Scheme }

// Build starts resolving target, whose endpoint is host:port, in a
// goroutine that Close stops. It fails if the target cannot be parsed.
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	if target.URL.Host != "" {
		return nil, fmt.Errorf("dnsresolve: target %q: choosing a DNS server in the authority is not supported",
			target.URL.String())
	}
	host, port, err := splitTarget(target.Endpoint(), b.cfg.DefaultPort)
	if err != nil {
		return nil, fmt.Errorf("dnsresolve: target %q: %w", target.URL.String(), err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	w := &watcher{
		res:         b.res,
		host:        host,
		port:        port,
		cc:          cc,
		minInterval: b.cfg.MinResolveInterval,
		cancel:      cancel,
		kick:        make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	go w.run(ctx)
	return w, nil
}

// splitTarget parses a target endpoint into a host to look up and a port.
func splitTarget(endpoint, defaultPort string) (string, uint16, error) {
	host, portStr, err := net.SplitHostPort(endpoint)
	if err != nil {
		if defaultPort == "" {
			return "", 0, fmt.Errorf("want host:port: %w", err)
		}
		// No port, or a bare IPv6 literal: try it whole with the default.
		host, portStr = endpoint, defaultPort
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("port %q is not a number from 1 to 65535", portStr)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if _, err := normalizeName(host); err != nil {
			return "", 0, fmt.Errorf("host %q: %w", host, err)
		}
	}
	return host, uint16(port), nil
}

// watcher is the resolver.Resolver for one target. Its run goroutine does
// every lookup and every call to cc; ResolveNow and Close only signal it.
type watcher struct {
	res         *Resolver
	host        string
	port        uint16
	cc          resolver.ClientConn
	minInterval time.Duration
	cancel      context.CancelFunc
	kick        chan struct{} // ResolveNow requests; capacity 1 merges a burst
	done        chan struct{} // closed when run returns
}

// ResolveNow asks for a fresh resolution, no sooner than MinResolveInterval
// after the last one. It does not block.
func (w *watcher) ResolveNow(resolver.ResolveNowOptions) {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Close stops the watcher and waits for its goroutine, so that it makes no
// calls to the ClientConn once Close returns.
func (w *watcher) Close() {
	w.cancel()
	<-w.done
}

// watchState is what run remembers between resolutions.
type watchState struct {
	reported []netip.Addr // sorted; the addresses gRPC has now
	// retry spaces failed resolutions and counts them.
	retry backoff.Backoff
}

// newState starts a watch with nothing reported. Failed resolutions are
// retried after MinResolveInterval, doubling up to maxRetryInterval, and
// without jitter: each proxy's retries start when its own cached answer
// runs out, which already spreads a cluster's proxies, and the exact
// schedule keeps MinResolveInterval a true lower bound.
func (w *watcher) newState() watchState {
	return watchState{retry: backoff.Backoff{Min: w.minInterval, Max: maxRetryInterval, Jitter: -1}}
}

func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	st := w.newState()
	fresh := false
	for {
		last := time.Now()
		wait := w.resolve(ctx, &st, fresh)
		var ok bool
		if fresh, ok = w.sleep(ctx, last, wait); !ok {
			return
		}
	}
}

// resolve looks the host up once and tells gRPC. It returns how long to
// wait before the next resolution; zero means only when asked.
func (w *watcher) resolve(ctx context.Context, st *watchState, fresh bool) time.Duration {
	addrs, ttl, err := w.res.lookup(ctx, w.host, fresh)
	if ctx.Err() != nil {
		return 0
	}
	if err == nil {
		sorted := slices.SortedFunc(slices.Values(addrs), netip.Addr.Compare)
		// gRPC needs no update for the same set in another order (resolver
		// package docs), but does after an error, to leave its failure
		// state.
		if st.retry.Failing() || !slices.Equal(sorted, st.reported) {
			err = w.cc.UpdateState(resolver.State{Addresses: w.addresses(addrs)})
		}
		if err == nil {
			st.reported = sorted
			st.retry.Reset()
			return ttl
		}
		// The balancer rejected the state: offer it again after a backoff
		// rather than a whole TTL (resolver.ClientConn.UpdateState docs).
		ttl = 0
	} else {
		// gRPC keeps the addresses it has; a balancer with none fails
		// RPCs with this error.
		w.cc.ReportError(err)
	}
	// A negative answer is cached for ttl, so asking sooner is pointless.
	return max(ttl, st.retry.Next())
}

func (w *watcher) addresses(addrs []netip.Addr) []resolver.Address {
	out := make([]resolver.Address, len(addrs))
	for i, a := range addrs {
		out[i] = resolver.Address{Addr: netip.AddrPortFrom(a, w.port).String()}
	}
	return out
}

// sleep waits until wait has passed since last (forever if wait is zero),
// or less when ResolveNow asks, but at least minInterval since last. It
// reports whether the next lookup should skip the cache, and false for ok
// when ctx ends.
func (w *watcher) sleep(ctx context.Context, last time.Time, wait time.Duration) (fresh, ok bool) {
	var (
		due    time.Time
		timer  *time.Timer
		timerC <-chan time.Time // nil, so never ready, until due is set
	)
	setDue := func(t time.Time) {
		due = t
		if timer == nil {
			timer = time.NewTimer(time.Until(t))
			timerC = timer.C
		} else {
			timer.Reset(time.Until(t))
		}
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	if wait > 0 {
		setDue(last.Add(wait))
	}
	for {
		select {
		case <-ctx.Done():
			return false, false
		case <-timerC:
			return fresh, true
		case <-w.kick:
			if fresh {
				continue
			}
			// gRPC asks after a failed connection: the cached addresses
			// may be stale before their TTL ends, so skip the cache.
			fresh = true
			if soonest := last.Add(w.minInterval); due.IsZero() || soonest.Before(due) {
				setDue(soonest)
			}
		}
	}
}
