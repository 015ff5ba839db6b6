package h2

import (
	"strings"

	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/trace"
)

// startSpan begins the request's span, child of the context it came
// with, and puts the span in the fields that go on. Called with s.mu
// held, before the request is sent.
func (s *stream) startSpan(t *trace.Tracer) {
	s.x.span = t.Start(s.sc.p.cfg.Direction, s.method, s.x.start, routeRequest{s})
	e := fieldEditor{fields: s.fields, owned: true} // the stream's own copy
	s.x.span.Inject(&e)
	s.fields = e.fields
}

// endSpan ends the request's span with how it went. Called with s.mu
// held, as the stream closes.
func (s *stream) endSpan() {
	x := &s.x
	path, _, _ := strings.Cut(s.path, "?")
	out := trace.Outcome{
		Direction: s.sc.p.cfg.Direction, Authority: s.authority, Path: path,
		Status: x.status, GRPCStatus: s.grpcStatus, Route: x.key.Route, Retries: x.retries + x.resent,
		PeerID: s.sc.info.ClientID,
	}
	if out.Direction == metrics.Outbound {
		out.PeerID = x.key.ServerID
	}
	out.Upstream = x.upstream()
	x.span.End(&out)
}

// upstream is the endpoint the request went to, for its span and access
// log line; "" when it reached none.
func (x *exchange) upstream() string {
	if x.unreached == "" && x.ep.Addr.IsValid() {
		return x.ep.Addr.String()
	}
	return ""
}
