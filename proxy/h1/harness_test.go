package h1

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// testProxy is a Proxy serving a loopback listener whose connections all
// go to one target, as the proxy's inbound side would hand them over.
type testProxy struct {
	*Proxy
	addr string
	m    *metrics.Metrics
}

func startTestProxy(t testing.TB, target string, opts ...func(*Config)) *testProxy {
	t.Helper()
	m := metrics.New()
	cfg := Config{Direction: metrics.Inbound, Metrics: m,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))}
	for _, o := range opts {
		o(&cfg)
	}
	p, addr, stopAccepting := serveProxy(t, cfg, target)
	t.Cleanup(func() {
		stopAccepting()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return &testProxy{Proxy: p, addr: addr, m: m}
}

// serveProxy starts a Proxy on a loopback listener whose connections all
// go to target, as a side of mesh-proxy hands them over; stop closes the
// listener.
func serveProxy(t testing.TB, cfg Config, target string) (p *Proxy, addr string, stop func()) {
	t.Helper()
	p = New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort(target)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.Serve(c, httpproxy.ConnInfo{Target: dst})
		}
	}()
	return p, ln.Addr().String(), func() { ln.Close() }
}

func logLevel() slog.Level {
	if os.Getenv("H1_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelError
}

// startBackend serves h on loopback and returns its address.
func startBackend(t testing.TB, h http.Handler) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}
