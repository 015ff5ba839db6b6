package catalog

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	catalogv1 "github.com/mesh-dev/mesh/api/demo/catalog/v1"
	"github.com/mesh-dev/mesh/testdata/demo/demotest"
	"github.com/mesh-dev/mesh/testdata/demo/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// client starts a catalog server with cfg and returns a client for it.
func client(t testing.TB, cfg Config) catalogv1.CatalogClient {
	t.Helper()
	addr := demotest.Serve(t, func(ctx context.Context, ln net.Listener) error {
		return Serve(ctx, ln, cfg)
	})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return catalogv1.NewCatalogClient(conn)
}

func TestListProducts(t *testing.T) {
	c := client(t, Config{})
	resp, err := c.ListProducts(t.Context(), &catalogv1.ListProductsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Products, resp.GetProducts(), protocmp.Transform()); diff != "" {
		t.Errorf("ListProducts (-want +got):\n%s", diff)
	}
	// The answer is a copy: a client-side change must not reach the table.
	resp.Products[0].Name = "changed"
	if Products[0].Name == "changed" {
		t.Error("ListProducts shares its products with the catalog")
	}
}

func TestGetProduct(t *testing.T) {
	c := client(t, Config{})
	tests := []struct {
		name     string
		id       string
		wantCode codes.Code
		want     *catalogv1.Product
	}{
		{name: "first", id: "coffee", want: Products[0]},
		{name: "last", id: "sidecar", want: Products[len(Products)-1]},
		{name: "unknown", id: "tea", wantCode: codes.NotFound},
		{name: "empty", id: "", wantCode: codes.NotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.GetProduct(t.Context(), &catalogv1.GetProductRequest{Id: tc.id})
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("GetProduct(%q) code = %v (%v), want %v", tc.id, got, err, tc.wantCode)
			}
			if diff := cmp.Diff(tc.want, resp.GetProduct(), protocmp.Transform()); diff != "" {
				t.Errorf("GetProduct(%q) (-want +got):\n%s", tc.id, diff)
			}
		})
	}
}

func TestFault(t *testing.T) {
	c := client(t, Config{Fault: fault.Fault{FailRate: 1, Latency: 20 * time.Millisecond}})
	start := time.Now()
	_, err := c.GetProduct(t.Context(), &catalogv1.GetProductRequest{Id: "mug"})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("GetProduct with fail-rate 1 = %v, want UNAVAILABLE", err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("GetProduct took %s, want at least the injected 20ms", d)
	}
}

func TestGracefulShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	log, received := demotest.Logged("RPC received")
	go func() {
		done <- Serve(ctx, ln, Config{Fault: fault.Fault{Latency: 200 * time.Millisecond}, Logger: log})
	}()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rpc := make(chan error, 1)
	go func() {
		_, err := catalogv1.NewCatalogClient(conn).ListProducts(t.Context(), &catalogv1.ListProductsRequest{})
		rpc <- err
	}()
	<-received // the RPC is in the injected latency
	cancel()
	if err := <-rpc; err != nil {
		t.Errorf("RPC in flight at shutdown = %v, want it to finish", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve = %v", err)
	}
}
