package h1

import (
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/trace"
)

// startSpan begins the request's span, child of the context it came
// with, and puts the span in the head that goes on.
func (x *exchange) startSpan(t *trace.Tracer) {
	r := &x.cc.req
	x.span = t.Start(x.cc.p.cfg.Direction, methodString(r.get(r.method)), x.start, headRequest{r})
	x.span.Inject(reqEditor(r))
}

// endSpan ends the request's span with how it went.
func (x *exchange) endSpan() {
	cc := x.cc
	out := trace.Outcome{
		Direction: cc.p.cfg.Direction, Authority: cc.authority(), Path: string(cc.req.path),
		Status: x.status, GRPCStatus: -1, Route: x.key.Route, Retries: x.retries,
		PeerID: cc.info.ClientID,
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
