// Package demotest runs demo servers in-process for tests, on loopback
// ports the kernel picks.
package demotest

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
)

// Serve listens on 127.0.0.1:0, runs serve there until the test's cleanup,
// and returns the address. serve must return once its context ends; an error
// from it fails the test. The listener is bound before Serve returns, so
// clients may connect at once.
func Serve(t testing.TB, serve func(ctx context.Context, ln net.Listener) error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Not t.Context(): it ends before any cleanup runs, which would stop
	// every server at once. Stopping them in reverse order of start lets a
	// front end close its connections before its backends shut down.
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server on %s: %v", ln.Addr(), err)
		}
	})
	return ln.Addr().String()
}

// ClosedAddr returns a loopback address nothing listens on, for testing a
// backend that is down.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Logged returns a logger for a server under test and a channel closed the
// first time the server logs msg (at any level), so a test can wait for a
// request to arrive instead of sleeping.
func Logged(msg string) (*slog.Logger, <-chan struct{}) {
	h := &signalHandler{msg: msg, ch: make(chan struct{}), once: new(sync.Once)}
	return slog.New(h), h.ch
}

// signalHandler is a slog.Handler that logs nothing and closes ch on msg.
type signalHandler struct {
	msg  string
	ch   chan struct{}
	once *sync.Once
}

func (h *signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *signalHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *signalHandler) WithGroup(string) slog.Handler            { return h }

func (h *signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.ch) })
	}
	return nil
}
