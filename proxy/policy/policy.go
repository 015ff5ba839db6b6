// Package policy enforces the pod's inbound authorization policy. An
// Enforcer follows mesh-controller's InboundPolicy stream for the proxy's
// pod (api/inbound/v1), compiles each policy it sends (proxy/authz) and
// publishes it with an atomic pointer swap; the inbound side asks it about
// each connection and request.
//
// # Life of a connection
//
//	pol, err := e.Admit(ctx, port, clientIP) // waits for a first policy, until the grace ends
//	if err != nil { close the connection }   // ErrNoPolicy: counted and logged by Admit
//	... detection, mesh TLS: the client's identity ...
//	c := e.Conn(pol, port, authz.Client{Addr: clientIP, ID: clientID})
//	c.AuthorizeTCP()         // opaque: once, before dialing the application
//	c.AuthorizeRequest(req)  // HTTP: per request (httpproxy.Authorizer)
//
// A request authorization lets through then passes the rate limit of its
// Server, if it has one (an HTTPLocalRateLimitPolicy): held back, it gets
// a *httpproxy.RateLimited, which the forwarders answer with 429 and
// Retry-After, counted in mesh_proxy_http_rate_limited_total{server,
// scope}. The limiters live in the compiled policy (authz.Limiter) and
// carry over to the next policy while the Server's limit is unchanged.
//
// A Conn decides once per policy: it caches its decision, with the
// counter it is counted in, next to the policy it was made with, so a
// request costs an atomic load, a pointer comparison and an atomic add
// until the controller sends a new policy, which the next request then
// sees without the connection being closed.
//
// # Concurrency
//
// Run follows the stream on one goroutine. Every other method is safe for
// concurrent use, and a Conn may serve concurrent HTTP/2 streams.
package policy

import (
	"github.com/mesh-dev/mesh/internal/backoff"

	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/proxy/authz"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// ErrNoPolicy is why a connection is refused, and the proxy not ready,
// while it holds no policy.
var ErrNoPolicy = errors.New("no inbound policy from the controller yet")

// errStreamEnded: the controller ended the stream without an error, which
// it does only when shutting down.
var errStreamEnded = errors.New("the controller ended the inbound policy stream")

// Defaults used where a Config field is zero.
const (
	DefaultMinBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff    = 5 * time.Second
	DefaultLogsPerSecond = 5
)

// Config configures an Enforcer. The zero value of a field not marked
// required means the default named on it.
type Config struct {
	// Client reaches the controller's InboundPolicy service. Required.
	Client inboundv1.InboundPolicyClient
	// Namespace and Pod name the proxy's pod. Required.
	Namespace, Pod string
	// TrustDomain is the mesh's, which the identity pattern "*" stands
	// for. Empty: "*" matches no identity.
	TrustDomain string
	// Grace is how long after New connections wait for a first policy
	// before they are refused; zero refuses them at once until one
	// arrives.
	Grace time.Duration
	// Metrics receives the decisions and the watch's state. Required.
	Metrics *metrics.Metrics
	// Log gets policy updates, stream errors, and denials (at most
	// LogsPerSecond lines of those a second). Nil discards.
	Log *slog.Logger
	// LogsPerSecond bounds the denial and audit lines; zero means
	// DefaultLogsPerSecond (5). Past it, lines are counted and the next
	// line logged says how many were left out.
	LogsPerSecond int
	// MinBackoff and MaxBackoff bound the wait between reconnects; zero
	// means DefaultMinBackoff (100ms) and DefaultMaxBackoff (5s).
	MinBackoff, MaxBackoff time.Duration
}

// Enforcer holds the pod's current policy and decides with it.
type Enforcer struct {
	cfg          Config
	log          *slog.Logger
	status       *metrics.PolicyStatus
	rateLimited  *serverCounters // by server and scope
	noRoute      *serverCounters // by server
	graceEnds    time.Time
	limiter      logLimiter // denials, audits, refusals for want of a policy
	rateLimitLog logLimiter // requests a rate limit held back
	// now reads the clock rate limits count with; tests set it before
	// any request.
	now func() time.Time

	cur       atomic.Pointer[authz.Policy] // nil until the first policy
	received  atomic.Pointer[time.Time]    // when cur was last set, for GET /policy
	first     chan struct{}                // closed when cur is first set
	firstOnce sync.Once
}

// New checks cfg and returns an Enforcer holding no policy; the grace
// starts now. Call Run to follow the controller.
func New(cfg Config) (*Enforcer, error) {
	switch {
	case cfg.Client == nil || cfg.Metrics == nil:
		return nil, errors.New("policy: Client and Metrics are required")
	case cfg.Namespace == "" || cfg.Pod == "":
		return nil, errors.New("policy: the pod's namespace and name are required")
	case cfg.Grace < 0 || cfg.MinBackoff < 0 || cfg.MaxBackoff < 0 || cfg.LogsPerSecond < 0:
		return nil, errors.New("policy: negative grace, backoff or log rate")
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.LogsPerSecond == 0 {
		cfg.LogsPerSecond = DefaultLogsPerSecond
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rl, err := newRateLimitMetrics(cfg.Metrics.Registry())
	if err != nil {
		return nil, err
	}
	nr, err := newNoRouteMetrics(cfg.Metrics.Registry())
	if err != nil {
		return nil, err
	}
	return &Enforcer{
		cfg:          cfg,
		log:          log,
		status:       cfg.Metrics.InboundPolicy(),
		rateLimited:  rl,
		noRoute:      nr,
		graceEnds:    time.Now().Add(cfg.Grace),
		limiter:      logLimiter{perSecond: cfg.LogsPerSecond},
		rateLimitLog: logLimiter{perSecond: 1},
		now:          time.Now,
		first:        make(chan struct{}),
	}, nil
}

// Policy returns the policy in force, nil before the first.
func (e *Enforcer) Policy() *authz.Policy { return e.cur.Load() }

// Ready returns nil once the proxy holds a policy, ErrNoPolicy before.
func (e *Enforcer) Ready() error {
	if e.cur.Load() == nil {
		return ErrNoPolicy
	}
	return nil
}

// Admit returns the policy a new connection to port from client is
// decided by. Before the first policy it waits for one until the grace
// ends; past it the connection is refused: Admit counts and logs that and
// returns ErrNoPolicy. It returns ctx's error if ctx ends first.
func (e *Enforcer) Admit(ctx context.Context, port uint16, client netip.Addr) (*authz.Policy, error) {
	if p := e.cur.Load(); p != nil {
		return p, nil
	}
	if wait := time.Until(e.graceEnds); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-e.first:
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if p := e.cur.Load(); p != nil {
		return p, nil
	}
	e.cfg.Metrics.TCPAuthz(metrics.AuthzKey{Decision: metrics.Deny}).Inc()
	e.logLimited(e.log.Warn, "inbound connection refused: no inbound policy from the controller yet",
		"client", client.String(), "port", port, "grace", e.cfg.Grace)
	return nil, ErrNoPolicy
}

// Run follows the controller's policy for the pod until ctx ends,
// reconnecting with jittered exponential backoff; the last policy stays
// in force while the controller is away.
func (e *Enforcer) Run(ctx context.Context) {
	bo := backoff.Backoff{Min: e.cfg.MinBackoff, Max: e.cfg.MaxBackoff}
	e.log.Info("watching the inbound policy", "namespace", e.cfg.Namespace, "pod", e.cfg.Pod, "grace", e.cfg.Grace)
	for {
		delivered, err := e.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if delivered {
			bo.Reset()
		}
		// Only the first failure of a run is a warning: a controller that
		// is down for long would otherwise log at every retry.
		level := slog.LevelDebug
		if !bo.Failing() {
			level = slog.LevelWarn
		}
		wait := bo.Next()
		msg := "inbound policy stream broke; keeping the last policy and reconnecting"
		if e.cur.Load() == nil {
			msg = "inbound policy stream broke before the first policy; reconnecting (inbound connections are refused once the grace ends)"
		}
		if status.Code(err) == codes.Unimplemented {
			level = slog.LevelWarn
			msg = "the controller does not serve the inbound policy (an older mesh-controller?); retrying"
		}
		e.log.Log(ctx, level, msg, "err", err, "retry_in", wait)
		if sleep(ctx, wait) != nil {
			return
		}
	}
}

// stream reads one Watch stream until it fails, applying each policy, and
// reports whether it applied any. WaitForReady: while the controller is
// unreachable the call waits for the connection, whose own backoff
// (controllerConnectParams) finds a controller that came back within
// seconds, instead of failing at once.
func (e *Enforcer) stream(ctx context.Context) (delivered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := e.cfg.Client.Watch(ctx, &inboundv1.WatchRequest{Namespace: e.cfg.Namespace, Pod: e.cfg.Pod}, grpc.WaitForReady(true))
	if err != nil {
		return false, err
	}
	for {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return delivered, errStreamEnded
		}
		if err != nil {
			return delivered, err
		}
		e.apply(msg)
		delivered = true
	}
}

// apply compiles msg and puts it in force.
func (e *Enforcer) apply(msg *inboundv1.PodPolicy) {
	// The previous policy's rate limiters carry over where a Server's
	// limit is unchanged. apply runs on Run's goroutine alone, so nothing
	// swaps cur between this load and the Swap below.
	pol, dropped := authz.Compile(msg, authz.Options{TrustDomain: e.cfg.TrustDomain, Previous: e.cur.Load()})
	if len(dropped) > 0 {
		e.log.Warn("the inbound policy has entries the proxy cannot use; they match no client",
			"revision", pol.Revision(), "dropped", errors.Join(dropped...).Error())
	}
	prev := e.cur.Swap(pol)
	now := time.Now()
	e.received.Store(&now)
	e.status.Updated()
	e.firstOnce.Do(func() { close(e.first) })
	attrs := []any{"revision", pol.Revision(), "servers", pol.Servers(), "default", pol.DefaultPolicy(),
		"audit", pol.Audit(), "probes", pol.Probes()}
	if prev == nil {
		e.log.Info("inbound policy received", attrs...)
		return
	}
	e.log.Info("inbound policy updated", append(attrs, "previous", prev.Revision())...)
}

// logLimited logs with log (e.log.Info, e.log.Warn) at most LogsPerSecond
// lines a second, saying how many were left out before.
func (e *Enforcer) logLimited(log func(string, ...any), msg string, args ...any) {
	ok, suppressed := e.limiter.allow(time.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed_before", suppressed)
	}
	log(msg, args...)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// logLimiter lets through perSecond lines per wall-clock second.
type logLimiter struct {
	perSecond int

	mu         sync.Mutex
	window     time.Time // the second being counted; guarded by mu
	n          int       // lines let through in it
	suppressed int       // lines held back since the last one let through
}

// allow reports whether a line may go out at now, and how many were held
// back since the last that did.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sec := now.Truncate(time.Second); !sec.Equal(l.window) {
		l.window, l.n = sec, 0
	}
	if l.n >= l.perSecond {
		l.suppressed++
		return false, 0
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
