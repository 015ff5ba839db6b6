package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testProxy is a proxy on loopback whose sides send every connection to a
// fixed target instead of asking netfilter, so the whole pipeline below
// interception runs without root.
type testProxy struct {
	*Proxy
	inbound string // address clients dial
}

func startProxy(t testing.TB, target string, mutate ...func(*Config)) *testProxy {
	t.Helper()
	dst := netip.MustParseAddrPort(target)
	return startSweptProxy(t, func(*net.TCPConn) (netip.AddrPort, error) { return dst, nil }, mutate...)
}

// startSweptProxy is startProxy with lookup deciding each connection's
// original destination, as SO_ORIGINAL_DST does behind iptables.
func startSweptProxy(t testing.TB, lookup func(*net.TCPConn) (netip.AddrPort, error), mutate ...func(*Config)) *testProxy {
	t.Helper()
	cfg := DefaultConfig()
	cfg.InboundAddr, cfg.OutboundAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.DetectTimeout = 200 * time.Millisecond
	cfg.ShutdownGrace = 2 * time.Second
	for _, f := range mutate {
		f(&cfg)
	}
	p, err := New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.sides {
		s.lookup = lookup
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	in, _, _ := p.Addrs()
	return &testProxy{Proxy: p, inbound: in.String()}
}

func (p *testProxy) counter(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	families, err := p.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// closeIdle keeps goleak quiet about a test client's pooled connections.
func closeIdle(t testing.TB, tr interface{ CloseIdleConnections() }) {
	t.Cleanup(tr.CloseIdleConnections)
}

func h1Client(t testing.TB) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	closeIdle(t, tr)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// h2cOnly is HTTP/2 with prior knowledge in plain text, and nothing else:
// a client with it never falls back to HTTP/1.1.
func h2cOnly() *http.Protocols {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &p
}

func h2cClient(t testing.TB) *http.Client {
	tr := &http.Transport{Protocols: h2cOnly(), DisableCompression: true}
	closeIdle(t, tr)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// h1AndH2C is what a backend serves: HTTP/1.1, and h2c with prior
// knowledge on the same port.
func h1AndH2C() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &p
}

// backend runs handler over HTTP/1.1 and h2c on loopback.
func backend(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = h1AndH2C()
	srv.Start()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestHTTPForwarding(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("X-Got-Host", r.Host)
		w.Header().Set("X-Got-Query", r.URL.RawQuery)
		w.Header().Set("X-Got-Forwarded-For", strings.Join(r.Header.Values("X-Forwarded-For"), ","))
		w.Header().Set("X-Got-Encoding", r.Header.Get("Accept-Encoding"))
		fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(body))
		w.Header().Set("X-Sum", fmt.Sprint(len(body)))
	})
	target := backend(t, echo)
	p := startProxy(t, target)
	clients := []struct {
		name      string
		client    *http.Client
		wantProto string
	}{
		{name: "http1", client: h1Client(t), wantProto: "HTTP/1.1"},
		{name: "h2c", client: h2cClient(t), wantProto: "HTTP/2.0"},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			body := strings.Repeat("x", 100_000)
			// An io.Reader without a length makes the HTTP/1 client send chunks.
			req, _ := http.NewRequest("POST", "http://"+p.inbound+"/echo?a=1;b=2", io.MultiReader(strings.NewReader(body)))
			req.Host = "shop.example:8080"
			req.Header.Add("X-Forwarded-For", "192.0.2.1")
			res, err := c.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			checks := []struct{ what, got, want string }{
				{"status", res.Status, "200 OK"},
				{"body", string(got), "POST /echo 100000"},
				{"protocol at target", res.Header.Get("X-Proto"), c.wantProto},
				{"host", res.Header.Get("X-Got-Host"), "shop.example:8080"},
				{"raw query", res.Header.Get("X-Got-Query"), "a=1;b=2"},
				{"x-forwarded-for untouched", res.Header.Get("X-Got-Forwarded-For"), "192.0.2.1"},
				{"no accept-encoding added", res.Header.Get("X-Got-Encoding"), ""},
				{"trailer", res.Trailer.Get("X-Sum"), "100000"},
			}
			for _, ck := range checks {
				if ck.got != ck.want {
					t.Errorf("%s = %q, want %q", ck.what, ck.got, ck.want)
				}
			}
		})
	}
	if n := p.counter(t, "mesh_proxy_http_requests_total", "authority", "shop.example:8080", "direction", "inbound"); n != 2 {
		t.Errorf("requests counted = %v, want 2", n)
	}
	if n := p.counter(t, "mesh_proxy_http_responses_total", "status_class", "2xx", "classification", "success"); n != 2 {
		t.Errorf("2xx responses counted = %v, want 2", n)
	}
	for _, proto := range []string{"http/1", "h2"} {
		if n := p.counter(t, "mesh_proxy_protocol_detections_total", "protocol", proto); n != 1 {
			t.Errorf("%s detections = %v, want 1", proto, n)
		}
	}
}

func TestHTTP1KeepAliveAndContinue(t *testing.T) {
	target := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	p := startProxy(t, target)
	c, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	// Two requests on one connection; the first waits for 100-continue.
	fmt.Fprint(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("before the body: %q, %v; want 100 Continue", line, err)
	}
	for line != "\r\n" { // rest of the 100 response
		line, _ = br.ReadString('\n')
	}
	fmt.Fprint(c, "hello")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(res.Body); string(b) != "hello" {
		t.Errorf("first body = %q", b)
	}
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if res, err = http.ReadResponse(br, nil); err != nil || res.StatusCode != 200 {
		t.Fatalf("second request on the same connection: %v %v", res, err)
	}
	io.Copy(io.Discard, res.Body)
}

func TestUpgradeBecomesOpaque(t *testing.T) {
	target := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want upgrade", 400)
			return
		}
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "echo")
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.Copy(conn, brw)
	}))
	p := startProxy(t, target)
	c, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	msg := []byte("\x00\x01binary frames after 101\xff")
	c.Write(msg)
	c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(br)
	if !bytes.Equal(got, msg) {
		t.Errorf("echo after upgrade = %q, want %q", got, msg)
	}
}

func TestTargetErrors(t *testing.T) {
	// A port that was just free: nothing listens there.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	slow := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}))
	tests := []struct {
		name     string
		target   string
		grpc     bool
		wantCode int
		wantGRPC string
	}{
		{name: "refused is 502", target: closed, wantCode: 502},
		{name: "slow is 504", target: slow, wantCode: 504},
		{name: "grpc refused is UNAVAILABLE", target: closed, grpc: true, wantCode: 200, wantGRPC: "14"},
		{name: "grpc slow is DEADLINE_EXCEEDED", target: slow, grpc: true, wantCode: 200, wantGRPC: "4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, tc.target, func(c *Config) { c.ResponseTimeout = 300 * time.Millisecond })
			client := h1Client(t)
			if tc.grpc {
				client = h2cClient(t)
			}
			req, _ := http.NewRequest("POST", "http://"+p.inbound+"/svc/Method", strings.NewReader("x"))
			if tc.grpc {
				req.Header.Set("Content-Type", "application/grpc")
			}
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != tc.wantCode {
				t.Errorf("status = %d, want %d", res.StatusCode, tc.wantCode)
			}
			if got := res.Header.Get("Grpc-Status"); got != tc.wantGRPC {
				t.Errorf("grpc-status = %q, want %q", got, tc.wantGRPC)
			}
			if n := p.counter(t, "mesh_proxy_http_responses_total", "classification", "failure"); n != 1 {
				t.Errorf("failures counted = %v, want 1", n)
			}
		})
	}
}
