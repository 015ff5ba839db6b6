package catalog

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
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

// TestServedBy: every answer names the server in its x-served-by header,
// successes and errors alike, each method, the pod's name or else the
// hostname.
func TestServedBy(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		cfg      Config
		want     string
		wantCode codes.Code
		call     func(context.Context, catalogv1.CatalogClient, ...grpc.CallOption) error
	}{
		{name: "ListProducts", cfg: Config{Name: "catalog-v1-5d8c7b9f4-x2x7q"}, want: "catalog-v1-5d8c7b9f4-x2x7q",
			call: func(ctx context.Context, c catalogv1.CatalogClient, opts ...grpc.CallOption) error {
				_, err := c.ListProducts(ctx, &catalogv1.ListProductsRequest{}, opts...)
				return err
			}},
		{name: "GetProduct", cfg: Config{Name: "catalog-v2-6f7d9c8b5-k3j9p"}, want: "catalog-v2-6f7d9c8b5-k3j9p",
			call: func(ctx context.Context, c catalogv1.CatalogClient, opts ...grpc.CallOption) error {
				_, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "mug"}, opts...)
				return err
			}},
		{name: "GetProduct not found", cfg: Config{Name: "catalog-v2-6f7d9c8b5-k3j9p"}, want: "catalog-v2-6f7d9c8b5-k3j9p",
			wantCode: codes.NotFound,
			call: func(ctx context.Context, c catalogv1.CatalogClient, opts ...grpc.CallOption) error {
				_, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "tea"}, opts...)
				return err
			}},
		{name: "failed by the fault", cfg: Config{Name: "catalog-a", Fault: fault.Fault{FailRate: 1}}, want: "catalog-a",
			wantCode: codes.Unavailable,
			call: func(ctx context.Context, c catalogv1.CatalogClient, opts ...grpc.CallOption) error {
				_, err := c.ListProducts(ctx, &catalogv1.ListProductsRequest{}, opts...)
				return err
			}},
		{name: "hostname", want: host,
			call: func(ctx context.Context, c catalogv1.CatalogClient, opts ...grpc.CallOption) error {
				_, err := c.ListProducts(ctx, &catalogv1.ListProductsRequest{}, opts...)
				return err
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var md metadata.MD
			err := tc.call(t.Context(), client(t, tc.cfg), grpc.Header(&md))
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("code = %v (%v), want %v", got, err, tc.wantCode)
			}
			if got := md.Get(ServedByKey); len(got) != 1 || got[0] != tc.want {
				t.Errorf("%s = %q, want [%q]", ServedByKey, got, tc.want)
			}
		})
	}
}
