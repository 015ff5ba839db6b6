package tracectx

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// TestForward checks that the trace context fields of a received request,
// and only they, reach the HTTP requests and the gRPC calls made for it.
func TestForward(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var out *http.Request
	var md metadata.MD
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out, _ = http.NewRequest("GET", "http://orders/", nil)
		Forward(r.Context(), out)
		invoke := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
			md, _ = metadata.FromOutgoingContext(ctx)
			return nil
		}
		if err := UnaryClientInterceptor(r.Context(), "/pkg.S/M", nil, nil, nil, invoke); err != nil {
			t.Error(err)
		}
	}))
	in := httptest.NewRequest("GET", "/", nil)
	in.Header.Set("Traceparent", tp)
	in.Header.Set("X-B3-Sampled", "1")
	in.Header.Set("Authorization", "secret")
	h.ServeHTTP(httptest.NewRecorder(), in)
	if got := out.Header.Get("traceparent"); got != tp {
		t.Errorf("forwarded traceparent %q, want %q", got, tp)
	}
	if got := out.Header.Get("x-b3-sampled"); got != "1" {
		t.Errorf("forwarded x-b3-sampled %q, want 1", got)
	}
	if got := out.Header.Get("authorization"); got != "" {
		t.Errorf("forwarded authorization %q: only trace context may pass", got)
	}
	if got := md.Get("traceparent"); len(got) != 1 || got[0] != tp {
		t.Errorf("gRPC metadata traceparent %v, want [%s]", got, tp)
	}
	if got := md.Get("authorization"); len(got) != 0 {
		t.Errorf("gRPC metadata authorization %v: only trace context may pass", got)
	}
}
