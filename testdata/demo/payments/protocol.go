// Package payments is the demo's payment service. It speaks a tiny
// line-based protocol over plain TCP, so the mesh sees a protocol it does
// not know and forwards it as opaque TCP (port 7070 is not in the proxy's
// default opaque list, so detection reads the client's first bytes, finds
// neither HTTP nor TLS, and falls back to TCP).
//
// The client speaks first and may send any number of requests on one
// connection; each gets exactly one response line, in order:
//
//	request  = "PAY" SP order-id SP cents LF      ; CR LF is accepted too
//	order-id = 1*64 ( ALPHA / DIGIT / "-" / "_" / "." )
//	cents    = 1*12 DIGIT                         ; 1 to MaxCents, no leading zero
//	response = "OK" SP txid LF / "ERR" SP reason LF
//
// A malformed line gets "ERR <reason>" and the connection stays open; a
// line longer than MaxLineLen bytes, or one cut off by EOF, gets
// "ERR <reason>" and the server closes the connection, since it cannot
// tell where the next request starts.
package payments

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

const (
	// MaxLineLen bounds a request line, newline included.
	MaxLineLen = 128
	// MaxCents is the largest amount one payment may move ($1,000,000,000).
	MaxCents = 100_000_000_000
	// maxOrderIDLen bounds an order id.
	maxOrderIDLen = 64
)

// Request is one parsed PAY line.
type Request struct {
	OrderID string
	Cents   int64
}

// Errors of ParseRequest; each is also the reason sent after "ERR".
var (
	ErrUnknownCommand = errors.New("unknown command")
	ErrSyntax         = errors.New("syntax: want PAY <order-id> <cents>")
	ErrBadOrderID     = errors.New("bad order id")
	ErrBadAmount      = errors.New("bad amount")
)

// ParseRequest parses one request line, with or without its line ending.
// It never panics on any input (FuzzPaymentLine checks this).
func ParseRequest(line []byte) (Request, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	fields := strings.Split(string(line), " ")
	if fields[0] != "PAY" {
		return Request{}, ErrUnknownCommand
	}
	if len(fields) != 3 {
		return Request{}, ErrSyntax
	}
	if !validOrderID(fields[1]) {
		return Request{}, ErrBadOrderID
	}
	cents, err := parseCents(fields[2])
	if err != nil {
		return Request{}, err
	}
	return Request{OrderID: fields[1], Cents: cents}, nil
}

// Validate reports whether r can be sent: ErrBadOrderID or ErrBadAmount.
func (r Request) Validate() error {
	if !validOrderID(r.OrderID) {
		return ErrBadOrderID
	}
	if r.Cents <= 0 || r.Cents > MaxCents {
		return ErrBadAmount
	}
	return nil
}

// Format returns the request line, LF included. ParseRequest(r.Format())
// gives r back for every r that Validate accepts.
func (r Request) Format() string {
	return fmt.Sprintf("PAY %s %d\n", r.OrderID, r.Cents)
}

func validOrderID(id string) bool {
	if id == "" || len(id) > maxOrderIDLen {
		return false
	}
	for _, c := range []byte(id) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}

// parseCents accepts only plain decimal digits: strconv alone would also
// take "+5", "0x1f" (base 0) or "1_000", which would make two spellings of
// one request.
func parseCents(s string) (int64, error) {
	if s == "" || len(s) > 12 || s[0] == '0' {
		return 0, ErrBadAmount
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, ErrBadAmount
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > MaxCents {
		return 0, ErrBadAmount
	}
	return n, nil
}

// RefusedError is an "ERR <reason>" answer from the server.
type RefusedError struct {
	Reason string
}

func (e *RefusedError) Error() string { return "payment refused: " + e.Reason }

// ErrBadResponse means the server's answer was not an OK or ERR line.
var ErrBadResponse = errors.New("malformed payments response")

// ParseResponse parses one response line: the txid of "OK <txid>", a
// *RefusedError for "ERR <reason>", or ErrBadResponse.
func ParseResponse(line []byte) (txid string, err error) {
	s := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
	if id, ok := strings.CutPrefix(s, "OK "); ok && id != "" && !strings.ContainsAny(id, " \r\n") {
		return id, nil
	}
	if reason, ok := strings.CutPrefix(s, "ERR "); ok && reason != "" {
		return "", &RefusedError{Reason: reason}
	}
	return "", fmt.Errorf("%w: %q", ErrBadResponse, s)
}

// okLine and errLine format responses. Reasons come from this package,
// never from the client, so they hold no line breaks.
func okLine(txid string) string    { return "OK " + txid + "\n" }
func errLine(reason string) string { return "ERR " + reason + "\n" }
