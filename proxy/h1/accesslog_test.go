package h1

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/mesh-dev/mesh/proxy/accesslog"
)

// logBuffer is a Writer the access log writes to and a test reads.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines waits until n lines are written, and returns them.
func (b *logBuffer) lines(t testing.TB, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		b.mu.Lock()
		s := b.buf.String()
		b.mu.Unlock()
		if got := strings.Count(s, "\n"); got >= n {
			return strings.SplitN(strings.TrimSuffix(s, "\n"), "\n", n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d access log lines, have:\n%s", n, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newAccessLog(t testing.TB, f accesslog.Format) (*accesslog.Logger, *logBuffer) {
	t.Helper()
	out := &logBuffer{}
	l, err := accesslog.New(accesslog.Config{Format: f, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l, out
}

func TestAccessLog(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "hello")
	}))
	l, out := newAccessLog(t, accesslog.JSON)
	p := startTestProxy(t, backend, func(c *Config) { c.AccessLog = l })
	req, _ := http.NewRequest("POST", "http://"+p.addr+"/p%22?q=1", strings.NewReader("abcd"))
	req.Host = "web.demo:80"
	req.ContentLength = 4
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()

	var got map[string]any
	line := out.lines(t, 1)[0]
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	want := map[string]any{
		"kind": "http", "direction": "inbound", "method": "POST", "authority": "web.demo:80",
		"path": "/p%22?q=1", "proto": "HTTP/1.1", "status": 201.0, "grpc_status": nil,
		"request_bytes": 4.0, "response_bytes": 5.0, "client_identity": "", "server_identity": "",
		"route": nil, "upstream": backend, "retries": 0.0,
	}
	ignore := cmpopts.IgnoreMapEntries(func(k string, _ any) bool { return k == "time" || k == "client" || k == "duration_ms" })
	if diff := cmp.Diff(want, got, ignore); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
}

// TestAccessLogLocal: an answer of the proxy's own (no endpoint to
// connect to) is logged too, with no upstream.
func TestAccessLogLocal(t *testing.T) {
	l, out := newAccessLog(t, accesslog.Apache)
	p := startTestProxy(t, "127.0.0.1:1", func(c *Config) { c.AccessLog = l })
	res, err := http.Get("http://" + p.addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	line := out.lines(t, 1)[0]
	if !strings.Contains(line, `"GET /x HTTP/1.1" 502 `) || !strings.Contains(line, ` upstream="-"`) {
		t.Errorf("line %q: want a 502 with no upstream", line)
	}
}
