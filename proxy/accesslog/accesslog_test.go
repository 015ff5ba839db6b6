package accesslog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/proxy/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var start = time.Date(2026, 12, 7, 19, 55, 49, 123456789, time.UTC)

func sampleHTTP() HTTP {
	return HTTP{
		Start: start, Direction: metrics.Inbound, Client: "10.0.0.7:41000",
		Method: "GET", Authority: "web.demo:8080", Path: "/a?b=1", Proto: "HTTP/1.1",
		Status: 200, GRPCStatus: -1, Duration: 1500 * time.Microsecond,
		RequestBytes: 3, ResponseBytes: 42,
		ClientID: "spiffe://mesh.local/ns/demo/sa/web",
		Route:    metrics.RouteRef{Kind: "HTTPRoute", Namespace: "demo", Name: "web", Rule: "0"},
		Upstream: "10.0.0.9:8080", Retries: 1,
	}
}

func TestApache(t *testing.T) {
	tests := []struct {
		name string
		rec  HTTP
		want string
	}{{
		name: "request",
		rec:  sampleHTTP(),
		want: `10.0.0.7:41000 - - [07/Dec/2026:19:55:49 +0000] "GET /a?b=1 HTTP/1.1" 200 42 direction=inbound authority="web.demo:8080" client_identity="spiffe://mesh.local/ns/demo/sa/web" server_identity="-" route="HTTPRoute/demo/web/0" upstream="10.0.0.9:8080" grpc_status=- duration_ms=1.500 request_bytes=3 retries=1`,
	}, {
		name: "hostile path and authority",
		rec: func() HTTP {
			r := sampleHTTP()
			r.Path = "/x\" 200 1\n10.6.6.6 - - \x00\\\xff"
			r.Authority = "a\r\nb"
			r.Route = metrics.RouteRef{}
			r.ResponseBytes, r.GRPCStatus, r.TraceID = 0, 0, "4bf92f3577b34da6a3ce929d0e0e4736"
			return r
		}(),
		want: `10.0.0.7:41000 - - [07/Dec/2026:19:55:49 +0000] "GET /x\" 200 1\x0a10.6.6.6 - - \x00\\\xff HTTP/1.1" 200 - direction=inbound authority="a\x0d\x0ab" client_identity="spiffe://mesh.local/ns/demo/sa/web" server_identity="-" route="-" upstream="10.0.0.9:8080" grpc_status=0 duration_ms=1.500 request_bytes=3 retries=1 trace_id="4bf92f3577b34da6a3ce929d0e0e4736"`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(appendHTTPApache(nil, &tc.rec))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("line (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTCPApache(t *testing.T) {
	c := TCP{Start: start, Direction: metrics.Outbound, Client: "10.0.0.7:41000", Destination: "10.0.0.9:6379",
		Duration: 2 * time.Second, FromClient: 10, ToClient: 20, ServerID: "spiffe://mesh.local/ns/demo/sa/redis"}
	want := `10.0.0.7:41000 - - [07/Dec/2026:19:55:49 +0000] "TCP 10.0.0.9:6379" - 20 direction=outbound client_identity="-" server_identity="spiffe://mesh.local/ns/demo/sa/redis" duration_ms=2000.000 bytes_from_client=10 bytes_to_client=20`
	if diff := cmp.Diff(want, string(appendTCPApache(nil, &c))); diff != "" {
		t.Errorf("line (-want +got):\n%s", diff)
	}
}

func TestJSON(t *testing.T) {
	r := sampleHTTP()
	r.Path = "/\"\\\x01\n\u2028\xff\xfeé"
	r.GRPCStatus = 14
	r.TraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	line := appendHTTPJSON(nil, &r)
	if bytes.ContainsAny(line, "\n\r") {
		t.Fatalf("line breaks in %q", line)
	}
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("not JSON: %v: %s", err, line)
	}
	want := map[string]any{
		"time": "2026-12-07T19:55:49.123456789Z", "kind": "http", "direction": "inbound", "client": "10.0.0.7:41000",
		"method": "GET", "authority": "web.demo:8080", "path": "/\"\\\x01\n\u2028\ufffd\ufffdé", "proto": "HTTP/1.1",
		"status": 200.0, "grpc_status": 14.0, "duration_ms": 1.5, "request_bytes": 3.0, "response_bytes": 42.0,
		"client_identity": "spiffe://mesh.local/ns/demo/sa/web", "server_identity": "",
		"route":    map[string]any{"kind": "HTTPRoute", "namespace": "demo", "name": "web", "rule": "0"},
		"upstream": "10.0.0.9:8080", "retries": 1.0, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("object (-want +got):\n%s", diff)
	}

	c := TCP{Start: start, Direction: metrics.Outbound, Client: "c", Destination: "d", Duration: time.Millisecond, FromClient: 1, ToClient: 2}
	var tcp map[string]any
	if err := json.Unmarshal(appendTCPJSON(nil, &c), &tcp); err != nil {
		t.Fatal(err)
	}
	wantTCP := map[string]any{"time": "2026-12-07T19:55:49.123456789Z", "kind": "tcp", "direction": "outbound", "client": "c",
		"destination": "d", "duration_ms": 1.0, "bytes_from_client": 1.0, "bytes_to_client": 2.0, "client_identity": "", "server_identity": ""}
	if diff := cmp.Diff(wantTCP, tcp); diff != "" {
		t.Errorf("tcp object (-want +got):\n%s", diff)
	}
}

// FuzzLine checks that no path a client sends can break a line: JSON stays
// one valid object, Apache stays one line of printable ASCII.
func FuzzLine(f *testing.F) {
	for _, s := range []string{"/", "/a\nb", "\"}", "\xff\xfe", "\u2028", "\x00\x1f\x7f", `\"`} { // seeds: line breaks, quotes, bad UTF-8
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r := sampleHTTP()
		r.Path, r.Authority, r.Method = s, s, s
		j := appendHTTPJSON(nil, &r)
		var v map[string]any
		if err := json.Unmarshal(j, &v); err != nil {
			t.Fatalf("json %q: %v", j, err)
		}
		if bytes.ContainsAny(j, "\n\r") {
			t.Fatalf("json line break in %q", j)
		}
		for _, c := range appendHTTPApache(nil, &r) {
			if c < 0x20 || c >= 0x7f {
				t.Fatalf("apache byte %#x in line", c)
			}
		}
	})
}

// blockingWriter holds its first write until released.
type blockingWriter struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered); <-w.release })
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func TestDropsWhenFull(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	l, err := New(Config{Format: JSON, Out: w, Queue: 1, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	r := sampleHTTP()
	l.LogHTTP(&r) // taken by the writer, which blocks
	<-w.entered
	l.LogHTTP(&r) // waits in the queue
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10 {
			l.LogHTTP(&r) // dropped: must not block
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("LogHTTP blocked on a full queue")
	}
	if got := droppedOf(t, reg); got != 10 {
		t.Errorf("mesh_proxy_access_log_dropped_total = %v, want 10", got)
	}
	close(w.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := strings.Count(w.buf.String(), "\n"); n != 2 {
		t.Errorf("wrote %d lines, want the 2 queued:\n%s", n, w.buf.String())
	}
}

// droppedOf reads mesh_proxy_access_log_dropped_total from reg.
func droppedOf(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "mesh_proxy_access_log_dropped_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("mesh_proxy_access_log_dropped_total not registered")
	return 0
}

func TestParseFormat(t *testing.T) {
	for _, s := range []string{"", "apache", "json"} {
		if _, err := ParseFormat(s); err != nil {
			t.Errorf("ParseFormat(%q): %v", s, err)
		}
	}
	if _, err := ParseFormat("xml"); !errors.Is(err, ErrBadFormat) {
		t.Errorf("ParseFormat(xml) = %v, want ErrBadFormat", err)
	}
	if l, err := New(Config{}); l != nil || err != nil {
		t.Errorf("New(off) = %v, %v; want nil, nil", l, err)
	}
}

func TestWritesInOrder(t *testing.T) {
	var buf syncBuffer
	l, err := New(Config{Format: Apache, Out: &buf})
	if err != nil {
		t.Fatal(err)
	}
	r := sampleHTTP()
	for i := range 100 {
		r.Retries = i
		l.LogHTTP(&r)
	}
	c := TCP{Start: start, Direction: metrics.Inbound}
	l.LogTCP(&c)
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 101 {
		t.Fatalf("%d lines, want 101", len(lines))
	}
	if !strings.HasSuffix(lines[99], " retries=99") || !strings.Contains(lines[100], `"TCP `) {
		t.Errorf("lines out of order: %q, %q", lines[99], lines[100])
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
