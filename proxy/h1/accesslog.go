package h1

import (
	"net/http"
	"strconv"
	"time"

	"github.com/mesh-dev/mesh/proxy/accesslog"
)

// logAccess queues the exchange's access log record, once it is over.
func (x *exchange) logAccess(l *accesslog.Logger) {
	cc, r := x.cc, &x.cc.req
	if s := x.sender; s != nil && s.over {
		x.reqBytes = s.n // the sender is done with it: finish received its outcome
	}
	rec := accesslog.HTTP{
		Start: x.start, Direction: cc.p.cfg.Direction, Client: cc.c.RemoteAddr().String(),
		Method: methodString(r.get(r.method)), Authority: cc.authority(), Path: headRequest{r}.Path(), Proto: proto(r.minor),
		Status: x.status, GRPCStatus: -1, Duration: time.Since(x.start),
		RequestBytes: x.reqBytes, ResponseBytes: x.resBytes,
		ClientID: cc.info.ClientID, ServerID: x.key.ServerID, Route: x.key.Route,
		Retries: x.retries, TraceID: x.span.TraceID(), Upstream: x.upstream(),
	}
	l.LogHTTP(&rec)
}

func proto(minor int) string {
	switch minor {
	case 0:
		return "HTTP/1.0"
	case 1:
		return "HTTP/1.1"
	}
	return "HTTP/1." + strconv.Itoa(minor)
}

// bodyLen is the length of the body writeLocal sends for a.
func (a local) bodyLen() int64 {
	if a.code == http.StatusNoContent || a.code == http.StatusNotModified {
		return 0
	}
	return int64(len(a.msg) + 1)
}
