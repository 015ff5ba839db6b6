package orders

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/testdata/demo/demotest"
	"github.com/mesh-dev/mesh/testdata/demo/fault"
	"github.com/mesh-dev/mesh/testdata/demo/payments"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup is a running orders service and the payments service behind it.
type setup struct {
	ordersFault   fault.Fault
	paymentsFault fault.Fault
	paymentsDown  bool
}

// start runs the services of s and returns the orders address.
func (s setup) start(t testing.TB) string {
	t.Helper()
	payAddr := demotest.ClosedAddr(t)
	if !s.paymentsDown {
		payAddr = demotest.Serve(t, func(ctx context.Context, ln net.Listener) error {
			return payments.Serve(ctx, ln, payments.Config{Fault: s.paymentsFault})
		})
	}
	return demotest.Serve(t, func(ctx context.Context, ln net.Listener) error {
		return Serve(ctx, ln, Config{PaymentsAddr: payAddr, Fault: s.ordersFault})
	})
}

func newClient(t testing.TB, addr string) *Client {
	c := NewClient(addr)
	t.Cleanup(c.Close)
	return c
}

func TestCreate(t *testing.T) {
	mug := Order{ProductID: "mug", Quantity: 2, AmountCents: 2500}
	tests := []struct {
		name      string
		setup     setup
		order     Order
		wantCode  int    // of a *StatusError; 0 is success
		wantInErr string // part of its message
	}{
		{name: "paid", order: mug},
		{name: "orders fault", setup: setup{ordersFault: fault.Fault{FailRate: 1}}, order: mug,
			wantCode: 500, wantInErr: "injected fault"},
		{name: "orders fault with a status", setup: setup{ordersFault: fault.Fault{FailRate: 1, FailStatus: 429}}, order: mug,
			wantCode: 429, wantInErr: "injected fault"},
		{name: "payment refused", setup: setup{paymentsFault: fault.Fault{FailRate: 1}}, order: mug,
			wantCode: 502, wantInErr: "payment refused: unavailable"},
		{name: "payments down", setup: setup{paymentsDown: true}, order: mug,
			wantCode: 503, wantInErr: "payments unavailable"},
		{name: "no product", order: Order{Quantity: 1, AmountCents: 1},
			wantCode: 400, wantInErr: "product_id is required"},
		{name: "zero quantity", order: Order{ProductID: "mug", AmountCents: 1},
			wantCode: 400, wantInErr: "quantity must be 1 to 100"},
		{name: "amount too large", order: Order{ProductID: "mug", Quantity: 1, AmountCents: payments.MaxCents + 1},
			wantCode: 400, wantInErr: "amount_cents must be"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.setup.start(t))
			got, err := c.Create(t.Context(), tc.order)
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatal(err)
				}
				ok := strings.HasPrefix(got.OrderID, "ord-") && strings.HasPrefix(got.TxID, "tx-") &&
					got.ProductID == tc.order.ProductID && got.Quantity == tc.order.Quantity &&
					got.AmountCents == tc.order.AmountCents
				if !ok {
					t.Errorf("Create(%+v) = %+v", tc.order, got)
				}
				return
			}
			var se *StatusError
			if !errors.As(err, &se) || se.Code != tc.wantCode || !strings.Contains(se.Message, tc.wantInErr) {
				t.Errorf("Create(%+v) = %v, want %d with %q", tc.order, err, tc.wantCode, tc.wantInErr)
			}
		})
	}
}

func TestOrdersDown(t *testing.T) {
	c := newClient(t, demotest.ClosedAddr(t))
	_, err := c.Create(t.Context(), Order{ProductID: "mug", Quantity: 1, AmountCents: 1})
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Create against a closed port = %v, want ErrUnavailable", err)
	}
}

// h2cClient speaks HTTP/2 with prior knowledge, like NewClient.
func h2cClient(t testing.TB) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestMalformedRequests(t *testing.T) {
	addr := setup{}.start(t)
	hc := h2cClient(t)
	tests := []struct {
		name     string
		method   string
		body     string
		wantCode int
		wantBody string
	}{
		{name: "not JSON", method: "POST", body: "mug please", wantCode: 400, wantBody: "malformed order"},
		{name: "unknown field", method: "POST", body: `{"product_id":"mug","quantity":1,"amount_cents":1,"coupon":"x"}`,
			wantCode: 400, wantBody: "unknown field"},
		{name: "wrong type", method: "POST", body: `{"product_id":"mug","quantity":"one"}`, wantCode: 400, wantBody: "malformed order"},
		{name: "too large", method: "POST", body: `{"product_id":"` + strings.Repeat("x", 20<<10) + `"}`,
			wantCode: 400, wantBody: "request body too large"},
		{name: "GET", method: "GET", wantCode: 405, wantBody: "Method Not Allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, "http://"+addr+"/orders", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("%s /orders = %d %q, want %d with %q", tc.method, resp.StatusCode, body, tc.wantCode, tc.wantBody)
			}
		})
	}
}

func TestSpeaksOnlyH2C(t *testing.T) {
	addr := setup{}.start(t)
	resp, err := h2cClient(t).Post("http://"+addr+"/orders", "application/json",
		strings.NewReader(`{"product_id":"mug","quantity":1,"amount_cents":1250}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.ProtoMajor != 2 {
		t.Errorf("h2c POST = %d over %s, want 201 over HTTP/2.0", resp.StatusCode, resp.Proto)
	}

	h1 := &http.Transport{}
	defer h1.CloseIdleConnections()
	if resp, err := (&http.Client{Transport: h1}).Get("http://" + addr + "/orders"); err == nil {
		resp.Body.Close()
		t.Errorf("HTTP/1.1 GET = %d, want the connection refused", resp.StatusCode)
	}
}

func TestGracefulShutdown(t *testing.T) {
	payAddr := demotest.Serve(t, func(ctx context.Context, ln net.Listener) error {
		return payments.Serve(ctx, ln, payments.Config{})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	log, received := demotest.Logged("order received")
	cfg := Config{PaymentsAddr: payAddr, Fault: fault.Fault{Latency: 200 * time.Millisecond}, Logger: log}
	go func() { done <- Serve(ctx, ln, cfg) }()
	c := newClient(t, ln.Addr().String())
	created := make(chan error, 1)
	go func() {
		_, err := c.Create(t.Context(), Order{ProductID: "mug", Quantity: 1, AmountCents: 1250})
		created <- err
	}()
	<-received // the request is in the injected latency
	cancel()
	if err := <-created; err != nil {
		t.Errorf("order in flight at shutdown = %v, want it to finish", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve = %v", err)
	}
}
