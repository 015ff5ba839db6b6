// Package tracectx carries a request's trace context from the request a
// demo service received to the requests it sends for it, which is all a
// meshed application has to do for the proxies' spans to join into one
// trace (docs/observability.md): the proxies make the spans, the
// application only forwards the W3C Trace Context and B3 headers. The
// demo has no tracing library of its own on purpose: it shows the least
// an application must do.
package tracectx

import (
	"context"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Headers are the trace context fields forwarded, lower case: W3C Trace
// Context and B3, single and multi header.
var Headers = []string{
	"traceparent", "tracestate",
	"b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
}

type key struct{}

// Middleware keeps the trace context fields of each request in its
// context, for Forward and UnaryClientInterceptor.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var kept http.Header
		for _, name := range Headers {
			if vs := r.Header.Values(name); len(vs) > 0 {
				if kept == nil {
					kept = http.Header{}
				}
				kept[http.CanonicalHeaderKey(name)] = vs
			}
		}
		if kept != nil {
			r = r.WithContext(context.WithValue(r.Context(), key{}, kept))
		}
		next.ServeHTTP(w, r)
	})
}

// Forward sets on req the trace context fields kept in ctx.
func Forward(ctx context.Context, req *http.Request) {
	kept, _ := ctx.Value(key{}).(http.Header)
	for name, vs := range kept {
		req.Header[name] = vs
	}
}

// UnaryClientInterceptor adds the trace context fields kept in a call's
// context to its gRPC metadata.
func UnaryClientInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if kept, _ := ctx.Value(key{}).(http.Header); kept != nil {
		pairs := make([]string, 0, 2*len(kept))
		for name, vs := range kept {
			for _, v := range vs {
				pairs = append(pairs, name, v) // metadata lower-cases the keys
			}
		}
		ctx = metadata.AppendToOutgoingContext(ctx, pairs...)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}
