package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/install/manifests"
)

// The tests of `mesh viz` run the real commands against vizStandIn, an
// httptest server that answers the viz API's contract (api/viz/v1) with
// fixed data, reached through a connector that skips the port-forward.
// The real controller, and the port-forward to it, are exercised by the
// end-to-end suite; TestVizFindsController covers finding the pod, up to
// the port-forward, against the Kubernetes API stand-in.

// vizStandIn is a viz API answering with whatever handlers a test adds to
// its ServeMux. It records the requests it gets; mu guards got.
type vizStandIn struct {
	*http.ServeMux
	srv *httptest.Server
	mu  sync.Mutex
	got []*url.URL
}

func newVizStandIn(t testing.TB) *vizStandIn {
	t.Helper()
	s := &vizStandIn{ServeMux: http.NewServeMux()}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.got = append(s.got, r.URL)
		s.mu.Unlock()
		s.ServeMux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// requests returns the requests the stand-in got so far.
func (s *vizStandIn) requests() []*url.URL {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*url.URL(nil), s.got...)
}

// answer makes a handler that answers v as JSON with status code.
func answer(code int, v any) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
}

// syncBuffer is a bytes.Buffer safe for a command writing to it while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// vizRun is a `mesh viz` command running against a stand-in.
type vizRun struct {
	out, errOut syncBuffer
	opened      chan string // URLs the dashboard asked to open in a browser
	done        chan error
	cancel      context.CancelFunc
}

// startViz runs `mesh` with args, whose viz commands reach api, refresh
// every 10ms, and record browser openings instead of making them.
func startViz(t testing.TB, api *vizStandIn, args ...string) *vizRun {
	t.Helper()
	isolateKubeconfig(t)
	r := &vizRun{opened: make(chan string, 10), done: make(chan error, 1)}
	o := NewOptions(strings.NewReader(""), &r.out, &r.errOut)
	o.Now = func() time.Time { return testNow }
	root := NewRootCmd(o)
	for _, c := range root.Commands() {
		if c.Name() == "viz" {
			root.RemoveCommand(c)
		}
	}
	root.AddCommand(newVizCommand(&vizEnv{
		Options: o,
		connect: func(ctx context.Context) (*vizConn, error) {
			return &vizConn{ctx: ctx, base: api.srv.URL, client: api.srv.Client(), close: func() {}}, nil
		},
		statEvery: 10 * time.Millisecond,
		topEvery:  10 * time.Millisecond,
		open:      func(u string) { r.opened <- u },
	}))
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	r.cancel = cancel
	go func() { r.done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// wait returns what the command returned, once it has.
func (r *vizRun) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the next wait
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("the command did not end; stdout:\n%s\nstderr:\n%s", r.out.String(), r.errOut.String())
		return nil
	}
}

// stop interrupts the command, as Ctrl-C does, and returns what it
// returned.
func (r *vizRun) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

// waitOut waits until cond holds for stdout, and returns stdout.
func (r *vizRun) waitOut(t testing.TB, cond func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if out := r.out.String(); cond(out) {
			return out
		}
		select {
		case err := <-r.done:
			r.done <- err
			if out := r.out.String(); cond(out) {
				return out
			}
			t.Fatalf("the command ended (%v) before its output was as expected; stdout:\n%s\nstderr:\n%s", err, r.out.String(), r.errOut.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatalf("timed out waiting for the output; stdout:\n%s\nstderr:\n%s", r.out.String(), r.errOut.String())
	return ""
}

// runViz runs a command that ends by itself and returns its output.
func runViz(t testing.TB, api *vizStandIn, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	r := startViz(t, api, args...)
	err = r.wait(t)
	return r.out.String(), r.errOut.String(), err
}

// vizOutput runs a command that ends by itself, fails the test when it
// fails, and returns its stdout.
func vizOutput(t testing.TB, api *vizStandIn, args ...string) string {
	t.Helper()
	out, errOut, err := runViz(t, api, args...)
	if err != nil {
		t.Fatalf("%v: err = %v; stderr:\n%s", args, err, errOut)
	}
	return out
}

// checkStdout runs a command and compares its stdout with want.
func checkStdout(t testing.TB, api *vizStandIn, want string, args ...string) {
	t.Helper()
	if diff := cmp.Diff(want, vizOutput(t, api, args...)); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}

// checkJSONOutput runs a command that prints a T as JSON and compares
// what it printed with want.
func checkJSONOutput[T any](t testing.TB, api *vizStandIn, want T, args ...string) {
	t.Helper()
	out := vizOutput(t, api, args...)
	var got T
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("stdout is not a %T: %v\n%s", got, err, out)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%T (-want +got):\n%s", got, diff)
	}
}

// checkOnlyQuery checks that api got one request, with query want.
func checkOnlyQuery(t testing.TB, api *vizStandIn, want string) {
	t.Helper()
	got := api.requests()
	if len(got) != 1 {
		t.Fatalf("got %d requests, want 1", len(got))
	}
	if got[0].RawQuery != want {
		t.Errorf("query = %s, want %s", got[0].RawQuery, want)
	}
}

// checkArgumentError runs a command with bad arguments against a new
// stand-in: it must fail with an error containing want, without asking
// the API.
func checkArgumentError(t testing.TB, want string, args ...string) {
	t.Helper()
	api := newVizStandIn(t)
	_, _, err := runViz(t, api, args...)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want it to contain %q", err, want)
	}
	if n := len(api.requests()); n != 0 {
		t.Errorf("the API got %d requests, want none for bad arguments", n)
	}
}

func f64(v float64) *float64 { return &v }
func u64(v uint64) *uint64   { return &v }

// statFixture has a meshed deployment with traffic, a meshed one without,
// and one outside the mesh; rows come unsorted, as the API may send them.
var statFixture = vizv1.StatList{
	Window:    "1m",
	Collected: testNow,
	Rows: []vizv1.StatRow{{
		Resource:   vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "web"},
		MeshedPods: 2, TotalPods: 2,
		Stats: vizv1.Stats{
			Requests: 3000, Successes: 2700, SuccessRate: f64(0.9), RPS: 50,
			LatencyP50: f64(20), LatencyP95: f64(95.4), LatencyP99: f64(0.25),
			TCPConnections: 4, ReadBytesPerSec: 1024, WriteBytesPerSec: 2048.25, TotalRequests: 91000,
			Denied: u64(150), DeniedPerSec: f64(2.5),
		},
		Identities: []string{"spiffe://cluster.local/ns/shop/sa/web"},
	}, {
		Resource:   vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "db"},
		MeshedPods: 1, TotalPods: 1,
		Stats: vizv1.Stats{Denied: u64(0), DeniedPerSec: f64(0)},
	}, {
		Resource:   vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "legacy"},
		MeshedPods: 0, TotalPods: 3,
	}},
}

func TestVizStatTable(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathStat, answer(http.StatusOK, statFixture))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{{
		name: "table",
		args: []string{"viz", "stat", "deploy", "-n", "shop"},
		want: "" +
			"NAME    MESHED  SUCCESS  RPS      LATENCY_P50  LATENCY_P95  LATENCY_P99  TCP_CONN\n" +
			"db      1/1     -        0.0rps   -            -            -            0\n" +
			"legacy  0/3     -        -        -            -            -            -\n" +
			"web     2/2     90.00%   50.0rps  20ms         95ms         0.25ms       4\n",
	}, {
		name: "wide",
		args: []string{"viz", "stat", "deploy", "-n", "shop", "-o", "wide"},
		want: "" +
			"NAME    MESHED  SUCCESS  RPS      LATENCY_P50  LATENCY_P95  LATENCY_P99  TCP_CONN  READ_BYTES/SEC  WRITE_BYTES/SEC  DENIED_RPS  IDENTITY\n" +
			"db      1/1     -        0.0rps   -            -            -            0         0.0B/s          0.0B/s           0.0rps      -\n" +
			"legacy  0/3     -        -        -            -            -            -         -               -                -           -\n" +
			"web     2/2     90.00%   50.0rps  20ms         95ms         0.25ms       4         1024.0B/s       2048.2B/s        2.5rps      spiffe://cluster.local/ns/shop/sa/web\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			checkStdout(t, api, tc.want, tc.args...)
		})
	}
}

// A service's figures are its clients' outbound traffic, where nothing
// is denied: the API sends no denials, and the column says "-".
func TestVizStatWideService(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathStat, answer(http.StatusOK, vizv1.StatList{Window: "1m", Collected: testNow, Rows: []vizv1.StatRow{{
		Resource:   vizv1.Resource{Kind: "service", Namespace: "shop", Name: "web"},
		MeshedPods: 2, TotalPods: 2,
		Stats: vizv1.Stats{Requests: 60, Successes: 60, SuccessRate: f64(1), RPS: 1},
	}}}))
	checkStdout(t, api, ""+
		"NAME  MESHED  SUCCESS  RPS     LATENCY_P50  LATENCY_P95  LATENCY_P99  TCP_CONN  READ_BYTES/SEC  WRITE_BYTES/SEC  DENIED_RPS  IDENTITY\n"+
		"web   2/2     100.00%  1.0rps  -            -            -            0         0.0B/s          0.0B/s           -           -\n",
		"viz", "stat", "svc", "-n", "shop", "-o", "wide")
}

func TestVizStatJSON(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathStat, answer(http.StatusOK, statFixture))
	checkJSONOutput(t, api, statFixture, "viz", "stat", "deploy", "-n", "shop", "-o", "json")
}

func TestVizStatQuery(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // the query, encoded
	}{
		{"kind", []string{"deploy"}, "kind=deploy&namespace=shop&window=1m"},
		{"kind alias", []string{"deployments"}, "kind=deploy&namespace=shop&window=1m"},
		{"kind and name", []string{"po", "web-1"}, "kind=pod&name=web-1&namespace=shop&window=1m"},
		{"kind/name", []string{"service/web"}, "kind=svc&name=web&namespace=shop&window=1m"},
		{"from", []string{"svc", "--from", "deployment/frontend"}, "from=deploy%2Ffrontend&kind=svc&namespace=shop&window=1m"},
		{"to", []string{"deploy", "--to", "services/db", "-t", "5m"}, "kind=deploy&namespace=shop&to=svc%2Fdb&window=5m"},
		{"one namespace", []string{"ns"}, "kind=ns&namespace=shop&window=1m"},
		{"namespace by name", []string{"namespace/web"}, "kind=ns&name=web&namespace=web&window=1m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newVizStandIn(t)
			api.Handle("GET "+vizv1.PathStat, answer(http.StatusOK, statFixture))
			vizOutput(t, api, append([]string{"viz", "stat", "-n", "shop"}, tc.args...)...)
			checkOnlyQuery(t, api, tc.want)
		})
	}
	t.Run("all namespaces", func(t *testing.T) {
		api := newVizStandIn(t)
		api.Handle("GET "+vizv1.PathStat, answer(http.StatusOK, statFixture))
		if _, _, err := runViz(t, api, "viz", "stat", "ns", "-A"); err != nil {
			t.Fatal(err)
		}
		if got, want := api.requests()[0].RawQuery, "kind=ns&window=1m"; got != want {
			t.Errorf("query = %s, want %s", got, want)
		}
	})
}

func TestVizStatArgumentErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no kind", []string{}, "name a kind: mesh viz stat deploy|pod|svc|ns [NAME]"},
		{"unknown kind", []string{"rs"}, `unknown kind "rs": want deploy (deployment), pod (po), svc (service) or ns (namespace)`},
		{"too many", []string{"deploy", "a", "b"}, "too many arguments"},
		{"slash and name", []string{"deploy/web", "db"}, "not both"},
		{"empty name", []string{"deploy/"}, `"deploy/": want KIND/NAME`},
		{"bad output", []string{"deploy", "-o", "yaml"}, `--output "yaml": want one of [table wide json]`},
		{"bad window", []string{"deploy", "-t", "soon"}, `--time-window "soon": want a positive duration`},
		{"negative window", []string{"deploy", "-t", "-1m"}, "want a positive duration"},
		{"from and to", []string{"deploy", "--from", "deploy/a", "--to", "svc/b"}, "pass --from or --to, not both"},
		{"from a service", []string{"deploy", "--from", "svc/a"}, `--from "svc/a": kind "svc" is not one of deploy (deployment) or pod (po)`},
		{"to a pod", []string{"deploy", "--to", "po/a"}, `--to "po/a": kind "po" is not one of deploy (deployment) or svc (service)`},
		{"from without name", []string{"deploy", "--from", "web"}, `--from "web": want KIND/NAME`},
		{"from with ns", []string{"ns", "--from", "deploy/a"}, "not ns"},
		{"all namespaces of deploys", []string{"deploy", "-A"}, "--all-namespaces works with kind ns only"},
		{"all namespaces and a name", []string{"ns", "shop", "-A"}, "not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkArgumentError(t, tc.want, append([]string{"viz", "stat"}, tc.args...)...)
		})
	}
}

func TestVizStatNoRows(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathStat, answer(http.StatusOK, vizv1.StatList{Window: "1m"}))
	out, errOut, err := runViz(t, api, "viz", "stat", "svc", "-n", "shop")
	if err != nil {
		t.Fatal(err)
	}
	if out != "" || errOut != "No services found in namespace shop.\n" {
		t.Errorf("stdout %q, stderr %q; want only the message on stderr", out, errOut)
	}
}

func TestVizStatWatch(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathStat, answer(http.StatusOK, statFixture))
	checkWatch(t, api, "NAME    MESHED  SUCCESS", "viz", "stat", "deploy", "-n", "shop", "--watch")
}

// checkWatch runs a --watch command until it has drawn two tables,
// which start with header, and interrupts it. Not on a terminal, it must
// draw whole tables one after another, a blank line between them, and no
// escape sequences.
func checkWatch(t testing.TB, api *vizStandIn, header string, args ...string) {
	t.Helper()
	r := startViz(t, api, args...)
	column := header[:strings.Index(header, " ")+1]
	out := r.waitOut(t, func(s string) bool { return strings.Count(s, column) >= 2 })
	if err := r.stop(t); err != nil {
		t.Errorf("interrupted watch returned %v, want nil", err)
	}
	frames := strings.Split(out, "\n\n")
	if len(frames) < 2 {
		t.Fatalf("want at least 2 tables separated by a blank line, got:\n%s", out)
	}
	for i, f := range frames[:2] {
		if !strings.HasPrefix(f, header) || strings.Count(f, "\n") < 3 {
			t.Errorf("table %d is not whole:\n%s", i, f)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("output to a non-terminal has escape sequences:\n%q", out)
	}
}

// A watch keeps going through failures after the first answer, and
// stops at once on the request's own fault.
func TestVizStatWatchErrors(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	api := newVizStandIn(t)
	api.HandleFunc("GET "+vizv1.PathStat, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		switch {
		case n == 2:
			answer(http.StatusServiceUnavailable, vizv1.Error{Error: "no scrape yet"})(w, r)
		case n >= 4:
			answer(http.StatusBadRequest, vizv1.Error{Error: "window is longer than the retention"})(w, r)
		default:
			answer(http.StatusOK, statFixture)(w, r)
		}
	})
	r := startViz(t, api, "viz", "stat", "deploy", "-n", "shop", "-w")
	err := r.wait(t)
	if want := "viz: window is longer than the retention (HTTP 400)"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
	if got := r.errOut.String(); !strings.Contains(got, "viz: no scrape yet (HTTP 503) (trying again in 10ms)") {
		t.Errorf("stderr = %q, want the passing failure reported", got)
	}
	if n := strings.Count(r.out.String(), "NAME "); n != 2 {
		t.Errorf("drew %d tables, want 2", n)
	}
}

func TestVizAPIErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{{
		name:    "error body",
		handler: answer(http.StatusBadRequest, vizv1.Error{Error: `unknown kind "rs"`}),
		want:    `viz: unknown kind "rs" (HTTP 400)`,
	}, {
		name:    "not the viz API",
		handler: http.NotFound,
		want:    "viz: mesh-viz does not serve /api/v1/stat (404 page not found): is it older than this mesh binary? run mesh check (HTTP 404)",
	}, {
		name: "no body",
		handler: func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
		},
		want: "viz: Bad Gateway (HTTP 502)",
	}, {
		name: "not JSON",
		handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte("<html>"))
		},
		want: "viz: GET /api/v1/stat: the answer is not the viz API's JSON",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			api := newVizStandIn(t)
			api.HandleFunc("GET "+vizv1.PathStat, tc.handler)
			_, _, err := runViz(t, api, "viz", "stat", "deploy", "-n", "shop")
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("err = %v, want %s", err, tc.want)
			}
		})
	}
}

var edgesFixture = vizv1.EdgeList{
	Window:    "1m",
	Collected: testNow,
	Edges: []vizv1.Edge{{
		Src:   vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "web"},
		Dst:   vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "db"},
		SrcID: "spiffe://cluster.local/ns/shop/sa/web", DstID: "spiffe://cluster.local/ns/shop/sa/db",
		MTLS:  true,
		Stats: vizv1.Stats{Requests: 600, Successes: 600, SuccessRate: f64(1), RPS: 10, LatencyP99: f64(3.2)},
	}, {
		Src:   vizv1.Resource{Kind: "deployment", Namespace: "shop", Name: "frontend"},
		Dst:   vizv1.Resource{Kind: "statefulset", Namespace: "legacy", Name: "cache"},
		SrcID: "spiffe://cluster.local/ns/shop/sa/frontend",
		Stats: vizv1.Stats{Requests: 60, RPS: 1},
	}},
}

func TestVizEdges(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathEdges, answer(http.StatusOK, edgesFixture))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{{
		name: "table",
		args: []string{"-n", "shop"},
		want: "" +
			"SRC              DST        SRC_NS  DST_NS  SECURED  SUCCESS  RPS      LATENCY_P99  SRC_ID                                      DST_ID\n" +
			"deploy/frontend  sts/cache  shop    legacy  ×        -        1.0rps   -            spiffe://cluster.local/ns/shop/sa/frontend  -\n" +
			"deploy/web       deploy/db  shop    shop    √        100.00%  10.0rps  3ms          spiffe://cluster.local/ns/shop/sa/web       spiffe://cluster.local/ns/shop/sa/db\n",
	}, {
		name: "wide",
		args: []string{"-A", "-o", "wide"},
		want: "" +
			"SRC              DST        SRC_NS  DST_NS  SECURED  SUCCESS  RPS      LATENCY_P99  SRC_ID                                      DST_ID                                LATENCY_P50  LATENCY_P95  TCP_CONN\n" +
			"deploy/frontend  sts/cache  shop    legacy  ×        -        1.0rps   -            spiffe://cluster.local/ns/shop/sa/frontend  -                                     -            -            0\n" +
			"deploy/web       deploy/db  shop    shop    √        100.00%  10.0rps  3ms          spiffe://cluster.local/ns/shop/sa/web       spiffe://cluster.local/ns/shop/sa/db  -            -            0\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			checkStdout(t, api, tc.want, append([]string{"viz", "edges"}, tc.args...)...)
		})
	}
	got := api.requests()
	if len(got) != 2 || got[0].RawQuery != "namespace=shop&window=1m" || got[1].RawQuery != "window=1m" {
		t.Errorf("queries = %v, want namespace=shop&window=1m then window=1m", got)
	}
}

func TestVizEdgesJSON(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathEdges, answer(http.StatusOK, edgesFixture))
	checkJSONOutput(t, api, edgesFixture, "viz", "edges", "-n", "shop", "-o", "json")
}

func TestVizEdgesArgumentErrors(t *testing.T) {
	api := newVizStandIn(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-n", "shop", "-A"}, "not both"},
		{[]string{"-n", "shop", "-o", "yaml"}, `--output "yaml"`},
		{[]string{"-n", "shop", "web"}, `unknown command "web"`},
	} {
		_, _, err := runViz(t, api, append([]string{"viz", "edges"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want it to contain %q", tc.args, err, tc.want)
		}
	}
}

// Without a stand-in connector, viz finds a ready mesh-viz pod through
// the Kubernetes API before it port-forwards; the API stand-in answers
// the pod list, and has no portforward subresource. The controller's
// pods serve no viz: they are never chosen.
func TestVizFindsVizPod(t *testing.T) {
	pod := func(app, name string, ready bool) *corev1.Pod {
		p := testPod(manifests.DefaultNamespace, name, false)
		p.Labels = map[string]string{manifests.NameLabel: app, manifests.PartOfLabel: manifests.PartOf}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
		return p
	}
	controller := pod(manifests.ControllerName, "mesh-controller-1", true)
	for _, tc := range []struct {
		name string
		pods []*corev1.Pod
		want string
	}{
		{"none", []*corev1.Pod{controller},
			"no mesh-viz pods in namespace mesh-system: install the mesh with mesh install (it also upgrades a control plane that lacks mesh-viz)"},
		{"not ready", []*corev1.Pod{controller, pod("mesh-viz", "mesh-viz-1", false)},
			"no mesh-viz pod in namespace mesh-system is ready (mesh-viz-1 is Running and not ready): run mesh check to see why"},
		{"ready", []*corev1.Pod{controller, pod("mesh-viz", "mesh-viz-2", false), pod("mesh-viz", "mesh-viz-3", true)},
			"port-forward to pod mesh-system/mesh-viz-3: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k8s := newAPIStandIn(t)
			for _, p := range tc.pods {
				k8s.addPod(p, proxyAnswer{})
			}
			_, _, err := run(t, "", "viz", "stat", "deploy", "-n", "shop", "--kubeconfig", k8s.kubeconfig(t, ""))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestVizWithoutCluster(t *testing.T) {
	for _, args := range [][]string{
		{"viz", "edges", "-n", "shop"},   // to port-forward
		{"viz", "stat", "deploy"},        // for the context's namespace
		{"viz", "top", "deploy/web"},     // the same
		{"viz", "dashboard", "--port=0"}, // to port-forward
	} {
		if _, _, err := run(t, "", args...); !errors.Is(err, ErrNoKubeconfig) {
			t.Errorf("%v: err = %v, want ErrNoKubeconfig", args, err)
		}
	}
}

func TestScreen(t *testing.T) {
	for _, tc := range []struct {
		tty  bool
		want string
	}{
		{false, "one\n\ntwo\n"},
		{true, clearScreen + "one\n" + clearScreen + "two\n"},
	} {
		var b bytes.Buffer
		s := &screen{w: &b, tty: tc.tty}
		s.draw([]byte("one\n"))
		s.draw([]byte("two\n"))
		if b.String() != tc.want {
			t.Errorf("tty=%v: drew %q, want %q", tc.tty, b.String(), tc.want)
		}
	}
}

func TestCells(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{fmtSuccess(nil), "-"},
		{fmtSuccess(f64(1)), "100.00%"},
		{fmtSuccess(f64(0.12345)), "12.35%"},
		{fmtRPS(0), "0.0rps"},
		{fmtRPS(1234.56), "1234.6rps"},
		{fmtLatency(nil), "-"},
		{fmtLatency(f64(1500)), "1500ms"},
		{fmtLatency(f64(1)), "1ms"},
		{fmtLatency(f64(0.5)), "0.5ms"},
		{fmtLatency(f64(0.123)), "0.12ms"},
		{fmtByteRate(10.25), "10.2B/s"},
		{safeValue(""), "-"},
		{safeValue("/api/items"), "/api/items"},
		{safeValue("/a b"), `"/a b"`},
		{safeValue("/\x1b[2J"), `"/\x1b[2J"`},
		{resourceRef(vizv1.Resource{Kind: "daemonset", Name: "agent"}), "ds/agent"},
		{resourceRef(vizv1.Resource{Kind: "job", Name: "backup"}), "job/backup"},
		{resourceRef(vizv1.Resource{Name: "10.0.0.1"}), "10.0.0.1"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
