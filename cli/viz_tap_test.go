package cli

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

func boolp(b bool) *bool { return &b }

func intp(i int) *int { return &i }

// tapFixture is a request to web-1 and its failed response, a failure the
// controller reports on the way, and a request to a path a terminal would
// act on.
var tapFixture = []vizv1.TapEvent{{
	Type: tapRequest, ID: "7", Time: testNow, Namespace: "shop", Pod: "web-1", Direction: "inbound",
	Src: "10.0.0.9:41234", Dst: "10.0.0.7:8080", ClientID: "spiffe://cluster.local/ns/shop/sa/frontend",
	Method: "GET", Scheme: "http", Authority: "web.shop:8080", Path: "/api/items?page=2",
}, {
	Type: tapResponse, ID: "7", Time: testNow.Add(20 * time.Millisecond), Namespace: "shop", Pod: "web-1", Direction: "inbound",
	Src: "10.0.0.9:41234", Dst: "10.0.0.7:8080", ClientID: "spiffe://cluster.local/ns/shop/sa/frontend",
	Method: "GET", Authority: "web.shop:8080", Path: "/api/items?page=2",
	Status: 500, LatencyMs: f64(20), Success: boolp(false),
}, {
	Type: tapError, Error: "proxy web-2: no tap server",
}, {
	Type: tapRequest, ID: "8", Time: testNow, Namespace: "shop", Pod: "web-1", Direction: "outbound",
	Src: "10.0.0.7:50000", Dst: "10.0.0.8:9090", DstWorkload: "deploy/db", ServerID: "spiffe://cluster.local/ns/shop/sa/db",
	Method: "POST", Authority: "db.shop:9090", Path: "/q\x1b[2J",
}, {
	Type: tapResponse, ID: "8", Time: testNow, Namespace: "shop", Pod: "web-1", Direction: "outbound",
	Src: "10.0.0.7:50000", Dst: "10.0.0.8:9090", DstWorkload: "deploy/db", ServerID: "spiffe://cluster.local/ns/shop/sa/db",
	Status: 200, GRPCStatus: intp(0), LatencyMs: f64(0.4), Success: boolp(true),
}}

// tapLines is tapFixture as the stream sends it.
func tapLines(t testing.TB) []string {
	t.Helper()
	var lines []string
	for _, ev := range tapFixture {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
	}
	return lines
}

// streamLines answers the tap with lines, one flushed write each, then
// holds the stream open until the client goes away, as the controller
// does.
func streamLines(lines []string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		for _, l := range lines {
			w.Write([]byte(l + "\n"))
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done()
	}
}

func TestVizTap(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathTap, streamLines(tapLines(t)))
	r := startViz(t, api, "viz", "tap", "deploy/web", "-n", "shop")
	out := r.waitOut(t, func(s string) bool { return strings.Count(s, "\n") == 4 })
	if err := r.stop(t); err != nil {
		t.Errorf("interrupted tap returned %v, want nil", err)
	}
	want := "" +
		"req id=7 :method=GET :authority=web.shop:8080 :path=/api/items?page=2 src=10.0.0.9:41234 dst=10.0.0.7:8080 tls=true client_id=spiffe://cluster.local/ns/shop/sa/frontend pod=web-1 proxy=in\n" +
		"rsp id=7 :status=500 latency=20ms success=false src=10.0.0.9:41234 dst=10.0.0.7:8080 tls=true client_id=spiffe://cluster.local/ns/shop/sa/frontend pod=web-1 proxy=in\n" +
		`req id=8 :method=POST :authority=db.shop:9090 :path="/q\x1b[2J" src=10.0.0.7:50000 dst=10.0.0.8:9090 dst_workload=deploy/db tls=true server_id=spiffe://cluster.local/ns/shop/sa/db pod=web-1 proxy=out` + "\n" +
		"rsp id=8 :status=200 grpc-status=0 latency=0.4ms success=true src=10.0.0.7:50000 dst=10.0.0.8:9090 dst_workload=deploy/db tls=true server_id=spiffe://cluster.local/ns/shop/sa/db pod=web-1 proxy=out\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	if got, want := r.errOut.String(), "tap: proxy web-2: no tap server\n"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
}

func TestVizTapJSON(t *testing.T) {
	api := newVizStandIn(t)
	lines := tapLines(t)
	api.Handle("GET "+vizv1.PathTap, streamLines(lines))
	r := startViz(t, api, "viz", "tap", "deploy/web", "-n", "shop", "-o", "json")
	out := r.waitOut(t, func(s string) bool { return strings.Count(s, "\n") == len(lines) })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(strings.Join(lines, "\n")+"\n", out); diff != "" {
		t.Errorf("stdout is not the stream as sent (-want +got):\n%s", diff)
	}
	if !strings.Contains(r.errOut.String(), "tap: proxy web-2: no tap server") {
		t.Errorf("stderr = %q, want the error event", r.errOut.String())
	}
}

func TestVizTapQuery(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"deploy", []string{"deploy/web"}, "namespace=shop&resource=deploy%2Fweb"},
		{"kind name", []string{"pods", "web-1"}, "namespace=shop&resource=pod%2Fweb-1"},
		{"filters", []string{"deployment/web", "--method", "get", "--authority", "web:80", "--path", "/api", "--max-rps", "2.5"},
			"authority=web%3A80&max_rps=2.5&method=GET&namespace=shop&path=%2Fapi&resource=deploy%2Fweb"},
		{"namespace", []string{"ns/shop"}, "namespace=shop&resource=ns%2Fshop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newVizStandIn(t)
			api.Handle("GET "+vizv1.PathTap, streamLines(nil))
			r := startViz(t, api, append([]string{"viz", "tap", "-n", "shop"}, tc.args...)...)
			deadline := time.Now().Add(10 * time.Second)
			for len(api.requests()) == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			if got := api.requests(); len(got) != 1 || got[0].RawQuery != tc.want {
				t.Errorf("requests = %v, want one with query %s", got, tc.want)
			}
		})
	}
}

func TestVizTapArgumentErrors(t *testing.T) {
	api := newVizStandIn(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "name one resource: mesh viz tap deploy/NAME, pod/NAME or ns/NAME"},
		{[]string{"deploy"}, `resource "deploy": want KIND/NAME with KIND deploy (deployment), pod (po) or ns (namespace)`},
		{[]string{"svc/web"}, `kind "svc" is not one of deploy (deployment), pod (po) or ns (namespace)`},
		{[]string{"deploy/web", "--path", "api"}, `--path "api": want a path prefix starting with /`},
		{[]string{"deploy/web", "--max-rps", "-1"}, "--max-rps -1"},
		{[]string{"deploy/web", "--method", "GE T"}, `--method "GE T"`},
		{[]string{"deploy/web", "-o", "wide"}, `--output "wide": want one of [text json]`},
		{[]string{"ns/shop", "-n", "other"}, "-n other and ns/shop name different namespaces"},
	} {
		_, _, err := runViz(t, api, append([]string{"viz", "tap"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want it to contain %q", tc.args, err, tc.want)
		}
	}
	if n := len(api.requests()); n != 0 {
		t.Errorf("the API got %d requests, want none for bad arguments", n)
	}
}

func TestVizTapEnds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{{
		name: "stream closed",
		handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(`{"type":"error","error":"controller shutting down"}` + "\n"))
		},
		want: errTapEnded.Error(),
	}, {
		name:    "refused",
		handler: answer(http.StatusBadRequest, vizv1.Error{Error: "deploy/nope not found"}),
		want:    "viz: deploy/nope not found (HTTP 400)",
	}, {
		name: "not a TapEvent",
		handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte("{}\nnot json\n"))
		},
		want: "viz: tap: line 2 of the stream is not a TapEvent",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			api := newVizStandIn(t)
			api.Handle("GET "+vizv1.PathTap, tc.handler)
			_, _, err := runViz(t, api, "viz", "tap", "deploy/web", "-n", "shop")
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("err = %v, want %s", err, tc.want)
			}
		})
	}
}

func TestTopTable(t *testing.T) {
	table := newTopTable()
	ev := func(typ, id, pod, dir, path string, latency float64, status int) *vizv1.TapEvent {
		return &vizv1.TapEvent{Type: typ, ID: id, Time: testNow, Namespace: "shop", Pod: pod, Direction: dir,
			Src: "10.0.0.9:1234", Dst: "10.0.0.8:80", Method: "GET", Path: path, Status: status, LatencyMs: &latency}
	}
	// Requests to web-1, their responses out of order, a response whose
	// request came before the tap, and the same id on another pod.
	for _, e := range []*vizv1.TapEvent{
		ev(tapRequest, "1", "web-1", "inbound", "/a?x=1", 0, 0),
		ev(tapRequest, "2", "web-1", "inbound", "/a?x=2", 0, 0),
		ev(tapRequest, "3", "web-1", "inbound", "/b", 0, 0),
		ev(tapRequest, "1", "web-2", "outbound", "/c", 0, 0),
		ev(tapResponse, "2", "web-1", "inbound", "", 30, 503),
		ev(tapResponse, "1", "web-1", "inbound", "", 10, 200),
		ev(tapResponse, "3", "web-1", "inbound", "", 5, 200),
		ev(tapResponse, "1", "web-2", "outbound", "", 7, 200),
		ev(tapResponse, "9", "web-1", "inbound", "/b", 1, 200),
		{Type: tapError, Error: "ignored"},
	} {
		table.add(e)
	}
	want := []topRow{
		{topKey: topKey{"10.0.0.9", "web-1", "GET", "/a"}, Count: 2, Successes: 1, Best: 10, Worst: 30, Last: 10, Timed: true},
		{topKey: topKey{"10.0.0.9", "web-1", "GET", "/b"}, Count: 2, Successes: 2, Best: 1, Worst: 5, Last: 1, Timed: true},
		{topKey: topKey{"web-2", "10.0.0.8", "GET", "/c"}, Count: 1, Successes: 1, Best: 7, Worst: 7, Last: 7, Timed: true},
	}
	if diff := cmp.Diff(want, table.rows(0), cmp.AllowUnexported(topRow{})); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want[:1], table.rows(1), cmp.AllowUnexported(topRow{})); diff != "" {
		t.Errorf("rows(1) (-want +got):\n%s", diff)
	}
	if n := len(table.pending); n != 0 {
		t.Errorf("%d requests still pending, want 0", n)
	}
}

func TestTopTableForgetsLostRequests(t *testing.T) {
	table := newTopTable()
	for i := range maxPendingRequests {
		table.add(&vizv1.TapEvent{Type: tapRequest, ID: strconv.Itoa(i), Time: testNow, Pod: "web-1"})
	}
	table.add(&vizv1.TapEvent{Type: tapRequest, ID: "late", Time: testNow.Add(2 * pendingRequestTTL), Pod: "web-1"})
	if n := len(table.pending); n != 1 {
		t.Errorf("%d requests pending, want only the one after the old ones expired", n)
	}
}

func TestVizTop(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathTap, streamLines(tapLines(t)))
	r := startViz(t, api, "viz", "top", "-n", "shop")
	// The busiest first; ties by source. Paths lose their query.
	frame := "" +
		"SOURCE    DESTINATION  METHOD  PATH         COUNT  BEST   WORST  LAST   SUCCESS\n" +
		"10.0.0.9  web-1        GET     /api/items   1      20ms   20ms   20ms   0.00%\n" +
		`web-1     deploy/db    POST    "/q\x1b[2J"  1      0.4ms  0.4ms  0.4ms  100.00%` + "\n"
	r.waitOut(t, func(s string) bool { return strings.Contains(s, frame) })
	if err := r.stop(t); err != nil {
		t.Errorf("interrupted top returned %v, want nil", err)
	}
	if got := api.requests()[0].RawQuery; got != "namespace=shop&resource=ns%2Fshop" {
		t.Errorf("query = %s, want the whole namespace", got)
	}
	if !strings.Contains(r.errOut.String(), "tap: proxy web-2: no tap server") {
		t.Errorf("stderr = %q, want the error event", r.errOut.String())
	}
}

func TestVizTopEnds(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathTap, answer(http.StatusForbidden, vizv1.Error{Error: "no"}))
	_, _, err := runViz(t, api, "viz", "top", "deploy/web", "-n", "shop")
	var apiErr *vizAPIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
		t.Errorf("err = %v, want the API's 403", err)
	}
	if _, _, err := runViz(t, api, "viz", "top", "-n", "shop", "--max-rows", "-1"); err == nil || !strings.Contains(err.Error(), "--max-rows -1") {
		t.Errorf("err = %v, want --max-rows refused", err)
	}
}

// FuzzFormatTapEvent checks that no event, whatever its strings, makes
// more than one line or carries control characters to the terminal.
func FuzzFormatTapEvent(f *testing.F) {
	f.Add("request", "1", "GET", "web:80", "/", "10.0.0.1:1")                  // plain
	f.Add("response", "2", "POST", "a b", "/x\x1b[2J", "spiffe://x/ns/a/sa/b") // spaces and an escape
	f.Add("request", "\n", "\r", "\u2028", "\x00", "\"")                       // line breaks, NUL, quote
	f.Fuzz(func(t *testing.T, typ, id, method, authority, path, peer string) {
		ev := &vizv1.TapEvent{Type: typ, ID: id, Method: method, Authority: authority, Path: path,
			Src: peer, Dst: peer, ClientID: peer, DstWorkload: peer, Pod: peer, Direction: peer}
		line := formatTapEvent(ev)
		for _, r := range line {
			if r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' || (r >= 0x80 && r < 0xa0) {
				t.Fatalf("line has control character %U: %q", r, line)
			}
		}
	})
}
