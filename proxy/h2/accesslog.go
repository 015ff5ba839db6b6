package h2

import (
	"time"

	"github.com/mesh-dev/mesh/proxy/accesslog"
)

// logAccess queues the stream's access log record, as it closes. Called
// with s.mu held.
func (s *stream) logAccess(l *accesslog.Logger) {
	x := &s.x
	proto := "HTTP/2.0"
	if s.origH1 {
		proto = "HTTP/1.1" // the client's, carried over HTTP/2 by its proxy
	}
	rec := accesslog.HTTP{
		Start: x.start, Direction: s.sc.p.cfg.Direction, Client: s.sc.c.RemoteAddr().String(),
		Method: s.method, Authority: s.authority, Path: s.path, Proto: proto,
		Status: x.status, GRPCStatus: s.grpcStatus, Duration: time.Since(x.start),
		RequestBytes: s.req.moved, ResponseBytes: s.res.moved,
		ClientID: s.sc.info.ClientID, ServerID: x.key.ServerID, Route: x.key.Route,
		Retries: x.retries + x.resent, TraceID: x.span.TraceID(), Upstream: x.upstream(),
	}
	l.LogHTTP(&rec)
}
