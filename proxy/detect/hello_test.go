package detect

import (
	"context"
	"crypto/tls"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestClientHelloALPN reads the ALPN list of a real crypto/tls client's
// ClientHello, and the bytes are still there to replay afterwards.
func TestClientHelloALPN(t *testing.T) {
	for _, tc := range []struct {
		name   string
		protos []string
	}{
		{name: "mesh", protos: []string{"mesh.dev/proxy.v1"}},
		{name: "h2 and http/1.1", protos: []string{"h2", "http/1.1"}},
		{name: "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			go tls.Client(client, &tls.Config{ServerName: "x", NextProtos: tc.protos, InsecureSkipVerify: true}).Handshake()
			res, c, err := Peek(context.Background(), server, time.Second)
			if err != nil || res.Protocol != TLS {
				t.Fatalf("Peek: %v %v", res, err)
			}
			got, err := ClientHelloALPN(c, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.protos) {
				t.Errorf("ALPN %q, want %q", got, tc.protos)
			}
			if b := c.Buffered(); len(b) < 5 || b[0] != 22 {
				t.Errorf("the ClientHello is no longer buffered for replay: % x", b[:min(len(b), 5)])
			}
		})
	}
}

func TestClientHelloALPNRejectsGarbage(t *testing.T) {
	if _, err := sniffALPN([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0}); err == nil {
		t.Error("a truncated ClientHello parsed")
	}
}

// TestClientHelloALPNAnyLength: the record length is read right whatever
// its low bits (a precedence slip once read 5|len instead of 5+len, which
// cut some hellos short): hellos of 16 consecutive sizes all parse.
func TestClientHelloALPNAnyLength(t *testing.T) {
	for n := 1; n <= 16; n++ {
		client, server := net.Pipe()
		name := strings.Repeat("a", n) + ".example"
		go tls.Client(client, &tls.Config{ServerName: name, NextProtos: []string{"mesh.dev/proxy.v1"}, InsecureSkipVerify: true}).Handshake()
		_, c, err := Peek(context.Background(), server, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ClientHelloALPN(c, time.Second)
		if err != nil || !slices.Equal(got, []string{"mesh.dev/proxy.v1"}) {
			t.Errorf("server name of %d bytes: ALPN %q, %v", len(name), got, err)
		}
		client.Close()
		server.Close()
	}
}
