package h2

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
	"github.com/mesh-dev/mesh/proxy/httpproxy"
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

func TestAccessLog(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		io.WriteString(w, "hello")
		w.Header().Set("Grpc-Status", "5")
	}))
	out := &logBuffer{}
	l, err := accesslog.New(accesslog.Config{Format: accesslog.JSON, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	p := startTestProxy(t, backend, func(c *Config, _ *httpproxy.ConnInfo) { c.AccessLog = l })
	req, _ := http.NewRequest("POST", "http://"+p.addr+"/pkg.Svc/Get", strings.NewReader("abcd"))
	req.Header.Set("Content-Type", "application/grpc")
	res, err := h2cClient(t).Do(req)
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
		"kind": "http", "direction": "inbound", "method": "POST", "authority": p.addr,
		"path": "/pkg.Svc/Get", "proto": "HTTP/2.0", "status": 200.0, "grpc_status": 5.0,
		"request_bytes": 4.0, "response_bytes": 5.0, "client_identity": "", "server_identity": "",
		"route": nil, "upstream": backend, "retries": 0.0,
	}
	ignore := cmpopts.IgnoreMapEntries(func(k string, _ any) bool { return k == "time" || k == "client" || k == "duration_ms" })
	if diff := cmp.Diff(want, got, ignore); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
}
