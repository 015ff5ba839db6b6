package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/mesh-dev/mesh/proxy/accesslog"
)

// lockedBuffer is an access log's writer that a test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestAccessLogTCP: an opaque connection gets one line, with its bytes
// each way; an HTTP request on the same proxy gets one too.
func TestAccessLogTCP(t *testing.T) {
	target := tcpBackend(t, echoHalfClose)
	out := &lockedBuffer{}
	p := startProxy(t, target, func(c *Config) {
		c.AccessLog, c.AccessLogOut = accesslog.JSON, out
		c.OpaquePorts.UnmarshalText([]byte(target[len("127.0.0.1:"):]))
	})
	c, err := net.Dial("tcp", p.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("ping!"))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Count(out.String(), "\n") == 1 })
	var rec map[string]any
	if err := json.Unmarshal([]byte(out.String()), &rec); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if rec["kind"] != "tcp" || rec["destination"] != target || rec["bytes_from_client"] != 5.0 || rec["bytes_to_client"] != 5.0 || rec["direction"] != "inbound" {
		t.Errorf("record %v: want tcp to %s, 5 bytes each way, inbound", rec, target)
	}
}

func TestAccessLogHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hi") }))
	t.Cleanup(srv.Close)
	backend := srv.Listener.Addr().String()
	out := &lockedBuffer{}
	p := startProxy(t, backend, func(c *Config) { c.AccessLog, c.AccessLogOut = accesslog.Apache, out })
	res, err := http.Get("http://" + p.inbound + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	waitFor(t, func() bool { return strings.Count(out.String(), "\n") == 1 })
	if line := out.String(); !strings.Contains(line, `"GET /hello HTTP/1.1" 200 `) || !strings.Contains(line, "direction=inbound") {
		t.Errorf("line %q: want GET /hello, 200, inbound", line)
	}
}

func TestAccessLogFlag(t *testing.T) {
	for _, tc := range []struct {
		arg  string
		want accesslog.Format
		err  bool
	}{{arg: "json", want: accesslog.JSON}, {arg: "apache", want: accesslog.Apache}, {arg: "", want: accesslog.Off}, {arg: "xml", err: true}} {
		c := DefaultConfig()
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.AddFlags(fs)
		err := fs.Parse([]string{"--access-log=" + tc.arg})
		if (err != nil) != tc.err || c.AccessLog != tc.want {
			t.Errorf("--access-log=%s: %q, %v; want %q, error %v", tc.arg, c.AccessLog, err, tc.want, tc.err)
		}
	}
}
