package demo_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/testdata/demo/catalog"
	"github.com/mesh-dev/mesh/testdata/demo/demotest"
	"github.com/mesh-dev/mesh/testdata/demo/fault"
	"github.com/mesh-dev/mesh/testdata/demo/loadgen"
	"github.com/mesh-dev/mesh/testdata/demo/orders"
	"github.com/mesh-dev/mesh/testdata/demo/payments"
	"github.com/mesh-dev/mesh/testdata/demo/web"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// shop starts the four services, wired as in the cluster, and returns the
// address of web.
func shop(t *testing.T, paymentsFault fault.Fault) string {
	t.Helper()
	payAddr := demotest.Serve(t, func(ctx context.Context, ln net.Listener) error {
		return payments.Serve(ctx, ln, payments.Config{Fault: paymentsFault})
	})
	ordAddr := demotest.Serve(t, func(ctx context.Context, ln net.Listener) error {
		return orders.Serve(ctx, ln, orders.Config{PaymentsAddr: payAddr})
	})
	catAddr := demotest.Serve(t, func(ctx context.Context, ln net.Listener) error {
		return catalog.Serve(ctx, ln, catalog.Config{})
	})
	return demotest.Serve(t, func(ctx context.Context, ln net.Listener) error {
		return web.Serve(ctx, ln, web.Config{CatalogAddr: catAddr, OrdersAddr: ordAddr})
	})
}

// TestChain sends loadgen's traffic through the whole shop: loadgen -> web
// -> catalog and orders -> payments.
func TestChain(t *testing.T) {
	tests := []struct {
		name          string
		paymentsFault fault.Fault
		maxFailures   int
		wantStatuses  map[string]int
		wantLastError string // a part of it
	}{
		{name: "healthy", maxFailures: 0, wantStatuses: map[string]int{"200": 20}},
		// One worker alternates page and purchase, so half the requests
		// buy, and each purchase fails at the far end of the chain.
		{name: "payments failing", paymentsFault: fault.Fault{FailRate: 1}, maxFailures: -1,
			wantStatuses:  map[string]int{"200": 10, "502": 10},
			wantLastError: "502: orders answered 502: payment refused: unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := shop(t, tc.paymentsFault)
			var out bytes.Buffer
			cfg := loadgen.Config{Target: target, Concurrency: 1, Requests: 20, MaxFailures: tc.maxFailures}
			got, err := loadgen.Run(t.Context(), cfg, &out)
			if err != nil {
				t.Fatalf("loadgen: %v\n%s", err, out.String())
			}
			if diff := cmp.Diff(tc.wantStatuses, got.Statuses); diff != "" {
				t.Errorf("answers by status (-want +got):\n%s", diff)
			}
			if !strings.Contains(got.LastError, tc.wantLastError) {
				t.Errorf("last error = %q, want it to contain %q", got.LastError, tc.wantLastError)
			}
			if !strings.HasPrefix(out.String(), "summary=total ") {
				t.Errorf("loadgen printed %q, want a total summary line", out.String())
			}
		})
	}
}

// TestManifestsMatchVersion checks that every image in k8s/ is the demo
// image tagged with the repo's VERSION, pulled only if not present, so
// locally loaded images run without a registry.
func TestManifestsMatchVersion(t *testing.T) {
	v, err := os.ReadFile("../../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	wantImage := "ghcr.io/mesh-dev/mesh-demo:" + strings.TrimSpace(string(v))
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in k8s/: %v", err)
	}
	image := regexp.MustCompile(`(?m)^\s*image:\s*(\S+)\s*\n\s*imagePullPolicy:\s*(\S+)`)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		images := image.FindAllSubmatch(data, -1)
		if n := bytes.Count(data, []byte("image:")); n == 0 || n != len(images) {
			t.Errorf("%s: %d images, %d of them followed by imagePullPolicy", f, n, len(images))
		}
		for _, m := range images {
			if string(m[1]) != wantImage || string(m[2]) != "IfNotPresent" {
				t.Errorf("%s: image %s with pull policy %s, want %s with IfNotPresent", f, m[1], m[2], wantImage)
			}
		}
	}
}
