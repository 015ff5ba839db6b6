package admin

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/testdata/demo/fault"
)

func TestFaultAPI(t *testing.T) {
	faults := fault.NewSwitch(fault.Fault{Latency: time.Millisecond})
	srv := httptest.NewServer(Handler(func() bool { return true }, faults))
	t.Cleanup(srv.Close)
	set := fault.Fault{FailRate: 0.5, Latency: 50 * time.Millisecond, FailStatus: 503}
	// The steps run in order on one switch; each starts from the fault the
	// one before left, so a rejected PUT must leave set in force.
	tests := []struct {
		name      string
		method    string
		body      string
		wantCode  int
		wantBody  string // a part of it
		wantFault fault.Fault
	}{
		{name: "get the flags' fault", method: "GET", wantCode: 200,
			wantBody: `{"fail_rate":0,"latency":"1ms","fail_status":0}` + "\n", wantFault: fault.Fault{Latency: time.Millisecond}},
		{name: "put all", method: "PUT", body: `{"fail_rate":0.5,"latency":"50ms","fail_status":503}`, wantCode: 200,
			wantBody: `{"fail_rate":0.5,"latency":"50ms","fail_status":503}` + "\n", wantFault: set},
		{name: "get what was put", method: "GET", wantCode: 200,
			wantBody: `{"fail_rate":0.5,"latency":"50ms","fail_status":503}` + "\n", wantFault: set},

		{name: "rate above one", method: "PUT", body: `{"fail_rate":1.5}`, wantCode: 400,
			wantBody: "invalid fault: fail-rate must be between 0 and 1, got 1.5", wantFault: set},
		{name: "negative latency", method: "PUT", body: `{"latency":"-1s"}`, wantCode: 400,
			wantBody: "latency must not be negative", wantFault: set},
		{name: "latency not a duration", method: "PUT", body: `{"latency":"soon"}`, wantCode: 400,
			wantBody: `latency: time: invalid duration "soon"`, wantFault: set},
		{name: "latency as a number", method: "PUT", body: `{"latency":50}`, wantCode: 400,
			wantBody: `latency must be a duration string such as "50ms", got 50`, wantFault: set},
		{name: "success as fail status", method: "PUT", body: `{"fail_rate":1,"fail_status":200}`, wantCode: 400,
			wantBody: "fail-status must be an HTTP error status, 400 to 599, got 200", wantFault: set},
		{name: "rate as a string", method: "PUT", body: `{"fail_rate":"0.5"}`, wantCode: 400,
			wantBody: "fail_rate", wantFault: set},
		{name: "unknown field", method: "PUT", body: `{"failrate":1}`, wantCode: 400,
			wantBody: `unknown field "failrate"`, wantFault: set},
		{name: "form values", method: "PUT", body: `fail_rate=1`, wantCode: 400,
			wantBody: "want a JSON object such as", wantFault: set},
		{name: "empty body", method: "PUT", wantCode: 400, wantBody: "want a JSON object", wantFault: set},
		{name: "null", method: "PUT", body: `null`, wantCode: 400, wantBody: "want a JSON object", wantFault: set},
		{name: "two objects", method: "PUT", body: `{"fail_rate":1} {}`, wantCode: 400,
			wantBody: "data after the JSON object", wantFault: set},
		{name: "cut off", method: "PUT", body: `{"fail_rate":1`, wantCode: 400, wantBody: "invalid fault", wantFault: set},
		{name: "too large", method: "PUT", body: `{"latency":"` + strings.Repeat("1", maxFaultBody) + `ms"}`,
			wantCode: 400, wantBody: "reading fault: body larger than 4096 bytes", wantFault: set},
		{name: "post", method: "POST", body: `{}`, wantCode: 405, wantFault: set},

		{name: "empty object changes nothing", method: "PUT", body: " {}\n", wantCode: 200,
			wantBody: `{"fail_rate":0.5,"latency":"50ms","fail_status":503}` + "\n", wantFault: set},
		{name: "null keeps a field", method: "PUT", body: `{"latency":null,"fail_rate":null}`, wantCode: 200,
			wantBody: `{"fail_rate":0.5,"latency":"50ms","fail_status":503}` + "\n", wantFault: set},
		{name: "rate alone keeps status and latency", method: "PUT", body: `{"fail_rate":1}`, wantCode: 200,
			wantBody:  `{"fail_rate":1,"latency":"50ms","fail_status":503}` + "\n",
			wantFault: fault.Fault{FailRate: 1, Latency: 50 * time.Millisecond, FailStatus: 503}},
		{name: "stop injecting", method: "PUT", body: `{"fail_rate":0,"latency":"0s","fail_status":0}`, wantCode: 200,
			wantBody: `{"fail_rate":0,"latency":"0s","fail_status":0}` + "\n", wantFault: fault.Fault{}},
	}
	client := srv.Client()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+"/fault", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("%s /fault %s = %d %q, want %d with %q", tc.method, tc.body, resp.StatusCode, body, tc.wantCode, tc.wantBody)
			}
			if got := faults.Load(); got != tc.wantFault {
				t.Errorf("after %s /fault %s the fault is %+v, want %+v", tc.method, tc.body, got, tc.wantFault)
			}
		})
	}
}

// FuzzDecodeFault feeds PUT /fault bodies, which come from whoever reaches
// the admin port. decodeFault must not panic, and a fault it accepts must
// come back unchanged through the form GET /fault writes, whatever fault
// was in force before, since that form names every field.
func FuzzDecodeFault(f *testing.F) {
	for _, seed := range []string{
		`{"fail_rate":0.5,"latency":"50ms","fail_status":503}`, // the documented example
		`{}`,                            // stop injecting
		`{"latency":"1h2m3.5s"}`,        // compound duration
		`{"fail_rate":1e-3}`,            // exponent
		`{"latency":null}`,              // null for a string
		`{"fail_rate":1,"fail_rate":0}`, // a duplicate key
		`{"fail_status":503.5}`,         // a fractional status
		`{"fail_rate":1} trailing`,      // data after the object
		"\ufeff{}",                      // a byte order mark
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := decodeFault(fault.Fault{}, body)
		if err != nil || got.Validate() != nil {
			return
		}
		rec := httptest.NewRecorder()
		writeFault(rec, got)
		again, err := decodeFault(fault.Fault{FailRate: 0.25, Latency: time.Hour, FailStatus: 418}, rec.Body.Bytes())
		if err != nil || again != got {
			t.Errorf("decodeFault(%q) = %+v, which writes as %s and reads back as %+v, %v",
				body, got, bytes.TrimSpace(rec.Body.Bytes()), again, err)
		}
	})
}
