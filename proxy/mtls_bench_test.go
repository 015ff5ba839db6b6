package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mesh-dev/mesh/identity/client/clienttest"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/identity/meshtls"
	"github.com/mesh-dev/mesh/internal/ports"
)

// The benchmarks below put a number on mesh TLS between two proxies, next
// to plain text: the handshake of a new connection alone, a request over an
// established connection, and an exchange on a new connection. All of them
// run with
//
//	go test -run '^$' -bench '^BenchmarkMesh' -benchmem -cpu 1 ./proxy/
//
// (make bench-mtls; docs/benchmarks.md holds the figures). Besides ns/op
// each reports cpu-ns/op, the CPU time of the whole test process per
// operation (see cpuTime).

// BenchmarkMeshTLSHandshake measures what a new connection between two
// proxies costs on loopback TCP, without the proxies around it: "tcp" is
// the bare connect and accept, "mtls" adds the full TLS 1.3 handshake of
// meshtls.ClientConfig against meshtls.ServerConfig, each side presenting
// its SVID and verifying the other's chain against the trust bundle, as
// the proxies do. Static sources (clienttest.Source) stand in for the
// rotating client, so that only TLS is measured.
//
// One op is both ends of one connection, in one process.
// handshakes/s/core is b.N over the CPU time both ends used: a proxy doing
// one end of each handshake does about twice as many. With -cpu 1 and an
// idle machine, ns/op and cpu-ns/op agree. Run it with
//
//	go test -run '^$' -bench MeshTLSHandshake -benchmem -cpu 1 ./proxy/
func BenchmarkMeshTLSHandshake(b *testing.B) {
	ca := identitytest.NewCA(b)
	serverID, clientID := ca.ID("shop", "api"), ca.ID("shop", "web")
	serverSrc := clienttest.NewSource(ca.IssueSVID(b, serverID), ca.Bundle())
	clientSrc := clienttest.NewSource(ca.IssueSVID(b, clientID), ca.Bundle())
	serverCfg := meshtls.ServerConfig(serverSrc, serverSrc, nil)
	plain := func(_ context.Context, c net.Conn) (net.Conn, error) { return c, nil }
	tests := []struct {
		name string
		// accept and connect complete the server's and the client's end of
		// a new connection.
		accept, connect func(context.Context, net.Conn) (net.Conn, error)
	}{
		{name: "tcp", accept: plain, connect: plain},
		{
			name: "mtls",
			accept: func(ctx context.Context, c net.Conn) (net.Conn, error) {
				tc := tls.Server(c, serverCfg)
				return tc, meshHandshake(ctx, tc, clientID)
			},
			connect: func(ctx context.Context, c net.Conn) (net.Conn, error) {
				// One config per connection, as the proxy builds them.
				tc := tls.Client(c, meshtls.ClientConfig(clientSrc, clientSrc, serverID))
				return tc, meshHandshake(ctx, tc, serverID)
			},
		},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			addr, accepted := handshakeServer(b, tc.accept)
			var d net.Dialer
			eof := make([]byte, 1)
			b.ReportAllocs()
			start := cpuTime(b)
			for b.Loop() {
				raw, err := d.DialContext(b.Context(), "tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				raw.SetDeadline(time.Now().Add(10 * time.Second))
				c, err := tc.connect(b.Context(), raw)
				if err != nil {
					raw.Close()
					b.Fatalf("client: %v", err)
				}
				if err := <-accepted; err != nil {
					c.Close()
					b.Fatalf("server: %v", err)
				}
				// The server closes first, so TIME_WAIT stays on its side
				// and not on the ephemeral ports a fast loop would run out
				// of.
				if n, err := c.Read(eof); n != 0 || err != io.EOF {
					b.Fatalf("after the handshake: read %d bytes, %v; want the server's close", n, err)
				}
				c.Close()
			}
			reportCPU(b, start, "handshakes/s/core")
		})
	}
}

// meshHandshake completes c's mesh TLS handshake and checks what the
// proxies rely on: the mesh ALPN, a full handshake, and peer as the
// verified ID at the other end.
func meshHandshake(ctx context.Context, c *tls.Conn, peer spiffeid.ID) error {
	if err := c.HandshakeContext(ctx); err != nil {
		return err
	}
	cs := c.ConnectionState()
	if cs.NegotiatedProtocol != meshtls.ALPN || cs.DidResume {
		return fmt.Errorf("negotiated %q, resumed %v; want %q in a full handshake", cs.NegotiatedProtocol, cs.DidResume, meshtls.ALPN)
	}
	got, err := meshtls.PeerID(cs)
	if err != nil {
		return err
	}
	if got != peer {
		return fmt.Errorf("peer is %s, want %s", got, peer)
	}
	return nil
}

// handshakeServer accepts connections on loopback one at a time and
// completes each with accept, sends the result on the returned channel,
// then closes the connection. It stops when the benchmark ends.
func handshakeServer(tb testing.TB, accept func(context.Context, net.Conn) (net.Conn, error)) (string, <-chan error) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	results := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			raw.SetDeadline(time.Now().Add(10 * time.Second))
			c, err := accept(tb.Context(), raw)
			results <- err
			c.Close()
		}
	}()
	tb.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), results
}

// BenchmarkMeshRequest measures a request (GET, 2-byte answer) over an
// established connection through two proxies, as two pods run them
// (startMeshPair): the client's outbound side sends it to the server
// proxy's inbound side, which forwards it to the application. "plaintext"
// runs the proxies without identity, "mtls" with one each, so the hop
// between them is mesh TLS. The client keeps its connection alive and the
// client proxy its upstream one, so the loop holds no handshake:
// tls-handshakes/op says so.
//
// The client speaks HTTP/1.1. Between meshed proxies that rides one
// HTTP/2 connection (httpproxy.OrigProtoHeader), so "mtls" differs from
// "plaintext" in the hop's protocol as well as in TLS. In the -h2c pair
// the client speaks h2c and the hop is HTTP/2 either way: their ratio is
// TLS alone. ns/op, allocs and cpu-ns/op are the whole path's: client,
// both proxies and the application share the process. Run it with
//
//	go test -run '^$' -bench MeshRequest -benchmem -cpu 1 ./proxy/
func BenchmarkMeshRequest(b *testing.B) {
	clients := []struct {
		suffix string
		client func(testing.TB) *http.Client
	}{{"", h1Client}, {"-h2c", h2cClient}}
	for _, c := range clients {
		for _, mtls := range []bool{false, true} {
			b.Run(meshMode(mtls)+c.suffix, func(b *testing.B) {
				benchmarkMeshRequest(b, c.client, mtls)
			})
		}
	}
}

// benchmarkMeshRequest is one case of BenchmarkMeshRequest, with a client
// from newClient.
func benchmarkMeshRequest(b *testing.B, newClient func(testing.TB) *http.Client, mtls bool) {
	app := backend(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok")
	}))
	pair := startMeshPair(b, app, mtls)
	client := newClient(b) // its idle connections close before the proxies stop
	url := "http://" + pair.outbound + "/"
	get := func() error {
		res, err := client.Get(url)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", res.Status)
		}
		return err
	}
	// The first request waits for the destination service's answer
	// and opens the connections the loop then reuses.
	if err := get(); err != nil {
		b.Fatal(err)
	}
	before := pair.checkMode(b, mtls)
	b.ReportAllocs()
	start := cpuTime(b)
	for b.Loop() {
		if err := get(); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, start, "")
	b.ReportMetric((pair.meshTLSConns(b)-before)/float64(b.N), "tls-handshakes/op")
}

// BenchmarkMeshNewConnection measures an exchange on a new connection
// through the same two proxies as BenchmarkMeshRequest: the client
// connects, sends a line, and reads it echoed back until the application
// closes. The proxies pool their HTTP upstream connections, with no knob to
// turn that off, so these connections are opaque TCP (opaque ports on both
// proxies): the client proxy dials the server proxy for each, in "mtls"
// with a full mesh TLS handshake (tls-handshakes/op). The application
// closes first, so the TIME_WAIT of the three TCP connections of an op
// stays on the listening sides, not on ephemeral ports. Run it with
//
//	go test -run '^$' -bench MeshNewConnection -benchmem -cpu 1 ./proxy/
func BenchmarkMeshNewConnection(b *testing.B) {
	line := []byte("ping\n")
	for _, mtls := range []bool{false, true} {
		b.Run(meshMode(mtls), func(b *testing.B) {
			app := tcpBackend(b, echoLine)
			appPort := netip.MustParseAddrPort(app).Port()
			servicePort := netip.MustParseAddrPort(meshService).Port()
			pair := startMeshPair(b, app, mtls, func(c *Config) {
				c.OpaquePorts = ports.New(ports.Range{Lo: servicePort, Hi: servicePort}, ports.Range{Lo: appPort, Hi: appPort})
			})
			var d net.Dialer
			buf := make([]byte, len(line)+1)
			exchange := func() error {
				c, err := d.DialContext(b.Context(), "tcp", pair.outbound)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(line); err != nil {
					return err
				}
				n, err := io.ReadAtLeast(c, buf, len(line))
				if err != nil || !bytes.Equal(buf[:n], line) {
					return fmt.Errorf("echo %q, %v; want %q", buf[:n], err, line)
				}
				if n, err := c.Read(buf); n != 0 || err != io.EOF {
					return fmt.Errorf("after the echo: read %d bytes, %v; want the application's close", n, err)
				}
				return nil
			}
			if err := exchange(); err != nil { // waits for the destination service
				b.Fatal(err)
			}
			before := pair.checkMode(b, mtls)
			b.ReportAllocs()
			start := cpuTime(b)
			for b.Loop() {
				if err := exchange(); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, start, "")
			b.ReportMetric((pair.meshTLSConns(b)-before)/float64(b.N), "tls-handshakes/op")
		})
	}
}

// echoLine answers the first line it reads, then closes.
func echoLine(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(c, 64).ReadSlice('\n')
	if err == nil {
		c.Write(line)
	}
}

func meshMode(mtls bool) string {
	if mtls {
		return "mtls"
	}
	return "plaintext"
}

// meshService is the address the client application dials in the mesh
// benchmarks. The destination service names the server proxy as its one
// endpoint, so nothing is ever dialled there.
const meshService = "127.0.0.1:1"

// meshPair is two proxies on loopback, as two pods run them: connections
// to meshService enter the client proxy's outbound side at outbound, go to
// the server proxy's inbound side, and from there to the application.
type meshPair struct {
	client, server *testProxy
	outbound       string
}

// startMeshPair starts a meshPair in front of app. With mtls, both proxies
// get an identity from the real identity service (startPKI) and the
// destination service names the server proxy's, so the hop between them
// is mesh TLS; without, neither has one and the hop is plain text. mutate
// applies to both proxies' configs.
func startMeshPair(tb testing.TB, app string, mtls bool, mutate ...func(*Config)) *meshPair {
	tb.Helper()
	var serverID, clientID []func(*Config)
	identities := map[string]string{}
	var pki *meshPKI
	if mtls {
		pki = startPKI(tb)
		serverID = append(serverID, pki.withIdentity(tb, "shop", "api"))
		clientID = append(clientID, pki.withIdentity(tb, "shop", "web"))
	}
	server := startProxy(tb, app, slices.Concat(mutate, serverID)...)
	waitReady(tb, server)
	if mtls {
		identities[server.inbound] = pki.ca.ID("shop", "api").String()
	}
	start := startDestination
	if mtls {
		start = pki.startDestination
	}
	dest := start(tb, &fakeDestination{
		sets: map[string][]string{meshService: {server.inbound}}, identities: identities})
	useDest := func(c *Config) { c.DestinationAddr = dest }
	client := startProxy(tb, meshService, append(slices.Concat(mutate, clientID), useDest)...)
	waitReady(tb, client)
	_, out, _ := client.Addrs()
	return &meshPair{client: client, server: server, outbound: out.String()}
}

// meshTLSConns returns how many mesh TLS connections the server proxy has
// terminated.
func (p *meshPair) meshTLSConns(tb testing.TB) float64 {
	tb.Helper()
	return p.server.counter(tb, "mesh_proxy_protocol_detections_total", "protocol", "mesh-tls")
}

// checkMode fails the benchmark unless the traffic so far crossed the hop
// between the proxies in mesh TLS exactly when mtls is set, and returns
// meshTLSConns.
func (p *meshPair) checkMode(tb testing.TB, mtls bool) float64 {
	tb.Helper()
	n := p.meshTLSConns(tb)
	if (n > 0) != mtls {
		tb.Fatalf("the server proxy terminated %v mesh TLS connections; want some only with mtls (%v)", n, mtls)
	}
	return n
}

// cpuTime returns the CPU time, user and system, the test process has used
// so far (getrusage(2)): every goroutine's work and the kernel's on its
// behalf, loopback TCP included. Per op it says what ns/op cannot once the
// work spreads over several threads, and it moves less on a shared machine,
// where wall time also counts the time other processes held the CPUs.
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports cpu-ns/op, the process's CPU time since start per op,
// and, when perCore is not empty, ops per CPU second under that unit. Call
// it once b.Loop has returned false.
func reportCPU(b *testing.B, start time.Duration, perCore string) {
	perOp := float64(cpuTime(b)-start) / float64(b.N)
	b.ReportMetric(perOp, "cpu-ns/op")
	if perCore != "" {
		b.ReportMetric(1e9/perOp, perCore)
	}
}
