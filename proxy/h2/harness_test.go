package h2

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
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

func startTestProxy(t testing.TB, target string, opts ...func(*Config, *httpproxy.ConnInfo)) *testProxy {
	t.Helper()
	return startTestProxyWith(t, target, nil, opts...)
}

// startTestProxyWith is startTestProxy, with adjust (if not nil) called
// on the Proxy before it serves anything.
func startTestProxyWith(t testing.TB, target string, adjust func(*Proxy), opts ...func(*Config, *httpproxy.ConnInfo)) *testProxy {
	t.Helper()
	m := metrics.New()
	cfg := Config{Direction: metrics.Inbound, Metrics: m,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))}
	info := httpproxy.ConnInfo{Target: netip.MustParseAddrPort(target)}
	for _, o := range opts {
		o(&cfg, &info)
	}
	p := New(cfg)
	if adjust != nil {
		adjust(p)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.Serve(c, info)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return &testProxy{Proxy: p, addr: ln.Addr().String(), m: m}
}

func logLevel() slog.Level {
	if os.Getenv("H2_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelError
}

// startBackend serves h as h2c (prior knowledge) on loopback and returns
// its address; opts adjust the server before it starts.
func startBackend(t testing.TB, h http.Handler, opts ...func(*http.Server)) string {
	t.Helper()
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protocols, HTTP2: &http.HTTP2Config{},
		ErrorLog: log.New(io.Discard, "", 0)}
	for _, o := range opts {
		o(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// h2cClient is an HTTP client speaking h2c with prior knowledge.
func h2cClient(t testing.TB) *http.Client {
	t.Helper()
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols, HTTP2: &http.HTTP2Config{}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}
