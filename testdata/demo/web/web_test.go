package web

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/testdata/demo/catalog"
	"github.com/mesh-dev/mesh/testdata/demo/demotest"
	"github.com/mesh-dev/mesh/testdata/demo/fault"
	"github.com/mesh-dev/mesh/testdata/demo/orders"
	"github.com/mesh-dev/mesh/testdata/demo/payments"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backends says which backends run and how they misbehave.
type backends struct {
	webFault, catalogFault, ordersFault, paymentsFault fault.Fault
	catalogDown, ordersDown                            bool
}

// start runs the web front end over real backends and returns its URL.
func (b backends) start(t testing.TB) string {
	t.Helper()
	serve := func(run func(context.Context, net.Listener) error) string { return demotest.Serve(t, run) }
	payAddr := serve(func(ctx context.Context, ln net.Listener) error {
		return payments.Serve(ctx, ln, payments.Config{Fault: b.paymentsFault})
	})
	ordAddr, catAddr := demotest.ClosedAddr(t), demotest.ClosedAddr(t)
	if !b.ordersDown {
		ordAddr = serve(func(ctx context.Context, ln net.Listener) error {
			return orders.Serve(ctx, ln, orders.Config{PaymentsAddr: payAddr, Fault: b.ordersFault})
		})
	}
	if !b.catalogDown {
		catAddr = serve(func(ctx context.Context, ln net.Listener) error {
			return catalog.Serve(ctx, ln, catalog.Config{Fault: b.catalogFault})
		})
	}
	return "http://" + serve(func(ctx context.Context, ln net.Listener) error {
		return Serve(ctx, ln, Config{CatalogAddr: catAddr, OrdersAddr: ordAddr, Fault: b.webFault})
	})
}

// do sends one request over HTTP/1.1 and returns the status, protocol and body.
func do(t testing.TB, method, url string) (code int, proto, body string) {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Proto, string(b)
}

func TestIndex(t *testing.T) {
	base := backends{}.start(t)
	code, proto, body := do(t, "GET", base+"/")
	if code != 200 || proto != "HTTP/1.1" {
		t.Fatalf("GET / = %d over %s, want 200 over HTTP/1.1", code, proto)
	}
	for _, p := range catalog.Products {
		form := `action="/buy?product=` + p.GetId() + `"`
		if !strings.Contains(body, p.GetName()) || !strings.Contains(body, form) || !strings.Contains(body, price(p.GetPriceCents())) {
			t.Errorf("GET / lacks the name, price or %s of %q:\n%s", form, p.GetId(), body)
		}
	}
	if code, _, _ := do(t, "GET", base+"/nope"); code != 404 {
		t.Errorf("GET /nope = %d, want 404", code)
	}
}

func TestRequests(t *testing.T) {
	always := fault.Fault{FailRate: 1}
	tests := []struct {
		name     string
		backends backends
		method   string
		path     string
		wantCode int
		wantBody string // a part of the body
	}{
		{name: "buy", method: "POST", path: "/buy?product=mug", wantCode: 200, wantBody: "1 x Mug, $12.50, paid (tx-"},
		{name: "buy the sidecar", method: "POST", path: "/buy?product=sidecar", wantCode: 200, wantBody: "$1299.00"},
		{name: "no product", method: "POST", path: "/buy", wantCode: 400, wantBody: "missing ?product=ID"},
		{name: "unknown product", method: "POST", path: "/buy?product=tea", wantCode: 404, wantBody: `no product "tea"`},
		{name: "buy with GET", method: "GET", path: "/buy?product=mug", wantCode: 405},

		{name: "web fault on index", backends: backends{webFault: always}, method: "GET", path: "/",
			wantCode: 500, wantBody: "injected fault"},
		{name: "web fault on buy", backends: backends{webFault: always}, method: "POST", path: "/buy?product=mug",
			wantCode: 500, wantBody: "injected fault"},
		{name: "web fault with a status", backends: backends{webFault: fault.Fault{FailRate: 1, FailStatus: 503}},
			method: "GET", path: "/", wantCode: 503, wantBody: "injected fault"},
		{name: "catalog fault", backends: backends{catalogFault: always}, method: "GET", path: "/",
			wantCode: 503, wantBody: "catalog unavailable: Unavailable: injected fault"},
		{name: "catalog down", backends: backends{catalogDown: true}, method: "GET", path: "/",
			wantCode: 503, wantBody: "catalog unavailable: Unavailable"},
		{name: "catalog down on buy", backends: backends{catalogDown: true}, method: "POST", path: "/buy?product=mug",
			wantCode: 503, wantBody: "catalog unavailable"},
		{name: "orders fault", backends: backends{ordersFault: always}, method: "POST", path: "/buy?product=mug",
			wantCode: 502, wantBody: "orders answered 500: injected fault"},
		{name: "orders down", backends: backends{ordersDown: true}, method: "POST", path: "/buy?product=mug",
			wantCode: 503, wantBody: "orders unavailable"},
		{name: "orders down, index still works", backends: backends{ordersDown: true}, method: "GET", path: "/",
			wantCode: 200, wantBody: "Mug"},
		{name: "payments fault", backends: backends{paymentsFault: always}, method: "POST", path: "/buy?product=mug",
			wantCode: 502, wantBody: "orders answered 502: payment refused: unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := tc.backends.start(t)
			code, _, body := do(t, tc.method, base+tc.path)
			if code != tc.wantCode || !strings.Contains(body, tc.wantBody) {
				t.Errorf("%s %s = %d %q, want %d with %q", tc.method, tc.path, code, body, tc.wantCode, tc.wantBody)
			}
		})
	}
}
