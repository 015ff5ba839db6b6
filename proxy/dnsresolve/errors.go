package dnsresolve

import (
	"errors"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

var (
	// ErrNotFound means the name does not exist (NXDOMAIN) or has no A or AAAA
	// records (NODATA, RFC 2308 §2.2). Such answers are cached negatively.
	ErrNotFound = errors.New("no such host")

	// ErrServerMisbehaving means a server answered with an error response
	// code such as SERVFAIL or REFUSED, or with an answer that does not match
	// the question. Such answers are not cached.
	ErrServerMisbehaving = errors.New("server misbehaving")

	// ErrInvalidName means the name is not a valid host name; no query was
	// sent.
	ErrInvalidName = errors.New("invalid host name")
)

// NoResponse is the Rcode of an Error when no server answered at all.
const NoResponse = -1

// Error is the error every failed lookup returns. Test for the kind of
// failure with errors.Is against ErrNotFound, ErrServerMisbehaving,
// ErrInvalidName, context.Canceled or context.DeadlineExceeded.
type Error struct {
	// Name is the name as passed to LookupHost.
	Name string
	// Query is the fully qualified name of the last query sent, which differs
	// from Name when the search list was applied; empty if nothing was sent.
	Query string
	// Server is the server (host:port) that gave the last answer or failure;
	// empty if no server was asked.
	Server string
	// Rcode is the response code of the last answer (RFC 1035 §4.1.1), or
	// NoResponse when no answer arrived.
	Rcode int
	// Err is the cause: one of the sentinel errors above, a network error,
	// or the context's error.
	Err error
}

// Error reads like "dnsresolve: lookup api (as api.svc.test.) via
// 10.0.0.10:53: no such host (NXDOMAIN)".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("dnsresolve: lookup ")
	b.WriteString(e.Name)
	if e.Query != "" && !strings.EqualFold(e.Query, dns.Fqdn(e.Name)) {
		b.WriteString(" (as " + e.Query + ")")
	}
	if e.Server != "" {
		b.WriteString(" via " + e.Server)
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	switch {
	case e.Rcode == dns.RcodeSuccess && errors.Is(e.Err, ErrNotFound):
		b.WriteString(" (no A or AAAA records)")
	case e.Rcode > dns.RcodeSuccess:
		b.WriteString(" (" + rcodeString(e.Rcode) + ")")
	}
	return b.String()
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

func rcodeString(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rcode)
}
