package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"syscall"
)

// listenOutbound binds the outbound listener. iptables REDIRECT sends IPv4
// connections to 127.0.0.1 and IPv6 ones to ::1, so when the address is
// IPv4 loopback the same port is also bound on ::1, where the pod has IPv6
// at all. (An IPv6 connection redirected to a port nobody holds on ::1 is
// refused, which would break every IPv6 destination of the pod.)
func listenOutbound(lc *net.ListenConfig, addr string, log *slog.Logger) (net.Listener, error) {
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(addr)
	if host != "127.0.0.1" {
		return ln, nil
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln6, err := lc.Listen(context.Background(), "tcp6", net.JoinHostPort("::1", port))
	if errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT) {
		log.Debug("no IPv6 loopback; outbound listens on IPv4 only", "err", err)
		return ln, nil
	}
	if err != nil {
		ln.Close()
		return nil, err
	}
	return newMultiListener(ln, ln6), nil
}

// multiListener accepts from several listeners as one. Its Addr is the
// first one's. Close is idempotent and closes them all.
type multiListener struct {
	lns    []net.Listener
	conns  chan net.Conn
	errs   chan error
	closed chan struct{}
	once   sync.Once
}

func newMultiListener(lns ...net.Listener) *multiListener {
	m := &multiListener{lns: lns, conns: make(chan net.Conn), errs: make(chan error), closed: make(chan struct{})}
	for _, ln := range lns {
		go m.accept(ln)
	}
	return m
}

// accept forwards ln's connections until ln is closed. Accept errors other
// than closing are passed on so the caller's retry logic sees them.
func (m *multiListener) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case m.errs <- err:
				continue
			case <-m.closed:
				return
			}
		}
		select {
		case m.conns <- c:
		case <-m.closed:
			c.Close()
			return
		}
	}
}

func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case err := <-m.errs:
		return nil, err
	case <-m.closed:
		return nil, net.ErrClosed
	}
}

func (m *multiListener) Close() error {
	var err error
	m.once.Do(func() {
		close(m.closed)
		for _, ln := range m.lns {
			err = errors.Join(err, ln.Close())
		}
	})
	return err
}

func (m *multiListener) Addr() net.Addr { return m.lns[0].Addr() }
