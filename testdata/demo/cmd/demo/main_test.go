package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"

	"github.com/mesh-dev/mesh/testdata/demo/catalog"
	"github.com/mesh-dev/mesh/testdata/demo/fault"
	"github.com/mesh-dev/mesh/testdata/demo/loadgen"
	"github.com/mesh-dev/mesh/testdata/demo/orders"
	"github.com/mesh-dev/mesh/testdata/demo/payments"
	"github.com/mesh-dev/mesh/testdata/demo/web"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// parse runs the command line with env as the environment and returns the
// component it would have run, without running it.
func parse(t *testing.T, env map[string]string, args ...string) (component, *options, error) {
	t.Helper()
	var got component
	o := &options{
		lookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		stdout:    io.Discard,
		stderr:    io.Discard,
		run: func(_ context.Context, _ *options, c component) error {
			got = c
			return nil
		},
	}
	cmd := newRootCmd(o)
	cmd.SetArgs(args)
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	err := cmd.ExecuteContext(t.Context())
	return got, o, err
}

func TestConfigs(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantAddr string
		want     any
	}{
		{name: "web defaults", args: []string{"web"}, wantAddr: ":8080",
			want: web.Config{Addr: ":8080", CatalogAddr: "catalog:9090", OrdersAddr: "orders:8081",
				BackendTimeout: 5 * time.Second, ShutdownGrace: 10 * time.Second}},
		{name: "catalog from env", env: map[string]string{"DEMO_FAIL_RATE": "0.25", "DEMO_LATENCY": "5ms"},
			args: []string{"catalog"}, wantAddr: ":9090",
			want: catalog.Config{Addr: ":9090", Fault: fault.Fault{FailRate: 0.25, Latency: 5 * time.Millisecond},
				ShutdownGrace: 10 * time.Second}},
		{name: "flag wins over env", env: map[string]string{"DEMO_PAYMENTS_ADDR": "env:1", "DEMO_SHUTDOWN_GRACE": "3s"},
			args: []string{"orders", "--payments-addr", "flag:2"}, wantAddr: ":8081",
			want: orders.Config{Addr: ":8081", PaymentsAddr: "flag:2", PaymentTimeout: 5 * time.Second,
				ShutdownGrace: 3 * time.Second}},
		{name: "payments", args: []string{"payments", "--addr", "127.0.0.1:1", "--fail-rate", "1"}, wantAddr: "127.0.0.1:1",
			want: payments.Config{Addr: "127.0.0.1:1", IdleTimeout: 2 * time.Minute, Fault: fault.Fault{FailRate: 1},
				ShutdownGrace: 10 * time.Second}},
		{name: "loadgen for a job", env: map[string]string{"DEMO_TARGET": "http://web.demo:8080"},
			args: []string{"loadgen", "--requests", "20", "--max-failures=0"},
			want: loadgen.Config{Target: "http://web.demo:8080", RPS: 5, Concurrency: 2, Requests: 20,
				Interval: 10 * time.Second, Timeout: 5 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := parse(t, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got.addr != tc.wantAddr {
				t.Errorf("listen address = %q, want %q", got.addr, tc.wantAddr)
			}
			// Loggers are made at run time.
			opts := cmp.Options{
				cmpopts.IgnoreFields(web.Config{}, "Logger"), cmpopts.IgnoreFields(catalog.Config{}, "Logger"),
				cmpopts.IgnoreFields(orders.Config{}, "Logger"), cmpopts.IgnoreFields(payments.Config{}, "Logger"),
				cmpopts.IgnoreFields(loadgen.Config{}, "Logger"),
			}
			if diff := cmp.Diff(tc.want, got.config, opts); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
	}{
		{name: "fail rate above one", args: []string{"web", "--fail-rate", "2"}, wantErr: "fail-rate must be between 0 and 1"},
		{name: "negative latency", args: []string{"payments", "--latency=-1s"}, wantErr: "latency must not be negative"},
		{name: "bad env value", env: map[string]string{"DEMO_RPS": "fast"}, args: []string{"loadgen"},
			wantErr: `environment variable DEMO_RPS="fast"`},
		{name: "bad log format", args: []string{"catalog", "--log-format", "xml"}, wantErr: "log-format must be json or text"},
		{name: "unknown component", args: []string{"cart"}, wantErr: `unknown command "cart"`},
		{name: "stray argument", args: []string{"orders", "now"}, wantErr: "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parse(t, tc.env, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("demo %s = %v, want an error with %q", strings.Join(tc.args, " "), err, tc.wantErr)
			}
		})
	}
}

// TestServeComponent runs a component with its probes the way main does:
// /ready is 200 while it serves and 503 while it drains, and the probes
// stay up until it has stopped.
func TestServeComponent(t *testing.T) {
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	ln, adminLn := listen(), listen()
	var logs bytes.Buffer
	o := &options{stderr: &logs, LogFormat: "text"}
	draining, release := make(chan struct{}), make(chan struct{})
	c := component{name: "fake", addr: ln.Addr().String(), serve: func(ctx context.Context, ln net.Listener) error {
		defer ln.Close()
		<-ctx.Done()
		close(draining)
		<-release // still draining
		return nil
	}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serveComponent(ctx, o, c, ln, adminLn) }()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	ready := func() int {
		t.Helper()
		resp, err := (&http.Client{Transport: tr}).Get("http://" + adminLn.Addr().String() + "/ready")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := ready(); got != 200 {
		t.Errorf("/ready while serving = %d, want 200", got)
	}
	cancel()
	<-draining
	if got := ready(); got != 503 {
		t.Errorf("/ready while draining = %d, want 503", got)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("serveComponent = %v", err)
	}
	for _, want := range []string{"msg=starting component=fake", "addr=" + ln.Addr().String(), "msg=stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
}

func TestRunComponentPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	o := &options{stderr: io.Discard, LogFormat: "text", AdminAddr: "127.0.0.1:0"}
	c := component{name: "web", addr: ln.Addr().String(), serve: func(context.Context, net.Listener) error { return nil }}
	if err := runComponent(t.Context(), o, c); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("runComponent on a taken port = %v, want address already in use", err)
	}
}
