// Package web is the demo's front end: an HTML shop over HTTP/1.1 that
// reads products from the catalog (gRPC) and places orders with the orders
// service (h2c).
//
//	GET  /                HTML listing of the products
//	POST /buy?product=ID  buys one; 200 with a text receipt
//
// Errors are plain text naming the backend: 400 for a missing product,
// 404 for an unknown one, 500 (or the fault's FailStatus) for an injected
// fault, 502 when a backend answered with an error and 503 when it could
// not be reached.
package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/mesh-dev/mesh/api/demo/catalog/v1"
	"github.com/mesh-dev/mesh/testdata/demo/fault"
	"github.com/mesh-dev/mesh/testdata/demo/graceful"
	"github.com/mesh-dev/mesh/testdata/demo/orders"
	"github.com/mesh-dev/mesh/testdata/demo/tracectx"
)

// Config configures the web front end.
type Config struct {
	// Addr is where Run listens; ":8080" in the pod.
	Addr string
	// CatalogAddr is the catalog service; "catalog:9090" in the pod.
	CatalogAddr string
	// OrdersAddr is the orders service; "orders:8081" in the pod.
	OrdersAddr string
	// BackendTimeout bounds the backend calls of one request; zero means
	// five seconds.
	BackendTimeout time.Duration
	// Fault fails requests with its Status (500 unless chosen) and delays
	// answers.
	Fault fault.Fault
	// FaultSwitch, if not nil, holds the fault in force, read on every
	// request so the admin server's PUT /fault can change it while Serve
	// runs; nil means Fault, fixed.
	FaultSwitch *fault.Switch
	// ShutdownGrace bounds how long requests in flight may take once
	// Serve's context ends; zero means graceful.DefaultGrace.
	ShutdownGrace time.Duration
	// Logger receives request logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration of the web pod.
func DefaultConfig() Config {
	return Config{Addr: ":8080", CatalogAddr: "catalog:9090", OrdersAddr: "orders:8081",
		BackendTimeout: 5 * time.Second, ShutdownGrace: graceful.DefaultGrace}
}

// AddFlags binds c's fields to flags, with c's values as defaults.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "address of the web listener (HTTP/1.1)")
	fs.StringVar(&c.CatalogAddr, "catalog-addr", c.CatalogAddr, "host:port of the catalog gRPC service")
	fs.StringVar(&c.OrdersAddr, "orders-addr", c.OrdersAddr, "host:port of the orders service (h2c)")
	fs.DurationVar(&c.BackendTimeout, "backend-timeout", c.BackendTimeout, "timeout for the backend calls of one request")
	c.Fault.AddFlags(fs)
}

// Serve answers HTTP/1.1 on ln until ctx ends, then shuts down gracefully
// and closes its backend connections. It closes ln.
func Serve(ctx context.Context, ln net.Listener, cfg Config) error {
	conn, err := grpc.NewClient(cfg.CatalogAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(tracectx.UnaryClientInterceptor))
	if err != nil {
		ln.Close()
		return fmt.Errorf("web: catalog client: %w", err)
	}
	defer conn.Close()
	ord := orders.NewClient(cfg.OrdersAddr)
	defer ord.Close()

	h := &handler{cfg: cfg, log: cfg.Logger, faults: cfg.FaultSwitch,
		catalog: catalogv1.NewCatalogClient(conn), orders: ord}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.faults == nil {
		h.faults = fault.NewSwitch(cfg.Fault)
	}
	if h.cfg.BackendTimeout <= 0 {
		h.cfg.BackendTimeout = 5 * time.Second
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.index)
	mux.HandleFunc("POST /buy", h.buy)
	srv := &http.Server{
		Handler:           tracectx.Middleware(mux),
		Protocols:         new(http.Protocols),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
	srv.Protocols.SetHTTP1(true)
	return graceful.ServeHTTP(ctx, ln, srv, cfg.ShutdownGrace)
}

// handler serves the pages; safe for concurrent use.
type handler struct {
	cfg     Config
	log     *slog.Logger
	faults  *fault.Switch
	catalog catalogv1.CatalogClient
	orders  *orders.Client
}

// inject applies the fault knobs and reports whether the request was
// answered already.
func (h *handler) inject(w http.ResponseWriter, r *http.Request) bool {
	f := h.faults.Load()
	fail, err := f.Apply(r.Context())
	if err != nil {
		return true // the client is gone
	}
	if fail {
		h.log.Info("request failed by fault injection", "path", r.URL.Path)
		http.Error(w, "injected fault", f.Status())
	}
	return fail
}

func (h *handler) index(w http.ResponseWriter, r *http.Request) {
	if h.inject(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.BackendTimeout)
	defer cancel()
	resp, err := h.catalog.ListProducts(ctx, &catalogv1.ListProductsRequest{})
	if err != nil {
		h.catalogError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := page.Execute(w, resp.GetProducts()); err != nil {
		h.log.Warn("render page", "err", err)
	}
}

func (h *handler) buy(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("product")
	if id == "" {
		http.Error(w, "missing ?product=ID", http.StatusBadRequest)
		return
	}
	if h.inject(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.BackendTimeout)
	defer cancel()
	resp, err := h.catalog.GetProduct(ctx, &catalogv1.GetProductRequest{Id: id})
	if err != nil {
		h.catalogError(w, err)
		return
	}
	p := resp.GetProduct()
	rec, err := h.orders.Create(ctx, orders.Order{ProductID: p.GetId(), Quantity: 1, AmountCents: p.GetPriceCents()})
	var se *orders.StatusError
	switch {
	case errors.As(err, &se):
		h.log.Warn("order failed", "product", id, "err", err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	case err != nil:
		h.log.Warn("orders unreachable", "product", id, "err", err)
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	h.log.Debug("bought", "product", id, "order", rec.OrderID, "txid", rec.TxID)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "order %s: 1 x %s, %s, paid (%s)\n", rec.OrderID, p.GetName(), price(rec.AmountCents), rec.TxID)
}

// catalogError answers for a failed catalog RPC, mapping its gRPC code.
func (h *handler) catalogError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	code := http.StatusBadGateway
	switch st.Code() {
	case codes.NotFound:
		http.Error(w, st.Message(), http.StatusNotFound)
		return
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		code = http.StatusServiceUnavailable
	}
	h.log.Warn("catalog failed", "code", st.Code().String(), "err", st.Message())
	http.Error(w, fmt.Sprintf("catalog unavailable: %s: %s", st.Code(), st.Message()), code)
}
