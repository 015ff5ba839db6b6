package detect

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// maxRecord is the largest TLS plaintext record, with its header (RFC
// 8446, section 5.1): a ClientHello that fits one record fits this.
const maxRecord = 5 + 16384

// ClientHelloALPN completes the TLS record Peek classified as a
// ClientHello (reading the rest of it into c, still to be replayed) and
// returns the ALPN protocols it offers, so the inbound side can tell mesh
// TLS, which it terminates, from the application's own TLS, which it
// passes through untouched.
func ClientHelloALPN(c *Conn, timeout time.Duration) ([]string, error) {
	c.Conn.SetReadDeadline(time.Now().Add(timeout))
	defer c.Conn.SetReadDeadline(time.Time{})
	if err := c.fill(5); err != nil {
		return nil, err
	}
	n := 5 + (int(c.head[3])<<8 | int(c.head[4]))
	if n > maxRecord {
		return nil, fmt.Errorf("detect: TLS record of %d bytes is over the limit", n)
	}
	if err := c.fill(n); err != nil {
		return nil, err
	}
	return sniffALPN(c.head[:n])
}

// fill reads until n bytes are buffered.
func (c *Conn) fill(n int) error {
	for len(c.head) < n {
		buf := make([]byte, n-len(c.head))
		m, err := c.Conn.Read(buf)
		c.head = append(c.head, buf[:m]...)
		if err != nil && len(c.head) < n {
			return fmt.Errorf("detect: reading the ClientHello: %w", err)
		}
	}
	return nil
}

var errSniffed = errors.New("sniffed")

// sniffALPN lets crypto/tls parse the ClientHello in record, on a
// connection that only replays it and discards what the server would
// answer, and stops the handshake as soon as the hello is parsed.
func sniffALPN(record []byte) ([]string, error) {
	var protos []string
	parsed := false
	srv := tls.Server(replay{Reader: bytes.NewReader(record)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			protos, parsed = h.SupportedProtos, true
			return nil, errSniffed
		},
	})
	err := srv.Handshake()
	if !parsed {
		return nil, fmt.Errorf("detect: not a parsable ClientHello: %w", err)
	}
	return protos, nil
}

// replay is a net.Conn that reads from Reader and swallows writes.
type replay struct{ io.Reader }

func (replay) Write(b []byte) (int, error)      { return len(b), nil }
func (replay) Close() error                     { return nil }
func (replay) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (replay) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (replay) SetDeadline(time.Time) error      { return nil }
func (replay) SetReadDeadline(time.Time) error  { return nil }
func (replay) SetWriteDeadline(time.Time) error { return nil }
