package h2

import (
	"bytes"
	"context"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// TestMetricsClassifyResponses: every request is counted under its route
// once its response is over, a gRPC response by its grpc-status, as
// net/http's path did it.
func TestMetricsClassifyResponses(t *testing.T) {
	backend, _ := startGRPC(t)
	p := startTestProxy(t, backend)
	client := grpcClient(t, p.addr)
	ctx := context.Background()
	for range 3 {
		if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.Internal)}})
	rec := httptest.NewRecorder()
	p.m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	fams, err := metricstest.Parse(bytes.NewReader(rec.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		labels []string
		want   float64
	}{
		{name: "mesh_proxy_http_requests_total", labels: []string{"target_addr", backend}, want: 4},
		{name: "mesh_proxy_http_responses_total", labels: []string{"classification", "success"}, want: 3},
		{name: "mesh_proxy_http_responses_total", labels: []string{"classification", "failure"}, want: 1},
	}
	for _, tc := range tests {
		if got := fams.Sum(tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%q = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}
