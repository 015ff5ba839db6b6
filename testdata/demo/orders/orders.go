// Package orders is the demo's order service: a JSON API over HTTP/2
// cleartext with prior knowledge (h2c), which takes the payment for each
// order from the payments service.
//
//	POST /orders  {"product_id":"mug","quantity":1,"amount_cents":1250}
//	  201 {"order_id":"ord-...","product_id":"mug","quantity":1,"amount_cents":1250,"txid":"tx-..."}
//	  400 malformed order, 500 (or the fault's FailStatus) injected fault,
//	  502 payment refused, 503 payments unreachable; errors are {"error":"..."}
package orders

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/pflag"

	"github.com/mesh-dev/mesh/testdata/demo/fault"
	"github.com/mesh-dev/mesh/testdata/demo/graceful"
	"github.com/mesh-dev/mesh/testdata/demo/payments"
)

// Config configures the orders server.
type Config struct {
	// Addr is where Run listens; ":8081" in the pod.
	Addr string
	// PaymentsAddr is the payments service; "payments:7070" in the pod.
	PaymentsAddr string
	// PaymentTimeout bounds each payment; zero means five seconds.
	PaymentTimeout time.Duration
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

// DefaultConfig returns the configuration of the orders pod.
func DefaultConfig() Config {
	return Config{Addr: ":8081", PaymentsAddr: "payments:7070", PaymentTimeout: 5 * time.Second,
		ShutdownGrace: graceful.DefaultGrace}
}

// AddFlags binds c's fields to flags, with c's values as defaults.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "address of the orders listener (HTTP/2 cleartext, prior knowledge)")
	fs.StringVar(&c.PaymentsAddr, "payments-addr", c.PaymentsAddr, "host:port of the payments service")
	fs.DurationVar(&c.PaymentTimeout, "payment-timeout", c.PaymentTimeout, "timeout for one payment")
	c.Fault.AddFlags(fs)
}

// Order is what a client asks for.
type Order struct {
	ProductID   string `json:"product_id"`
	Quantity    int    `json:"quantity"`
	AmountCents int64  `json:"amount_cents"` // the total, already multiplied by Quantity
}

// Receipt is a paid order.
type Receipt struct {
	OrderID     string `json:"order_id"`
	ProductID   string `json:"product_id"`
	Quantity    int    `json:"quantity"`
	AmountCents int64  `json:"amount_cents"`
	TxID        string `json:"txid"`
}

// maxBody bounds a request body; an order is a few dozen bytes.
const maxBody = 16 << 10

// Serve answers orders on ln, HTTP/2 cleartext only, until ctx ends, then
// shuts down gracefully. It closes ln.
func Serve(ctx context.Context, ln net.Listener, cfg Config) error {
	h := &handler{cfg: cfg, log: cfg.Logger, faults: cfg.FaultSwitch,
		pay: &payments.Client{Addr: cfg.PaymentsAddr, Timeout: cfg.PaymentTimeout}}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.faults == nil {
		h.faults = fault.NewSwitch(cfg.Fault)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", h.create)
	srv := &http.Server{
		Handler:           mux,
		Protocols:         new(http.Protocols),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
	// Only prior-knowledge h2c: an HTTP/1 client gets its connection
	// closed, which is what the issue asks this service to exercise.
	srv.Protocols.SetUnencryptedHTTP2(true)
	return graceful.ServeHTTP(ctx, ln, srv, cfg.ShutdownGrace)
}

// handler serves POST /orders; safe for concurrent use.
type handler struct {
	cfg    Config
	log    *slog.Logger
	faults *fault.Switch
	pay    *payments.Client
}

func (h *handler) create(w http.ResponseWriter, r *http.Request) {
	var o Order
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("malformed order: %w", err))
		return
	}
	if err := o.validate(); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	h.log.Debug("order received", "product", o.ProductID, "quantity", o.Quantity, "cents", o.AmountCents)
	f := h.faults.Load()
	fail, err := f.Apply(r.Context())
	if err != nil {
		return // the client is gone
	}
	if fail {
		h.log.Info("order failed by fault injection", "product", o.ProductID)
		writeError(w, f.Status(), errors.New("injected fault"))
		return
	}
	id := "ord-" + rand.Text()[:12]
	txid, err := h.pay.Pay(r.Context(), id, o.AmountCents)
	var refused *payments.RefusedError
	switch {
	case errors.As(err, &refused):
		h.log.Warn("payment refused", "order", id, "reason", refused.Reason)
		writeError(w, http.StatusBadGateway, err)
		return
	case err != nil:
		h.log.Warn("payments unreachable", "order", id, "err", err)
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	h.log.Debug("order paid", "order", id, "product", o.ProductID, "cents", o.AmountCents, "txid", txid)
	writeJSON(w, http.StatusCreated, Receipt{OrderID: id, ProductID: o.ProductID,
		Quantity: o.Quantity, AmountCents: o.AmountCents, TxID: txid})
}

func (o Order) validate() error {
	switch {
	case o.ProductID == "":
		return errors.New("product_id is required")
	case o.Quantity < 1 || o.Quantity > 100:
		return fmt.Errorf("quantity must be 1 to 100, got %d", o.Quantity)
	case o.AmountCents < 1 || o.AmountCents > payments.MaxCents:
		return fmt.Errorf("amount_cents must be 1 to %d, got %d", int64(payments.MaxCents), o.AmountCents)
	}
	return nil
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
