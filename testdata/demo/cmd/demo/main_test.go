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
	"github.com/mesh-dev/mesh/testdata/demo/echo"
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
		{name: "catalog in a pod", env: map[string]string{"POD_NAME": "catalog-v2-7c9d8b6f5-q4k2m"},
			args: []string{"catalog"}, wantAddr: ":9090",
			want: catalog.Config{Addr: ":9090", Name: "catalog-v2-7c9d8b6f5-q4k2m", ShutdownGrace: 10 * time.Second}},
		{name: "flag wins over env", env: map[string]string{"DEMO_PAYMENTS_ADDR": "env:1", "DEMO_SHUTDOWN_GRACE": "3s"},
			args: []string{"orders", "--payments-addr", "flag:2"}, wantAddr: ":8081",
			want: orders.Config{Addr: ":8081", PaymentsAddr: "flag:2", PaymentTimeout: 5 * time.Second,
				ShutdownGrace: 3 * time.Second}},
		{name: "payments", args: []string{"payments", "--addr", "127.0.0.1:1", "--fail-rate", "1"}, wantAddr: "127.0.0.1:1",
			want: payments.Config{Addr: "127.0.0.1:1", IdleTimeout: 2 * time.Minute, Fault: fault.Fault{FailRate: 1},
				ShutdownGrace: 10 * time.Second}},
		{name: "loadgen for a job", env: map[string]string{"DEMO_TARGET": "http://web.demo:8080"},
			args: []string{"loadgen", "--requests", "20", "--max-failures=0"},
			want: loadgen.Config{Target: "http://web.demo:8080", Path: "/", RPS: 5, Concurrency: 2, Requests: 20,
				Interval: 10 * time.Second, Timeout: 5 * time.Second}},
		{name: "loadgen against echo", args: []string{"loadgen", "--target", "echo:8080", "--path", "/ping"},
			want: loadgen.Config{Target: "echo:8080", Path: "/ping", RPS: 5, Concurrency: 2, Interval: 10 * time.Second,
				Timeout: 5 * time.Second, MaxFailures: -1}},
		{name: "echo defaults", args: []string{"echo"}, wantAddr: ":8080",
			want: echo.Config{Addr: ":8080", Fault: fault.Fault{FailStatus: 500}, ShutdownGrace: 10 * time.Second}},
		{name: "echo in a pod", env: map[string]string{"POD_NAME": "echo-5d8c7b9f4-x2x7q", "DEMO_FAIL_STATUS": "502"},
			args:     []string{"echo", "--addr", ":8088", "--fail-rate", "0.5", "--latency", "50ms", "--fail-status", "503"},
			wantAddr: ":8088",
			want: echo.Config{Addr: ":8088", Name: "echo-5d8c7b9f4-x2x7q",
				Fault:         fault.Fault{FailRate: 0.5, Latency: 50 * time.Millisecond, FailStatus: 503},
				ShutdownGrace: 10 * time.Second}},
		{name: "echo status from env", env: map[string]string{"DEMO_FAIL_STATUS": "502"}, args: []string{"echo"},
			wantAddr: ":8080",
			want:     echo.Config{Addr: ":8080", Fault: fault.Fault{FailStatus: 502}, ShutdownGrace: 10 * time.Second}},
		{name: "echo exiting on SIGTERM", args: []string{"echo", "--exit-on-term"}, wantAddr: ":8080",
			want: echo.Config{Addr: ":8080", Fault: fault.Fault{FailStatus: 500}, ShutdownGrace: 10 * time.Second, ExitOnTerm: true}},
		{name: "echo exiting on SIGTERM from env", env: map[string]string{"DEMO_EXIT_ON_TERM": "true"}, args: []string{"echo"},
			wantAddr: ":8080",
			want:     echo.Config{Addr: ":8080", Fault: fault.Fault{FailStatus: 500}, ShutdownGrace: 10 * time.Second, ExitOnTerm: true}},
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
			// Loggers and fault switches are made at run time; the
			// switch is checked below.
			opts := cmp.Options{
				cmpopts.IgnoreFields(web.Config{}, "Logger", "FaultSwitch"),
				cmpopts.IgnoreFields(catalog.Config{}, "Logger", "FaultSwitch"),
				cmpopts.IgnoreFields(orders.Config{}, "Logger", "FaultSwitch"),
				cmpopts.IgnoreFields(payments.Config{}, "Logger", "FaultSwitch"),
				cmpopts.IgnoreFields(echo.Config{}, "Logger", "FaultSwitch"),
				cmpopts.IgnoreFields(loadgen.Config{}, "Logger"),
			}
			if diff := cmp.Diff(tc.want, got.config, opts); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
			// A server reads its fault from the switch the admin server
			// changes, starting with the flags' fault; loadgen has none.
			f, sw, isServer := faultsOf(got.config)
			switch {
			case !isServer && got.faults != nil:
				t.Errorf("component has a fault switch, want none")
			case isServer && (sw == nil || sw != got.faults):
				t.Errorf("config's fault switch %p, component's %p; want the same one", sw, got.faults)
			case isServer && sw.Load() != f:
				t.Errorf("fault switch holds %+v, want the flags' %+v", sw.Load(), f)
			}
		})
	}
}

// faultsOf returns the fault and switch of a server's config; ok is false
// for loadgen's.
func faultsOf(config any) (f fault.Fault, sw *fault.Switch, ok bool) {
	switch c := config.(type) {
	case web.Config:
		return c.Fault, c.FaultSwitch, true
	case catalog.Config:
		return c.Fault, c.FaultSwitch, true
	case orders.Config:
		return c.Fault, c.FaultSwitch, true
	case payments.Config:
		return c.Fault, c.FaultSwitch, true
	case echo.Config:
		return c.Fault, c.FaultSwitch, true
	}
	return fault.Fault{}, nil, false
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
		{name: "success as fail status", args: []string{"echo", "--fail-status", "200"},
			wantErr: "fail-status must be an HTTP error status, 400 to 599, got 200"},
		{name: "fail status not a number", args: []string{"echo", "--fail-status", "busy"},
			wantErr: `invalid argument "busy" for "--fail-status"`},
		{name: "fail status from env", env: map[string]string{"DEMO_FAIL_STATUS": "600"}, args: []string{"echo"},
			wantErr: "fail-status must be an HTTP error status"},
		{name: "fail status on a server without it", args: []string{"web", "--fail-status", "503"},
			wantErr: "unknown flag: --fail-status"},
		{name: "negative echo latency", args: []string{"echo", "--latency=-5ms"}, wantErr: "latency must not be negative"},
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
	resp, err := (&http.Client{Transport: tr}).Get("http://" + adminLn.Addr().String() + "/fault")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("/fault of a component without faults = %d, want 404", resp.StatusCode)
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

// running is a component served the way main serves it, on loopback ports.
type running struct {
	url, adminURL string
	client        *http.Client
}

// serve runs the component of the command line args with its admin server
// until the test's cleanup.
func serve(t *testing.T, env map[string]string, args ...string) running {
	t.Helper()
	c, o, err := parse(t, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	var lns [2]net.Listener
	for i := range lns {
		if lns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- serveComponent(ctx, o, c, lns[0], lns[1]) }()
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveComponent = %v", err)
		}
	})
	return running{url: "http://" + lns[0].Addr().String(), adminURL: "http://" + lns[1].Addr().String(),
		client: &http.Client{Transport: tr}}
}

// do sends one request and returns the status and body.
func (r running) do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestAdminFault checks that the admin server of every server subcommand
// serves the switch its component reads: GET /fault shows the flags' fault
// and PUT /fault changes it.
func TestAdminFault(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantGet string
	}{
		{name: "web", args: []string{"web", "--fail-rate", "0.1"}, wantGet: `{"fail_rate":0.1,"latency":"0s","fail_status":0}`},
		{name: "catalog", args: []string{"catalog", "--latency", "1ms"}, wantGet: `{"fail_rate":0,"latency":"1ms","fail_status":0}`},
		{name: "orders", args: []string{"orders"}, wantGet: `{"fail_rate":0,"latency":"0s","fail_status":0}`},
		{name: "payments", args: []string{"payments", "--fail-rate", "1"}, wantGet: `{"fail_rate":1,"latency":"0s","fail_status":0}`},
		{name: "echo", args: []string{"echo", "--fail-status", "503"},
			wantGet: `{"fail_rate":0,"latency":"0s","fail_status":503}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := serve(t, nil, tc.args...)
			if code, body := r.do(t, "GET", r.adminURL+"/fault", ""); code != 200 || body != tc.wantGet+"\n" {
				t.Errorf("GET /fault = %d %q, want 200 %q", code, body, tc.wantGet)
			}
			put := `{"fail_rate":0.5,"latency":"2ms","fail_status":502}`
			if code, body := r.do(t, "PUT", r.adminURL+"/fault", put); code != 200 || body != put+"\n" {
				t.Errorf("PUT /fault %s = %d %q, want 200 with it back", put, code, body)
			}
			if code, body := r.do(t, "GET", r.adminURL+"/fault", ""); code != 200 || body != put+"\n" {
				t.Errorf("GET /fault after PUT = %d %q, want 200 %q", code, body, put)
			}
		})
	}
}

// TestEchoFaultAtRuntime is what the load balancer's end-to-end tests do to
// an echo pod: make it fail and recover through the admin port while it
// serves, with bad input rejected and changing nothing.
func TestEchoFaultAtRuntime(t *testing.T) {
	r := serve(t, map[string]string{"POD_NAME": "echo-a"}, "echo", "--fail-status", "503")
	failing := `{"fail_rate":1,"latency":"0s","fail_status":503}`
	tests := []struct {
		name      string
		put       string // PUT /fault body; "" sends none
		wantPut   int
		wantCode  int // of GET / after the PUT
		wantBody  string
		wantFault string // GET /fault after the PUT
	}{
		{name: "healthy", wantCode: 200, wantBody: "echo from echo-a\n",
			wantFault: `{"fail_rate":0,"latency":"0s","fail_status":503}`},
		// The rate alone: the status stays the flag's.
		{name: "failing", put: `{"fail_rate":1}`, wantPut: 200,
			wantCode: 503, wantBody: "injected fault from echo-a\n", wantFault: failing},
		{name: "bad rate changes nothing", put: `{"fail_rate":-1}`, wantPut: 400,
			wantCode: 503, wantBody: "injected fault from echo-a\n", wantFault: failing},
		{name: "bad status changes nothing", put: `{"fail_rate":0,"fail_status":99}`, wantPut: 400,
			wantCode: 503, wantBody: "injected fault from echo-a\n", wantFault: failing},
		{name: "form changes nothing", put: `fail_rate=0`, wantPut: 400,
			wantCode: 503, wantBody: "injected fault from echo-a\n", wantFault: failing},
		{name: "another status", put: `{"fail_status":429}`, wantPut: 200,
			wantCode: 429, wantBody: "injected fault from echo-a\n",
			wantFault: `{"fail_rate":1,"latency":"0s","fail_status":429}`},
		{name: "recovered", put: `{"fail_rate":0}`, wantPut: 200, wantCode: 200, wantBody: "echo from echo-a\n",
			wantFault: `{"fail_rate":0,"latency":"0s","fail_status":429}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.put != "" {
				if code, body := r.do(t, "PUT", r.adminURL+"/fault", tc.put); code != tc.wantPut {
					t.Errorf("PUT /fault %s = %d %q, want %d", tc.put, code, body, tc.wantPut)
				}
			}
			if code, body := r.do(t, "GET", r.url+"/", ""); code != tc.wantCode || body != tc.wantBody {
				t.Errorf("GET / = %d %q, want %d %q", code, body, tc.wantCode, tc.wantBody)
			}
			if _, body := r.do(t, "GET", r.adminURL+"/fault", ""); body != tc.wantFault+"\n" {
				t.Errorf("GET /fault = %q, want %q", body, tc.wantFault)
			}
		})
	}
}
