package httpproxy

import (
	"context"
	"net/http"
	"strings"

	"github.com/mesh-dev/mesh/proxy/metrics"
)

// Between two proxies, HTTP/1.1 requests ride one multiplexed HTTP/2
// connection (inside mesh TLS) instead of a pool of HTTP/1 connections:
// the client proxy marks each such request with OrigProtoHeader, and the
// server proxy, seeing the mark from a peer that proved its identity,
// turns it back into HTTP/1.1 for its application. Linkerd does the same
// with l5d-orig-proto.
const OrigProtoHeader = "Mesh-Orig-Proto"

// wireProto says which protocol a request leaves the proxy in when that is
// not the one it arrived in.
type wireProto int

const (
	asArrived wireProto = iota
	asH2                // HTTP/1.1 upgraded between proxies
	asH1                // back to HTTP/1.1 for the application
)

type wireProtoKey struct{}

func wireProtoFrom(ctx context.Context) wireProto {
	w, _ := ctx.Value(wireProtoKey{}).(wireProto)
	return w
}

// chooseWireProto decides, once the endpoint is known, whether r changes
// protocol on its way out.
func (p *Proxy) chooseWireProto(r *http.Request) *http.Request {
	ctx := r.Context()
	switch {
	case p.cfg.Direction == metrics.Outbound && r.ProtoMajor == 1 && p.cfg.MeshTLS != nil &&
		identityFrom(ctx) != "" && !isUpgrade(r):
		return r.WithContext(context.WithValue(ctx, wireProtoKey{}, asH2))
	case p.cfg.Direction == metrics.Inbound && r.ProtoMajor == 2 && clientIDFrom(ctx) != "" &&
		r.Header.Get(OrigProtoHeader) == "HTTP/1.1":
		return r.WithContext(context.WithValue(ctx, wireProtoKey{}, asH1))
	}
	return r
}

// markWireProto sets or clears the mark on the outgoing request. A mark
// the application itself sent is never passed on.
func markWireProto(in, out *http.Request) {
	out.Header.Del(OrigProtoHeader)
	if wireProtoFrom(in.Context()) == asH2 {
		out.Header.Set(OrigProtoHeader, "HTTP/1.1")
	}
}

// isUpgrade reports a request that takes over its connection (WebSocket,
// CONNECT): those cannot become one stream of a shared HTTP/2 connection.
func isUpgrade(r *http.Request) bool {
	if r.Method == http.MethodConnect || r.Header.Get("Upgrade") != "" {
		return true
	}
	for _, v := range r.Header.Values("Connection") {
		if strings.Contains(strings.ToLower(v), "upgrade") {
			return true
		}
	}
	return false
}

// useH2 says whether the outgoing request goes over the HTTP/2 transport.
func useH2(r *http.Request) bool {
	switch wireProtoFrom(r.Context()) {
	case asH2:
		return true
	case asH1:
		return false
	}
	return r.ProtoMajor == 2
}
