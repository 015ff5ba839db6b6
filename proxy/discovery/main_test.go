package discovery

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/proxy/balance"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeController stands in for mesh-controller's destination service,
// whose own tests cover the Kubernetes side. It answers each new stream as
// set for its authority, then forwards what the test pushes. A Get stream
// for an authority with no answer set stays open and silent: a controller
// that does not answer. A Routes stream for an authority with no answer
// set fails UNIMPLEMENTED, as a controller without routes does. Safe for
// concurrent use.
type fakeController struct {
	destinationv1.UnimplementedDestinationServer

	mu      sync.Mutex
	answers map[string]answer
	streams map[string][]*fakeStream[*destinationv1.Update] // open Get streams by authority
	gets    map[string]int                                  // Get streams ever opened by authority
	lastReq *destinationv1.GetDestinationRequest            // of Get

	routeAnswers map[string]routeAnswer
	routeStreams map[string][]*fakeStream[*destinationv1.RouteTable] // open Routes streams by authority
	routeCalls   map[string]int                                      // Routes calls by authority, answered or not
	lastRouteReq *destinationv1.GetDestinationRequest

	changed chan struct{} // closed and replaced when streams or calls change
}

// answer is how the fake starts a new Get stream.
type answer struct {
	// updates are sent first, in order.
	updates []*destinationv1.Update
	// err, if set, ends the stream after updates.
	err error
}

// routeAnswer is how the fake starts a new Routes stream.
type routeAnswer struct {
	// tables are sent first, in order.
	tables []*destinationv1.RouteTable
	// err, if set, ends the stream after tables.
	err error
}

// fakeStream is one open stream of the fake, of updates or of tables.
type fakeStream[M any] struct {
	send chan M
	end  chan error
}

func newFakeStream[M any]() *fakeStream[M] {
	return &fakeStream[M]{send: make(chan M, 16), end: make(chan error, 1)}
}

// serve sends first, then ends with err if it is set, and otherwise sends
// what the test pushes until it ends the stream or the client goes.
func (s *fakeStream[M]) serve(ctx context.Context, first []M, err error, send func(M) error) error {
	for _, m := range first {
		if err := send(m); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	for {
		select {
		case m := <-s.send:
			if err := send(m); err != nil {
				return err
			}
		case err := <-s.end:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func newFakeController() *fakeController {
	return &fakeController{
		answers:      map[string]answer{},
		streams:      map[string][]*fakeStream[*destinationv1.Update]{},
		gets:         map[string]int{},
		routeAnswers: map[string]routeAnswer{},
		routeStreams: map[string][]*fakeStream[*destinationv1.RouteTable]{},
		routeCalls:   map[string]int{},
		changed:      make(chan struct{}),
	}
}

// Get implements destinationv1.DestinationServer.
func (f *fakeController) Get(req *destinationv1.GetDestinationRequest, srv grpc.ServerStreamingServer[destinationv1.Update]) error {
	a := req.GetAuthority()
	s := newFakeStream[*destinationv1.Update]()
	f.mu.Lock()
	ans := f.answers[a] // none: silent
	f.gets[a]++
	f.lastReq = req
	f.streams[a] = append(f.streams[a], s)
	f.notifyLocked()
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.streams[a] = dropStream(f.streams[a], s)
		f.notifyLocked()
	}()
	return s.serve(srv.Context(), ans.updates, ans.err, srv.Send)
}

// Routes implements destinationv1.DestinationServer.
func (f *fakeController) Routes(req *destinationv1.GetDestinationRequest, srv grpc.ServerStreamingServer[destinationv1.RouteTable]) error {
	a := req.GetAuthority()
	s := newFakeStream[*destinationv1.RouteTable]()
	f.mu.Lock()
	ans, ok := f.routeAnswers[a]
	f.routeCalls[a]++
	f.lastRouteReq = req
	if ok {
		f.routeStreams[a] = append(f.routeStreams[a], s)
	}
	f.notifyLocked()
	f.mu.Unlock()
	if !ok {
		return status.Error(codes.Unimplemented, "fake: this controller serves no routes")
	}
	defer func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.routeStreams[a] = dropStream(f.routeStreams[a], s)
		f.notifyLocked()
	}()
	return s.serve(srv.Context(), ans.tables, ans.err, srv.Send)
}

// dropStream returns streams without s, a stream that ended.
func dropStream[M any](streams []*fakeStream[M], s *fakeStream[M]) []*fakeStream[M] {
	return slices.DeleteFunc(streams, func(o *fakeStream[M]) bool { return o == s })
}

func (f *fakeController) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// set makes a the answer to the next streams for authority.
func (f *fakeController) set(authority string, a answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[authority] = a
}

// push sends u on every open stream of authority, of which there must be
// at least one.
func (f *fakeController) push(t testing.TB, authority string, u *destinationv1.Update) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.streams[authority]) == 0 {
		t.Fatalf("push: no stream open for %s", authority)
	}
	for _, s := range f.streams[authority] {
		s.send <- u
	}
}

// end ends every open stream of authority with err.
func (f *fakeController) end(authority string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	endStreams(f.streams[authority], err)
}

// endStreams ends each of streams with err. Called with f.mu held.
func endStreams[M any](streams []*fakeStream[M], err error) {
	for _, s := range streams {
		select {
		case s.end <- err:
		default: // already ending
		}
	}
}

// setRoutes makes a the answer to the next Routes streams for authority.
func (f *fakeController) setRoutes(authority string, a routeAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routeAnswers[authority] = a
}

// pushRoutes sends t on every open Routes stream of authority, of which
// there must be at least one.
func (f *fakeController) pushRoutes(t testing.TB, authority string, rt *destinationv1.RouteTable) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.routeStreams[authority]) == 0 {
		t.Fatalf("pushRoutes: no Routes stream open for %s", authority)
	}
	for _, s := range f.routeStreams[authority] {
		s.send <- rt
	}
}

// endRoutes ends every open Routes stream of authority with err.
func (f *fakeController) endRoutes(authority string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	endStreams(f.routeStreams[authority], err)
}

// routeCount returns how many Routes calls authority got.
func (f *fakeController) routeCount(authority string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.routeCalls[authority]
}

// waitRouteStreams waits until authority has exactly n Routes streams
// open.
func (f *fakeController) waitRouteStreams(t testing.TB, authority string, n int) {
	t.Helper()
	f.waitFor(t, func() bool { return len(f.routeStreams[authority]) == n },
		"%d open Routes streams for %s", n, authority)
}

// waitRouteCalls waits until authority got n Routes calls.
func (f *fakeController) waitRouteCalls(t testing.TB, authority string, n int) {
	t.Helper()
	f.waitFor(t, func() bool { return f.routeCalls[authority] == n },
		"%d Routes calls for %s", n, authority)
}

// getCount returns how many streams were ever opened for authority.
func (f *fakeController) getCount(authority string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gets[authority]
}

// waitStreams waits until authority has exactly n streams open.
func (f *fakeController) waitStreams(t testing.TB, authority string, n int) {
	t.Helper()
	f.waitFor(t, func() bool { return len(f.streams[authority]) == n },
		"%d open streams for %s", n, authority)
}

// waitGets waits until n streams were ever opened for authority.
func (f *fakeController) waitGets(t testing.TB, authority string, n int) {
	t.Helper()
	f.waitFor(t, func() bool { return f.gets[authority] == n },
		"%d streams ever opened for %s", n, authority)
}

// waitFor waits until cond, called with f.mu held, is true.
func (f *fakeController) waitFor(t testing.TB, cond func() bool, format string, args ...any) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		f.mu.Lock()
		ok, changed := cond(), f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("timed out waiting for "+format, args...)
		}
	}
}

// controller is a running gRPC server for a fakeController.
type controller struct {
	addr string
	srv  *grpc.Server
	done chan struct{} // closed when Serve returned
}

// startController serves f on addr ("127.0.0.1:0" for a new port) until
// stop or the end of the test.
func startController(t testing.TB, f *fakeController, addr string) *controller {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	c := &controller{addr: lis.Addr().String(), srv: grpc.NewServer(), done: make(chan struct{})}
	destinationv1.RegisterDestinationServer(c.srv, f)
	go func() {
		defer close(c.done)
		_ = c.srv.Serve(lis)
	}()
	t.Cleanup(c.stop)
	return c
}

// stop ends every stream and closes the listener. Idempotent.
func (c *controller) stop() {
	c.srv.Stop()
	<-c.done
}

// fakeClock is a Config.Now the test advances. Safe for concurrent use.
type fakeClock struct {
	base time.Time
	off  atomic.Int64 // nanoseconds after base
}

func newFakeClock() *fakeClock {
	return &fakeClock{base: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time { return c.base.Add(time.Duration(c.off.Load())) }

func (c *fakeClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// env is a Cache running against a fake controller over real gRPC on
// loopback.
type env struct {
	fake  *fakeController
	ctrl  *controller
	cache *Cache
	clock *fakeClock
	conn  *grpc.ClientConn // the cache's connection to ctrl
	// attempts counts the streams the cache started by method
	// ("/mesh.destination.v1.Destination/Routes"), including those that
	// never reached the controller.
	attempts *attemptCounter
}

// attemptCounter counts a client's stream calls by method. Safe for
// concurrent use.
type attemptCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (a *attemptCounter) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	a.mu.Lock()
	a.n[method]++
	a.mu.Unlock()
	return streamer(ctx, desc, cc, method, opts...)
}

// count returns the calls of method so far.
func (a *attemptCounter) count(method string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[method]
}

// newEnv starts a fake controller and a Cache talking to it, with a fake
// clock and short backoffs; edit adjusts the Config first. Everything stops
// at the end of the test.
func newEnv(t testing.TB, edit func(*Config)) *env {
	t.Helper()
	e := &env{fake: newFakeController(), clock: newFakeClock(), attempts: &attemptCounter{n: map[string]int{}}}
	e.ctrl = startController(t, e.fake, "127.0.0.1:0")
	// The connection's own reconnect backoff is short so that a restarted
	// controller is found again within the test.
	conn, err := grpc.NewClient(e.ctrl.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStreamInterceptor(e.attempts.intercept),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 100 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	e.conn = conn
	cfg := Config{
		Client:           destinationv1.NewDestinationClient(conn),
		ContextNamespace: "shop",
		InitialWait:      5 * time.Second,
		MinBackoff:       5 * time.Millisecond,
		MaxBackoff:       50 * time.Millisecond,
		Now:              e.clock.Now,
		Log:              slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	e.cache = runCache(t, cfg)
	return e
}

// runCache creates a Cache and runs it until the end of the test, which
// waits for Run to return.
func runCache(t testing.TB, cfg Config) *Cache {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

// mustGet gets authority, failing the test on error.
func mustGet(t testing.TB, c *Cache, authority string) *Destination {
	t.Helper()
	d, err := c.Get(t.Context(), authority)
	if err != nil {
		t.Fatalf("Get(%q): %v", authority, err)
	}
	return d
}

// eventually polls cond until it holds. The cache applies updates on its
// own goroutines and has no hook to wait on, so tests poll what callers see.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// addrsOf lists the addresses of d's endpoints in order.
func addrsOf(d *Destination) []string {
	var out []string
	for _, ep := range d.Endpoints() {
		out = append(out, ep.Addr.String())
	}
	return out
}

// checkBalancer checks that d's balancer holds exactly want and that 50
// Picks choose among them. Which of them Pick prefers is the balancer's
// business (an endpoint that has been idle longer has the lower cost).
func checkBalancer(t testing.TB, d *Destination, want []string) {
	t.Helper()
	var held []string
	for _, s := range d.bal.Snapshot() {
		if !s.Draining {
			held = append(held, s.Addr.String())
		}
	}
	if diff := cmp.Diff(want, held, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("balancer endpoints (-want +got):\n%s", diff)
	}
	for range 50 {
		p, ok := d.Pick()
		if !ok {
			t.Fatalf("Pick found no endpoint, want one of %v", want)
		}
		if a := p.Endpoint().Addr.String(); !slices.Contains(want, a) {
			t.Errorf("Pick chose %s, want one of %v", a, want)
		}
		p.Done()
	}
}

// endpointAt is an endpoint as the controller sends it, meshed, with
// labels that name it.
func endpointAt(addr string) *destinationv1.Endpoint {
	return &destinationv1.Endpoint{
		Address:      addr,
		Weight:       10000,
		Zone:         "zone-a",
		Identity:     "spiffe://cluster.local/ns/shop/sa/web",
		ProtocolHint: destinationv1.ProtocolHint_PROTOCOL_HINT_H2,
		Labels:       map[string]string{"namespace": "shop", "service": "web", "pod": "web-" + addr},
	}
}

func add(addrs ...string) *destinationv1.Update {
	set := &destinationv1.AddSet{}
	for _, a := range addrs {
		set.Endpoints = append(set.Endpoints, endpointAt(a))
	}
	return &destinationv1.Update{Kind: &destinationv1.Update_Add{Add: set}}
}

func remove(addrs ...string) *destinationv1.Update {
	return &destinationv1.Update{Kind: &destinationv1.Update_Remove{Remove: &destinationv1.RemoveSet{Addresses: addrs}}}
}

func noEndpoints() *destinationv1.Update {
	return &destinationv1.Update{Kind: &destinationv1.Update_NoEndpoints{NoEndpoints: &destinationv1.NoEndpoints{Exists: true}}}
}

// unusedClient is a DestinationClient for tests that never open a stream.
type unusedClient struct{}

func (unusedClient) Get(context.Context, *destinationv1.GetDestinationRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[destinationv1.Update], error) {
	return nil, errors.New("unusedClient: no streams here")
}

func (unusedClient) Routes(context.Context, *destinationv1.GetDestinationRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[destinationv1.RouteTable], error) {
	return nil, errors.New("unusedClient: no streams here")
}

// drainLog records OnDrained calls. Safe for concurrent use.
type drainLog struct {
	mu  sync.Mutex
	got []string // "authority addr"
}

func (l *drainLog) record(authority string, ep balance.Endpoint) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, authority+" "+ep.Addr.String())
}

func (l *drainLog) sorted() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.got)
	slices.Sort(out)
	return out
}
