package client_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/gateway-api/conformance/utils/echo"
	"sigs.k8s.io/gateway-api/conformance/utils/weight"

	"github.com/mesh-dev/mesh/test/conformance/echo/client"
	"github.com/mesh-dev/mesh/test/conformance/echo/server"
)

// echoApp is one running echo server on loopback.
type echoApp struct {
	http, grpc string // host:port
}

func startEcho(t testing.TB, hostname, version string) echoApp {
	t.Helper()
	s, err := server.New(server.Config{
		HTTPPorts: []int{0},
		GRPCPorts: []int{0},
		Hostname:  hostname,
		Version:   version,
	})
	if err != nil {
		t.Fatal(err)
	}
	ls := s.Listeners()
	app := echoApp{http: loopback(ls[0].Addr), grpc: loopback(ls[1].Addr)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return app
}

// loopback is the IPv4 loopback address of a listener bound to every
// address, as the server's are.
func loopback(a net.Addr) string {
	return fmt.Sprintf("127.0.0.1:%d", a.(*net.TCPAddr).Port)
}

// run runs the client with the arguments the suite passes after "client"
// and returns what it printed.
func run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cfg, err := client.ParseArgs(args, io.Discard)
	if err != nil {
		t.Fatalf("ParseArgs(%q): %v", args, err)
	}
	var out bytes.Buffer
	err = client.Run(context.Background(), cfg, &out)
	return out.String(), err
}

func TestHTTPFieldsTheSuiteReads(t *testing.T) {
	app := startEcho(t, "echo-v1-7f9c4d-x2x4p", "v1")
	// The argument shapes of utils/echo/pod.go makeRequestWithCount.
	out, err := run(t, "http://"+app.http+"/path?animal=whale", "--method=POST",
		"-H", "version:one", "-H", "X-Multi:a", "-H", "X-Multi:b", "-H", "Host:echo")
	if err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	got := echo.ParseResponse(out)
	_, port, _ := net.SplitHostPort(app.http)
	want := map[string]string{
		"Code":     "200",
		"Hostname": "echo-v1-7f9c4d-x2x4p",
		"Version":  "v1",
		"Port":     port,
		"Host":     "echo",
		"Method":   "POST",
		"Protocol": "HTTP/1.1",
		"URL":      "/path?animal=whale",
		"IP":       "127.0.0.1",
	}
	gotFields := map[string]string{
		"Code": got.Code, "Hostname": got.Hostname, "Version": got.Version, "Port": got.Port,
		"Host": got.Host, "Method": got.Method, "Protocol": got.Protocol, "URL": got.URL, "IP": got.IP,
	}
	if !reflect.DeepEqual(gotFields, want) {
		t.Errorf("parsed fields (-want +got):\n-%v\n+%v\noutput:\n%s", want, gotFields, out)
	}
	if v := got.RequestHeaders.Values("Version"); !reflect.DeepEqual(v, []string{"one"}) {
		t.Errorf("request header version = %q, want [one]", v)
	}
	// The suite compares strings.Join(values, ",").
	if v := strings.Join(got.RequestHeaders.Values("X-Multi"), ","); v != "a,b" {
		t.Errorf("request header X-Multi = %q, want a,b", v)
	}
	if v := got.ResponseHeaders.Get("Content-Type"); !strings.HasPrefix(v, "text/plain") {
		t.Errorf("response header Content-Type = %q", v)
	}
	if got.RequestHeaders.Get("Accept-Encoding") != "" {
		t.Errorf("the client sent Accept-Encoding, which the test did not ask for")
	}
}

// TestFieldLookalikes sends text that reads as fields where a request or
// a mesh may put it, in the URL and in a response header, and expects the
// parser to still find the app's fields.
func TestFieldLookalikes(t *testing.T) {
	app := startEcho(t, "echo-v1-7f9c4d-x2x4p", "v1")
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: app.http})
	rp.ModifyResponse = func(r *http.Response) error {
		r.Header.Set("X-Note", "Hostname=evil Host=evil StatusCode=999 URL=evil")
		return nil
	}
	addr := front(t, rp.ServeHTTP)
	out, err := run(t, "http://"+addr+"/a?Hostname=evil&Host=evil&StatusCode=999&URL=evil&Method=evil")
	if err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	got := echo.ParseResponse(out)
	if got.Hostname != "echo-v1-7f9c4d-x2x4p" || got.Code != "200" || got.Method != "GET" ||
		got.URL != "/a?Hostname=evil&Host=evil&StatusCode=999&URL=evil&Method=evil" || got.Host != addr {
		t.Errorf("parsed %+v from\n%s", got, out)
	}
	if got.ResponseHeaders.Get("X-Note") == "" {
		t.Errorf("X-Note response header missing:\n%s", out)
	}
}

// front is what a mesh proxy may answer instead of the app.
func front(t testing.TB, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func TestRedirectIsNotFollowed(t *testing.T) {
	var hits int
	var mu sync.Mutex
	addr := front(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		w.Header().Set("Location", "http://example.org:8083/port")
		w.Header().Add("X-Header-Set", "first")
		w.Header().Add("X-Header-Set", "second")
		w.WriteHeader(http.StatusMovedPermanently)
	})
	out, err := run(t, "http://"+addr+"/port", "--method=GET")
	if err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	got := echo.ParseResponse(out)
	if got.Code != "301" {
		t.Errorf("Code = %q, want 301\n%s", got.Code, out)
	}
	if l := got.ResponseHeaders.Get("Location"); l != "http://example.org:8083/port" {
		t.Errorf("Location = %q", l)
	}
	// parse.go Sets response headers: the last value wins.
	if v := got.ResponseHeaders.Get("X-Header-Set"); v != "second" {
		t.Errorf("X-Header-Set = %q, want the last value", v)
	}
	if got.Hostname != "" {
		t.Errorf("Hostname = %q from a redirect nobody followed", got.Hostname)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 1 {
		t.Errorf("front hit %d times, want 1", hits)
	}
}

func TestNonOKStatusWithBlankLinesInBody(t *testing.T) {
	addr := front(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		// Blank lines and a line that looks like a field of the app.
		io.WriteString(w, "no healthy upstream\n\n\r\nStatusCode=200\n")
	})
	out, err := run(t, "http://"+addr+"/", "--count=3")
	if err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	sections := batch(out)
	if len(sections) != 3 {
		t.Fatalf("%d sections, want 3:\n%s", len(sections), out)
	}
	for i, s := range sections {
		if s.Code != "503" {
			t.Errorf("section %d: Code = %q, want 503", i, s.Code)
		}
	}
}

func TestNoAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused

	for _, scheme := range []string{"http", "grpc"} {
		t.Run(scheme, func(t *testing.T) {
			out, err := run(t, scheme+"://"+addr, "--count=2", "--timeout=2s")
			if !errors.Is(err, client.ErrFailed) {
				t.Fatalf("err = %v, want ErrFailed", err)
			}
			if !strings.Contains(err.Error(), "2 of 2") {
				t.Errorf("err = %v, want it to count 2 of 2", err)
			}
			got := echo.ParseResponse(out)
			if got.Code != "" || got.Hostname != "" {
				t.Errorf("parsed Code %q Hostname %q from no answer:\n%s", got.Code, got.Hostname, out)
			}
			if n := len(batch(out)); n != 0 {
				t.Errorf("%d answers parsed from no answer", n)
			}
			if !strings.Contains(out, "[1] Error=") {
				t.Errorf("no Error line for the second request:\n%s", out)
			}
		})
	}
}

func TestGRPC(t *testing.T) {
	app := startEcho(t, "echo-v2-55d8b-qq7rt", "v2")
	// The suite sends grpc://echo:7070 with an empty path and no method.
	out, err := run(t, "grpc://"+app.grpc, "-H", "x-test:one", "-H", "x-test:two", "--count=3")
	if err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	sections := batch(out)
	if len(sections) != 3 {
		t.Fatalf("%d sections, want 3:\n%s", len(sections), out)
	}
	_, port, _ := net.SplitHostPort(app.grpc)
	for i, got := range sections {
		fields := [][2]string{
			{got.Code, "200"}, // gRPC OK, which compareRequest maps 0 to
			{got.Hostname, "echo-v2-55d8b-qq7rt"},
			{got.Version, "v2"},
			{got.Port, port},
			{got.Host, app.grpc},
			{got.Protocol, "GRPC"},
			{strings.Join(got.RequestHeaders.Values("X-Test"), ","), "one,two"},
		}
		for _, f := range fields {
			if f[0] != f[1] {
				t.Errorf("section %d: got %q, want %q\n%s", i, f[0], f[1], got.RawContent)
			}
		}
		if got.ResponseHeaders.Get("Content-Type") != "application/grpc" {
			t.Errorf("section %d: response headers %v", i, got.ResponseHeaders)
		}
	}
}

func TestGRPCErrorStatus(t *testing.T) {
	// A proxy answering a gRPC call with UNIMPLEMENTED (12).
	// A trailers-only answer over h2c, as gRPC needs HTTP/2.
	s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "12")
		w.Header().Set("Grpc-Message", "no route")
		w.WriteHeader(http.StatusOK)
	})}
	s.Protocols = new(http.Protocols)
	s.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })

	out, err := run(t, "grpc://"+ln.Addr().String())
	if err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	if got := echo.ParseResponse(out); got.Code != "12" {
		t.Errorf("Code = %q, want 12\n%s", got.Code, out)
	}
}

// batch splits the output of --count the way the suite's RequestBatch does
// (utils/echo parse.go parseMultipleResponses, unexported): at blank lines,
// keeping sections with a Hostname or a StatusCode.
func batch(out string) []echo.Response {
	var rs []echo.Response
	for _, s := range strings.Split(out, "\n\n") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if r := echo.ParseResponse(s); r.Hostname != "" || r.Code != "" {
			rs = append(rs, r)
		}
	}
	return rs
}

// splitter stands in for the mesh: it sends exactly 7 of every 10
// requests to the first backend and 3 to the second.
func splitter(t testing.TB, v1, v2 string) string {
	t.Helper()
	var mu sync.Mutex
	n := 0
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		mu.Lock()
		i := n % 10
		n++
		mu.Unlock()
		target := v1
		if i >= 7 {
			target = v2
		}
		r.SetURL(&url.URL{Scheme: "http", Host: target})
	}}
	return front(t, rp.ServeHTTP)
}

func TestWeightedBatch(t *testing.T) {
	v1 := startEcho(t, "echo-v1-7f9c4d-x2x4p", "v1")
	v2 := startEcho(t, "echo-v2-55d8b-qq7rt", "v2")
	addr := splitter(t, v1.http, v2.http)
	sender := weight.NewBatchFunctionBasedSender(func(count int) ([]string, error) {
		out, err := run(t, "http://"+addr+"/", "--method=GET", fmt.Sprintf("--count=%d", count))
		if err != nil {
			return nil, err
		}
		rs := batch(out)
		if len(rs) != count {
			return nil, fmt.Errorf("%d answers to %d requests", len(rs), count)
		}
		hosts := make([]string, len(rs))
		for i, r := range rs {
			hosts[i] = r.Hostname
		}
		return hosts, nil
	})
	if err := weight.TestWeightedDistributionBatch(sender, map[string]float64{"echo-v1": 0.7, "echo-v2": 0.3}); err != nil {
		t.Fatal(err)
	}
	// The same helper must fail a split that is not the one expected, or
	// the check above proves nothing.
	if err := weight.TestWeightedDistributionBatch(sender, map[string]float64{"echo-v1": 0.5, "echo-v2": 0.5}); err == nil {
		t.Error("a 70/30 split passed as 50/50")
	}
}

func TestServerProtocols(t *testing.T) {
	s, err := server.New(server.Config{HTTPPorts: []int{0}, Hostname: "echo-v1-a-b"})
	if err != nil {
		t.Fatal(err)
	}
	plain := loopback(s.Listeners()[0].Addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(h2c.CloseIdleConnections)
	got := get(t, &http.Client{Transport: h2c}, "http://"+plain+"/")
	if got.Protocol != "HTTP/2.0" || got.Hostname != "echo-v1-a-b" {
		t.Errorf("h2c: Proto %q Hostname %q", got.Protocol, got.Hostname)
	}
}

func TestServerTLSAndTCP(t *testing.T) {
	// Bind a port first so that --tls can name it, as the manifests do.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s, err := server.New(server.Config{HTTPPorts: []int{port}, TLSPorts: []int{port}, TCPPorts: []int{0}, Hostname: "echo-v1-a-b"})
	if err != nil {
		t.Fatal(err)
	}
	ls := s.Listeners()
	if ls[0].Kind != "https" || ls[1].Kind != "tcp" {
		t.Fatalf("listeners %+v", ls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	got := get(t, &http.Client{Transport: tr}, fmt.Sprintf("https://127.0.0.1:%d/", port))
	if got.Alpn != "h2" || got.Protocol != "HTTP/2.0" {
		t.Errorf("https: Alpn %q Proto %q", got.Alpn, got.Protocol)
	}

	c, err := net.DialTimeout("tcp", loopback(ls[1].Addr), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
		t.Errorf("tcp echo: %q, %v", buf, err)
	}
}

func TestServerConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  server.Config
		want string
	}{
		{"no listener", server.Config{Hostname: "h"}, "no listener"},
		{"tls port not served", server.Config{Hostname: "h", HTTPPorts: []int{0}, TLSPorts: []int{8443}}, "--tls=8443 names no --port"},
		{"cert without key", server.Config{Hostname: "h", HTTPPorts: []int{0}, TLSPorts: []int{0}, CertFile: "/cert.crt"}, "--crt and --key go together"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := server.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func get(t testing.TB, c *http.Client, u string) echo.Response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return echo.ParseResponse(string(b))
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want client.Config
		err  string
	}{
		{
			name: "as the suite sends it",
			args: []string{"http://echo/path", "--method=GET", "-H", "version:one", "--count=500"},
			want: client.Config{URL: "http://echo/path", Method: "GET", Count: 500, Timeout: 5 * time.Second,
				Headers: []client.Header{{Name: "version", Value: "one"}}},
		},
		{
			name: "grpc, no method",
			args: []string{"grpc://echo:7070"},
			want: client.Config{URL: "grpc://echo:7070", Method: "GET", Count: 1, Timeout: 5 * time.Second},
		},
		{
			name: "a value holding a colon",
			args: []string{"-H", "Referer:http://a:80/", "http://echo"},
			want: client.Config{URL: "http://echo", Method: "GET", Count: 1, Timeout: 5 * time.Second,
				Headers: []client.Header{{Name: "Referer", Value: "http://a:80/"}}},
		},
		{name: "no URL", args: []string{"--count=2"}, err: "exactly one URL"},
		{name: "two URLs", args: []string{"http://a", "http://b"}, err: "exactly one URL"},
		{name: "header without colon", args: []string{"http://a", "-H", "novalue"}, err: "not name:value"},
		{name: "zero count", args: []string{"http://a", "--count=0"}, err: "at least 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := client.ParseArgs(tc.args, io.Discard)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("(-want +got):\n-%+v\n+%+v", tc.want, got)
			}
		})
	}
}

func TestRunRejectsURLs(t *testing.T) {
	for _, u := range []string{"ftp://echo/", "grpc://echo:7070/some.Service/Method"} {
		err := client.Run(context.Background(), client.Config{URL: u}, io.Discard)
		if err == nil || errors.Is(err, client.ErrFailed) {
			t.Errorf("Run(%s): %v, want a usage error", u, err)
		}
	}
}
