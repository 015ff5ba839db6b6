package meshtls_test

import (
	"crypto/tls"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/identity/client/clienttest"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/identity/meshtls"
)

// BenchmarkHandshake measures a new mesh TLS connection between two
// proxies on loopback TCP, both ends in this process: "full" is a client
// without a session cache, as every connection was before resumption;
// "resumed" a client whose SessionCache holds a session with the server,
// as a proxy's second and later connections to a server are. Both verify
// the peer's chain and ID on every handshake. One op is both ends of one
// connection; handshakes/s/core is b.N over the CPU time of the whole
// process (a proxy doing one end of each does about twice as many). Run it
// with
//
//	go test -run '^$' -bench Handshake -benchmem -cpu 1 ./identity/meshtls/
func BenchmarkHandshake(b *testing.B) {
	ca := identitytest.NewCA(b)
	serverID, clientID := ca.ID("shop", "api"), ca.ID("shop", "web")
	serverSrc := clienttest.NewSource(ca.IssueSVID(b, serverID), ca.Bundle())
	clientSrc := clienttest.NewSource(ca.IssueSVID(b, clientID), ca.Bundle())
	serverCfg := meshtls.ServerConfig(serverSrc, serverSrc, nil)
	meshtls.NewTicketKeys(serverCfg)
	cache := meshtls.NewSessionCache(64)
	for _, bc := range []struct {
		name    string
		resumed bool
		config  func() *tls.Config
	}{
		{name: "full", config: func() *tls.Config { return meshtls.ClientConfig(clientSrc, clientSrc, serverID) }},
		{name: "resumed", resumed: true, config: func() *tls.Config { return cache.ClientConfig(clientSrc, clientSrc, serverID) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			addr := handshakeServer(b, serverCfg)
			connect := func(wantResumed bool) {
				raw, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				defer raw.Close()
				raw.SetDeadline(time.Now().Add(10 * time.Second))
				c := tls.Client(raw, bc.config())
				if err := c.Handshake(); err != nil {
					b.Fatalf("handshake: %v", err)
				}
				// The server's close, read here, also brings its session
				// ticket, which the cache keeps.
				if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					b.Fatalf("after the handshake: read %d bytes, %v; want the server's close", n, err)
				}
				if c.ConnectionState().DidResume != wantResumed {
					b.Fatalf("resumed %v, want %v", c.ConnectionState().DidResume, wantResumed)
				}
			}
			if bc.resumed {
				connect(false) // the session to resume; its full handshake is not counted
			}
			b.ReportAllocs()
			start := cpuTime(b)
			for b.Loop() {
				connect(bc.resumed)
			}
			perOp := float64(cpuTime(b)-start) / float64(b.N)
			b.ReportMetric(perOp, "cpu-ns/op")
			b.ReportMetric(1e9/perOp, "handshakes/s/core")
		})
	}
}

// handshakeServer accepts connections on loopback until the benchmark
// ends, completing each one's handshake with cfg and closing it.
func handshakeServer(b *testing.B, cfg *tls.Config) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			raw.SetDeadline(time.Now().Add(10 * time.Second))
			c := tls.Server(raw, cfg)
			// The server closes first, so TIME_WAIT stays on its side and
			// not on the ephemeral ports a fast loop would run out of.
			if err := c.Handshake(); err != nil {
				b.Errorf("server handshake: %v", err)
			}
			c.Close()
		}
	}()
	b.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
