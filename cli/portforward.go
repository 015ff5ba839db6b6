package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/klog/v2"
	"k8s.io/streaming/pkg/httpstream"
)

// errForwardClosed is the cause of a forward's context after Close.
var errForwardClosed = errors.New("port-forward closed")

// forward is a running port-forward from a loopback port to a port of a
// pod, through the API server, as `kubectl port-forward` makes it. Its
// methods are safe for concurrent use.
type forward struct {
	// URL is the local end, "http://127.0.0.1:PORT".
	URL string

	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when the forwarder has stopped
	log    *forwardLog
}

// Context is done when the forwarding has stopped: when the context
// portForward was given ended, when Close was called, or when the
// connection to the pod broke. context.Cause tells which.
func (f *forward) Context() context.Context { return f.ctx }

// Close stops forwarding and waits until the local port is closed. It may
// be called more than once.
func (f *forward) Close() {
	f.cancel(errForwardClosed)
	<-f.done
}

// LastError is the last error forwarding a connection met, nil if none:
// what explains a request through the forward that failed, such as
// nothing listening on the pod's port.
func (f *forward) LastError() error { return f.log.lastError() }

// portForward forwards a free port of 127.0.0.1 to port of pod ns/pod until
// ctx ends or Close is called. It tries the WebSocket protocol first and
// falls back to SPDY for API servers without it, as kubectl does.
func portForward(ctx context.Context, cfg *rest.Config, ns, pod string, port int) (*forward, error) {
	ref := ns + "/" + pod
	dialer, err := forwardDialer(cfg, ns, pod)
	if err != nil {
		return nil, fmt.Errorf("port-forward to pod %s: %w", ref, err)
	}
	log := &forwardLog{}
	// The forwarder reports each failed connection through klog; keep the
	// last one to explain failures with, instead of printing klog lines.
	fctx, cancel := context.WithCancelCause(klog.NewContext(ctx, logr.New(log)))
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreamingWithContext(fctx, dialer, []string{"127.0.0.1"},
		[]string{"0:" + strconv.Itoa(port)}, ready, io.Discard, io.Discard)
	if err != nil {
		cancel(err)
		return nil, fmt.Errorf("port-forward to pod %s: %w", ref, err)
	}
	f := &forward{ctx: fctx, cancel: cancel, done: make(chan struct{}), log: log}
	failed := make(chan error, 1)
	go func() {
		defer close(f.done)
		err := pf.ForwardPorts()
		switch {
		case err == nil:
			err = errForwardClosed // it was asked to stop
		case isClosed(ready):
			err = f.lost(ref, port, err) // it ran, and broke
		}
		failed <- err
		cancel(err)
	}()
	select {
	case <-ready:
	case err := <-failed:
		return nil, forwardFailed(ref, ns, err)
	case <-ctx.Done():
		cancel(ctx.Err())
		return nil, ctx.Err()
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		f.Close()
		return nil, fmt.Errorf("port-forward to pod %s: no local port: %v", ref, err)
	}
	f.URL = "http://127.0.0.1:" + strconv.Itoa(int(ports[0].Local))
	return f, nil
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// lost explains why a forward that was running stopped by itself.
func (f *forward) lost(ref string, port int, err error) error {
	if last := f.LastError(); last != nil {
		return fmt.Errorf("lost the port-forward to pod %s port %d: %w (%v)", ref, port, err, last)
	}
	return fmt.Errorf("lost the port-forward to pod %s port %d: %w", ref, port, err)
}

// forwardFailed explains a port-forward that could not start.
func forwardFailed(ref, ns string, err error) error {
	if strings.Contains(strings.ToLower(err.Error()), "forbidden") {
		return fmt.Errorf("port-forward to pod %s: %w: you need permission to create pods/portforward in namespace %s", ref, err, ns)
	}
	return fmt.Errorf("port-forward to pod %s: %w", ref, err)
}

// forwardDialer returns what connects to the pod's portforward
// subresource: SPDY tunnelled over WebSocket first, and plain SPDY when
// the API server (or a proxy in between) does not upgrade to WebSocket.
func forwardDialer(cfg *rest.Config, ns, pod string) (httpstream.Dialer, error) {
	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	u := core.RESTClient().Post().Namespace(ns).Resource("pods").Name(pod).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	spdyDialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	wsDialer, err := portforward.NewSPDYOverWebsocketDialerForStreaming(copyURL(u), cfg)
	if err != nil {
		return nil, err
	}
	return portforward.NewFallbackDialerForStreaming(wsDialer, spdyDialer, notUpgraded), nil
}

// notUpgraded reports whether err says the WebSocket upgrade was refused,
// by an API server before Kubernetes 1.31 or a proxy in between, so SPDY
// is worth trying. client-go's WebSocket transport reports a refusal as
// k8s.io/streaming's UpgradeFailureError; the dialers are the
// k8s.io/streaming flavours, so no error of apimachinery's deprecated copy
// of the package reaches here.
func notUpgraded(err error) bool {
	return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
}

// copyURL returns a copy of u: each dialer may rewrite its own (the
// WebSocket one changes the scheme).
func copyURL(u *url.URL) *url.URL {
	c := *u
	return &c
}

// forwardLog is a logr sink that keeps the last error logged instead of
// printing it. WithValues and WithName return the sink itself, so every
// logger made from it shares the record; mu guards last, as the forwarder
// logs from one goroutine per connection.
type forwardLog struct {
	mu   sync.Mutex
	last error
}

func (l *forwardLog) lastError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

func (l *forwardLog) Init(logr.RuntimeInfo)          {}
func (l *forwardLog) Enabled(int) bool               { return false }
func (l *forwardLog) Info(int, string, ...any)       {}
func (l *forwardLog) WithValues(...any) logr.LogSink { return l }
func (l *forwardLog) WithName(string) logr.LogSink   { return l }

func (l *forwardLog) Error(err error, msg string, _ ...any) {
	if err == nil {
		err = errors.New(msg)
	}
	l.mu.Lock()
	l.last = err
	l.mu.Unlock()
}
