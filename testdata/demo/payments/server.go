package payments

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/mesh-dev/mesh/testdata/demo/fault"
)

// Config configures the payments server.
type Config struct {
	// Addr is where Run listens; ":7070" in the pod.
	Addr string
	// Fault fails requests with "ERR unavailable" and delays answers.
	Fault fault.Fault
	// FaultSwitch, if not nil, holds the fault in force, read on every
	// request so the admin server's PUT /fault can change it while Serve
	// runs; nil means Fault, fixed.
	FaultSwitch *fault.Switch
	// IdleTimeout closes a connection that sends nothing for this long;
	// zero means two minutes.
	IdleTimeout time.Duration
	// ShutdownGrace bounds how long requests in flight may take once
	// Serve's context ends; zero means ten seconds.
	ShutdownGrace time.Duration
	// Logger receives connection and request logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration of the payments pod.
func DefaultConfig() Config {
	return Config{Addr: ":7070", IdleTimeout: 2 * time.Minute, ShutdownGrace: 10 * time.Second}
}

// AddFlags binds c's fields to flags, with c's values as defaults.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "address of the payments listener (line protocol over TCP)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "close connections idle this long")
	c.Fault.AddFlags(fs)
}

// server tracks the connections of one Serve call.
type server struct {
	cfg    Config
	log    *slog.Logger
	faults *fault.Switch
	wg     sync.WaitGroup
	mu     sync.Mutex
	// conns and draining are guarded by mu. Once draining is set, handlers
	// finish the request in hand and close instead of reading another.
	conns    map[net.Conn]struct{}
	draining bool
}

// Serve answers payment requests on ln until ctx ends, then stops
// accepting, lets each connection finish the request in hand for up to
// ShutdownGrace, and closes them all. It closes ln.
func Serve(ctx context.Context, ln net.Listener, cfg Config) error {
	s := newServer(cfg)
	grace := orDefault(cfg.ShutdownGrace, 10*time.Second)
	// hard ends the requests still running when the grace period is over.
	hard, stopHard := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHard()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var err error
	for {
		conn, aerr := ln.Accept()
		if aerr != nil && ctx.Err() == nil && !errors.Is(aerr, net.ErrClosed) {
			// Out of file descriptors, say: back off and carry on, as
			// net/http does, rather than take the service down.
			s.log.Warn("accept failed; retrying", "err", aerr)
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("payments: accept: %w", aerr)
			}
			break
		}
		s.track(conn)
		s.wg.Go(func() { s.handle(hard, conn) })
	}
	ln.Close()
	s.drain()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.log.Warn("shutdown grace period over; closing connections", "grace", grace)
		stopHard()
		s.closeAll()
		<-done
	}
	return err
}

func newServer(cfg Config) *server {
	s := &server{cfg: cfg, log: cfg.Logger, faults: cfg.FaultSwitch, conns: make(map[net.Conn]struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.faults == nil {
		s.faults = fault.NewSwitch(cfg.Fault)
	}
	s.cfg.IdleTimeout = orDefault(cfg.IdleTimeout, 2*time.Minute)
	return s
}

func orDefault(d, fallback time.Duration) time.Duration {
	if d <= 0 {
		return fallback
	}
	return d
}

func (s *server) track(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = struct{}{}
}

// drain wakes every handler blocked in a read so it sees draining and
// closes; handlers busy with a request finish it first.
func (s *server) drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
	for c := range s.conns {
		c.SetReadDeadline(time.Now())
	}
}

func (s *server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

// armRead sets the idle deadline for the next read, unless the server is
// draining. Holding mu orders it with drain, so a drain can never be
// overwritten by a later idle deadline.
func (s *server) armRead(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
	return true
}

// handle serves one connection, one line at a time.
func (s *server) handle(ctx context.Context, c net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	log := s.log.With("remote", c.RemoteAddr().String())
	r := bufio.NewReaderSize(c, MaxLineLen)
	for s.armRead(c) {
		line, err := r.ReadSlice('\n')
		c.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			log.Warn("request line too long; closing", "limit", MaxLineLen)
			refuseAndClose(c, "line too long")
			return
		case err != nil && len(line) > 0:
			log.Warn("request line cut off; closing", "err", err)
			refuseAndClose(c, "incomplete line")
			return
		case err != nil:
			return // EOF, idle timeout or drain between requests
		}
		if _, err := io.WriteString(c, s.answer(ctx, line, log)); err != nil {
			return
		}
	}
}

// refuseAndClose sends a last ERR line and half-closes, then discards what
// the client still sends for a moment: closing a socket with unread input
// makes the kernel send a reset, which can destroy the ERR line before the
// client reads it.
func refuseAndClose(c net.Conn, reason string) {
	io.WriteString(c, errLine(reason))
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// answer returns the response line for one request line.
func (s *server) answer(ctx context.Context, line []byte, log *slog.Logger) string {
	req, err := ParseRequest(line)
	if err != nil {
		log.Info("bad request", "err", err)
		return errLine(err.Error())
	}
	log.Debug("payment requested", "order", req.OrderID, "cents", req.Cents)
	fail, err := s.faults.Load().Apply(ctx)
	if err != nil {
		return errLine("shutting down")
	}
	if fail {
		log.Info("payment failed by fault injection", "order", req.OrderID)
		return errLine("unavailable")
	}
	txid := newTxID()
	log.Debug("payment accepted", "order", req.OrderID, "cents", req.Cents, "txid", txid)
	return okLine(txid)
}

func newTxID() string {
	return "tx-" + rand.Text()[:16]
}
