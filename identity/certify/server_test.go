package certify_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Tokens the fake reviewer knows. Each is distinctive so the tests can
// check that no log line ever carries one.
const (
	tokenWeb         = "token-of-shop-web-7f3a"
	tokenAdmin       = "token-of-shop-admin-91c2"
	tokenUser        = "token-of-a-person-55d0"
	tokenExpired     = "token-expired-0b8e"
	tokenUnavailable = "token-while-api-server-down-e41f"
	tokenSlow        = "token-reviewed-slowly-3c77" // see reviewer.hold
)

// reviewer is a fake TokenReviewer with settable answers. It is fake
// because a real TokenReview needs an API server; the real path
// (KubeTokenReviewer against kube-apiserver with projected tokens) is
// exercised end to end on the local cluster, and KubeTokenReviewer's own
// handling of TokenReview answers is tested in review_test.go.
type reviewer struct {
	mu        sync.Mutex
	answers   map[string]certify.TokenInfo
	calls     int
	audiences []string
	// hold, when set, makes a review of tokenSlow wait until it is closed
	// or the review's ctx ends, after counting the call and closing held.
	hold, held chan struct{}
}

func newReviewer() *reviewer {
	return &reviewer{answers: map[string]certify.TokenInfo{
		tokenWeb:   {Username: "system:serviceaccount:shop:web", Pod: "web-5d8f-abcde"},
		tokenAdmin: {Username: "system:serviceaccount:shop:admin", Pod: "admin-0"},
		tokenUser:  {Username: "alice@example.com"},
	}}
}

func (r *reviewer) Review(ctx context.Context, token, audience string) (certify.TokenInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.audiences = append(r.audiences, audience)
	switch token {
	case tokenSlow:
		hold := r.hold
		close(r.held)
		r.mu.Unlock()
		select {
		case <-hold:
		case <-ctx.Done():
		}
		r.mu.Lock()
		return certify.TokenInfo{}, certify.ErrUnauthenticated
	case tokenExpired:
		return certify.TokenInfo{}, fmt.Errorf("%w: [invalid bearer token, service account token has expired]", certify.ErrUnauthenticated)
	case tokenUnavailable:
		return certify.TokenInfo{}, errors.New("dial tcp 10.96.0.1:443: connect: connection refused")
	}
	info, ok := r.answers[token]
	if !ok {
		return certify.TokenInfo{}, certify.ErrUnauthenticated
	}
	return info, nil
}

func (r *reviewer) callCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// clock is a settable clock, safe for the server's goroutines.
type clock struct{ now atomic.Int64 }

func (c *clock) Now() time.Time      { return time.Unix(0, c.now.Load()) }
func (c *clock) Set(t time.Time)     { c.now.Store(t.UnixNano()) }
func (c *clock) Add(d time.Duration) { c.now.Add(int64(d)) }

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is a Server under test: the real gRPC service on 127.0.0.1:0 with a
// per-test PKI in a kubelet-style Secret directory, and a client.
type env struct {
	pki      *identitytest.CA
	dir      *identitytest.SecretDir
	reviewer *reviewer
	clock    *clock
	reg      *prometheus.Registry
	logs     *syncBuffer
	server   *certify.Server
	client   identityv1.IdentityClient // from 127.0.0.1
	addr     string                    // the server's
	stopRun  context.CancelFunc        // ends Server.Run
}

type envOptions struct {
	pki *identitytest.CA // nil: a new one
	cfg certify.Config   // IssuerDir, Reviewer, Clock, Log, Registerer are set
}

func newEnv(t *testing.T, opts envOptions) *env {
	t.Helper()
	e := &env{pki: opts.pki, dir: identitytest.NewSecretDir(t), reviewer: newReviewer(), clock: &clock{},
		reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	if e.pki == nil {
		e.pki = identitytest.NewCA(t)
	}
	e.clock.Set(time.Now())
	e.pki.WriteSecret(t, e.dir)
	cfg := opts.cfg
	cfg.IssuerDir, cfg.Reviewer, cfg.Clock = e.dir.Path, e.reviewer, e.clock.Now
	cfg.Log, cfg.Registerer = slog.New(slog.NewJSONHandler(e.logs, nil)), e.reg
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Hour // tests reload explicitly
	}
	if cfg.ClientRate == 0 {
		// The clock stands still unless a test moves it, so the default
		// burst would be all a test could ask; limits_test.go sets its own.
		cfg.ClientRate, cfg.ClientBurst = 1000, 1000
	}
	srv, err := certify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.server = srv

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	ctx, cancel := context.WithCancel(t.Context())
	e.stopRun = cancel
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		if err := srv.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	e.addr = lis.Addr().String()
	t.Cleanup(func() {
		cancel()
		<-ran
		gs.GracefulStop() // returns only if Run's end closed every stream
		<-served
	})
	e.client = e.clientFrom(t, "127.0.0.1") // closed first: cleanups run last-in first-out
	return e
}

// clientFrom returns a client whose connections come from ip, another
// loopback address than 127.0.0.1 for a second client address. It is
// closed when the test ends, before the server stops.
func (e *env) clientFrom(t *testing.T, ip string) identityv1.IdentityClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return identityv1.NewIdentityClient(conn)
}

func (e *env) counter(name, reason string) float64 {
	mfs, err := e.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if reason == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == reason) {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func (e *env) issued() float64 { return e.counter("mesh_identity_certificates_issued_total", "") }

func (e *env) denied(reason string) float64 {
	return e.counter("mesh_identity_certificate_requests_denied_total", reason)
}
