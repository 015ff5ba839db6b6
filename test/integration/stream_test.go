package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestH2load loads the h2c path with nghttp2's h2load: many connections,
// many concurrent streams each, every response checked by h2load. The
// --h1 mode does the same over HTTP/1.1 keep-alive.
func TestH2load(t *testing.T) {
	netnstestRequire(t, "h2load")
	_, client, server := newLab(t)
	port := serveHTTP(t, server, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}))
	url := fmt.Sprintf("http://%s:%d/", server.IP, port)
	const n = 3000
	tests := []struct {
		name string
		args []string
	}{
		{name: "h2c", args: []string{"-c", "4", "-m", "16"}},
		{name: "HTTP/1.1", args: []string{"--h1", "-c", "8"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := watch(t, client, server)
			out := client.Run(t, "h2load", append(append([]string{"-n", strconv.Itoa(n)}, tc.args...), url)...)
			want := fmt.Sprintf("requests: %d total, %d started, %d done, %d succeeded, 0 failed, 0 errored", n, n, n, n)
			if !strings.Contains(out, want) {
				t.Fatalf("h2load did not report %q:\n%s", want, out)
			}
			c.requests(t, n)
		})
	}
}

// TestWebSocket upgrades an HTTP/1.1 request through both proxies and
// echoes messages both ways (github.com/coder/websocket on both ends); after
// the 101 the proxies forward the connection as an opaque stream.
func TestWebSocket(t *testing.T) {
	_, client, server := newLab(t)
	port := serveHTTP(t, server, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ws.SetReadLimit(4 << 20)
		for {
			typ, msg, err := ws.Read(r.Context())
			if err != nil {
				return
			}
			if err := ws.Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	}))
	c := watch(t, client, server)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: client.DialContext}}
	ws, res, err := websocket.Dial(ctx, fmt.Sprintf("ws://%s:%d/echo", server.IP, port), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer ws.CloseNow()
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	ws.SetReadLimit(4 << 20)
	big := make([]byte, 1<<20)
	rand.Read(big)
	for i, msg := range [][]byte{[]byte("hello"), big, []byte("bye")} {
		typ := websocket.MessageText
		if i == 1 {
			typ = websocket.MessageBinary
		}
		if err := ws.Write(ctx, typ, msg); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		gotTyp, got, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if gotTyp != typ || string(got) != string(msg) {
			t.Fatalf("message %d came back changed (%d bytes, type %v)", i, len(got), gotTyp)
		}
	}
	ws.Close(websocket.StatusNormalClosure, "done")
	c.requests(t, 1)
	c.atLeast(t, "mesh_proxy_http_responses_total", 1, "status_class", "1xx")
}

// TestLargeBodiesStreamInFlatMemory moves 100 MB each way through both
// proxies with curl, over HTTP/1.1 (chunked upload) and h2c, and checks that
// neither proxy's peak memory grew by more than a small fraction of that.
func TestLargeBodiesStreamInFlatMemory(t *testing.T) {
	netnstestRequire(t, "curl", "sh", "head")
	const size = 100 << 20
	// Growth allowed in a proxy's peak RSS while the bodies move: buffers
	// and runtime, never the body. A buffering proxy would grow by 100 MB.
	const maxGrowth = 16 << 20
	_, client, server := newLab(t)
	port := serveHTTP(t, server, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "received %d", n)
		case "/download":
			n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
			w.Header().Set("Content-Type", "application/octet-stream")
			io.CopyN(w, zeros{}, n)
		}
	}))
	base := fmt.Sprintf("http://%s:%d", server.IP, port)
	tests := []struct {
		name string
		flag string
	}{
		{name: "HTTP/1.1", flag: "--http1.1"},
		{name: "h2c", flag: "--http2-prior-knowledge"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := watch(t, client, server)
			rssBefore := [2]int64{client.rss(t), server.rss(t)}
			up := client.Run(t, "sh", "-c", fmt.Sprintf("head -c %d /dev/zero | curl -sS --fail-with-body %s -T - %s/upload", size, tc.flag, base))
			if want := fmt.Sprintf("received %d", size); up != want {
				t.Errorf("upload: server said %q, want %q", up, want)
			}
			down := client.Run(t, "curl", "-sS", "--fail-with-body", tc.flag, "-o", "/dev/null", "-w", "%{size_download}",
				fmt.Sprintf("%s/download?n=%d", base, size))
			if down != strconv.Itoa(size) {
				t.Errorf("download: curl got %s bytes, want %d", down, size)
			}
			c.requests(t, 2)
			for i, p := range []*meshPod{client, server} {
				growth := p.peakRSS(t) - rssBefore[i]
				t.Logf("%s proxy: RSS before %d MiB, peak %d MiB", p.Name, rssBefore[i]>>20, p.peakRSS(t)>>20)
				if growth > maxGrowth {
					t.Errorf("%s proxy peak RSS grew by %d MiB moving 100 MiB bodies, want under %d MiB", p.Name, growth>>20, maxGrowth>>20)
				}
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// TestTLSPassesThrough sends application TLS (curl to a Go TLS server) across
// both proxies: they detect the ClientHello and forward the bytes untouched,
// so the handshake verifies against the server's own certificate.
func TestTLSPassesThrough(t *testing.T) {
	netnstestRequire(t, "curl")
	_, client, server := newLab(t)
	cert, caPEM := selfSigned(t, server.IP.String())
	ln, err := server.Listen(":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "tls=%s alpn=%s", tls.VersionName(r.TLS.Version), r.TLS.NegotiatedProtocol)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	c := watch(t, client, server)
	url := fmt.Sprintf("https://%s:%d/", server.IP, ln.Addr().(*net.TCPAddr).Port)
	out := client.Run(t, "curl", "-sS", "--fail-with-body", "--cacert", caFile, url)
	if !regexp.MustCompile(`^tls=TLS 1\.3 alpn=h2$`).MatchString(out) {
		t.Errorf("server answered %q, want TLS 1.3 with ALPN h2 negotiated end to end", out)
	}
	c.detected(t, "tls", "client-hello", 1)
}

// selfSigned makes a certificate for ip, and its PEM to trust it by.
func selfSigned(t testing.TB, ip string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tls-passthrough-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, certPEM
}
