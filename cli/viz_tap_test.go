package cli

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/controller/tapapi"
	"github.com/mesh-dev/mesh/install/manifests"
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
	TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
}, {
	Type: tapResponse, ID: "7", Time: testNow.Add(20 * time.Millisecond), Namespace: "shop", Pod: "web-1", Direction: "inbound",
	Src: "10.0.0.9:41234", Dst: "10.0.0.7:8080", ClientID: "spiffe://cluster.local/ns/shop/sa/frontend",
	Method: "GET", Authority: "web.shop:8080", Path: "/api/items?page=2",
	Status: 500, LatencyMs: f64(20), Success: boolp(false), TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
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

// The tap tests point the kubeconfig at the stand-in: tap reaches the tap
// API through the Kubernetes API server, with the kubeconfig's
// credentials, at the tap API's paths (controller/tapapi).

// webTapPath is the tap API's path of deploy/web in namespace shop.
const webTapPath = "/apis/tap.mesh.dev/v1alpha1/watch/namespaces/shop/deployments/web/tap"

// standInToken is the bearer token of standInKubeconfig's user.
const standInToken = "tap-token"

// newTapStandIn is a vizStandIn over TLS, as an API server is: client-go
// sends a kubeconfig's credentials over TLS only.
func newTapStandIn(t testing.TB) *vizStandIn {
	t.Helper()
	s := &vizStandIn{ServeMux: http.NewServeMux()}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.got = append(s.got, r.URL)
		s.mu.Unlock()
		s.ServeMux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// standInKubeconfig writes a kubeconfig whose API server is the stand-in,
// trusting its certificate when it has one, and returns its path.
func standInKubeconfig(t testing.TB, api *vizStandIn) string {
	t.Helper()
	var ca string
	if cert := api.srv.Certificate(); cert != nil {
		ca = "\n    certificate-authority-data: " + base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
	}
	cfg := `apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster:
    server: ` + api.srv.URL + ca + `
users:
- name: dev
  user:
    token: ` + standInToken + `
contexts:
- name: standin
  context:
    cluster: standin
    user: dev
    namespace: shop
current-context: standin
`
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startTap runs `mesh viz tap` (or top) with args against the stand-in as
// the API server.
func startTap(t testing.TB, api *vizStandIn, args ...string) *vizRun {
	t.Helper()
	return startViz(t, api, append(args, "--kubeconfig", standInKubeconfig(t, api))...)
}

func TestVizTap(t *testing.T) {
	api := newTapStandIn(t)
	lines := streamLines(tapLines(t))
	api.HandleFunc("GET "+webTapPath, func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer "+standInToken {
			http.Error(w, "Authorization "+got+", want the kubeconfig's token", http.StatusUnauthorized)
			return
		}
		lines(w, r)
	})
	r := startTap(t, api, "viz", "tap", "deploy/web", "-n", "shop")
	out := r.waitOut(t, func(s string) bool { return strings.Count(s, "\n") == 4 })
	if err := r.stop(t); err != nil {
		t.Errorf("interrupted tap returned %v, want nil", err)
	}
	want := "" +
		"req id=7 :method=GET :authority=web.shop:8080 :path=/api/items?page=2 src=10.0.0.9:41234 dst=10.0.0.7:8080 tls=true client_id=spiffe://cluster.local/ns/shop/sa/frontend pod=web-1 proxy=in trace_id=4bf92f3577b34da6a3ce929d0e0e4736\n" +
		"rsp id=7 :status=500 latency=20ms success=false src=10.0.0.9:41234 dst=10.0.0.7:8080 tls=true client_id=spiffe://cluster.local/ns/shop/sa/frontend pod=web-1 proxy=in trace_id=4bf92f3577b34da6a3ce929d0e0e4736\n" +
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
	api := newTapStandIn(t)
	lines := tapLines(t)
	api.Handle("GET "+webTapPath, streamLines(lines))
	r := startTap(t, api, "viz", "tap", "deploy/web", "-n", "shop", "-o", "json")
	out := r.waitOut(t, func(s string) bool { return strings.Count(s, "\n") == len(lines) })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(strings.Join(lines, "\n")+"\n", out); diff != "" {
		t.Errorf("stdout is not the stream as sent (-want +got):\n%s", diff)
	}
	if !strings.Contains(out, `"traceId":"4bf92f3577b34da6a3ce929d0e0e4736"`) {
		t.Errorf("stdout %q has no traceId of the sampled request", out)
	}
	if !strings.Contains(r.errOut.String(), "tap: proxy web-2: no tap server") {
		t.Errorf("stderr = %q, want the error event", r.errOut.String())
	}
}

func TestVizTapQuery(t *testing.T) {
	const ns = "/apis/tap.mesh.dev/v1alpha1/watch/namespaces/"
	for _, tc := range []struct {
		name      string
		args      []string
		wantPath  string
		wantQuery string
	}{
		{"deploy", []string{"deploy/web"}, webTapPath, ""},
		{"kind name", []string{"pods", "web-1"}, ns + "shop/pods/web-1/tap", ""},
		{"filters", []string{"deployment/web", "--method", "get", "--authority", "web:80", "--path", "/api", "--max-rps", "2.5"},
			webTapPath, "authority=web%3A80&max_rps=2.5&method=GET&path=%2Fapi"},
		{"namespace", []string{"ns/shop"}, ns + "shop/tap", ""},
		{"context's namespace", []string{"deploy/web", "-n", ""}, webTapPath, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newTapStandIn(t)
			api.Handle("GET /apis/", streamLines(nil))
			r := startTap(t, api, append([]string{"viz", "tap", "-n", "shop"}, tc.args...)...)
			deadline := time.Now().Add(10 * time.Second)
			for len(api.requests()) == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			if got := api.requests(); len(got) != 1 || got[0].Path != tc.wantPath || got[0].RawQuery != tc.wantQuery {
				t.Errorf("requests = %v, want one of %s?%s", got, tc.wantPath, tc.wantQuery)
			}
		})
	}
}

// The CLI's paths are the tap API's, and the role it tells admins to bind
// is the one install makes and the tap API names.
func TestTapPathsAreTheTapAPIs(t *testing.T) {
	for _, tc := range []struct {
		q    tapQuery
		want tapapi.Target
	}{
		{tapQuery{Namespace: "shop", Resource: "deploy/web"}, tapapi.Target{Namespace: "shop", Resource: "deployments", Name: "web"}},
		{tapQuery{Namespace: "shop", Resource: "pod/web-1"}, tapapi.Target{Namespace: "shop", Resource: "pods", Name: "web-1"}},
		{tapQuery{Namespace: "shop", Resource: "ns/shop"}, tapapi.Target{Namespace: "shop", Resource: "namespaces", Name: "shop"}},
	} {
		path, err := tc.q.path()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tapapi.ParsePath(path); err != nil || got != tc.want {
			t.Errorf("%+v: path %s parses as %+v, %v; want %+v", tc.q, path, got, err, tc.want)
		}
	}
	if manifests.TapClusterRoleName != tapapi.ClusterRole || tapAPIGroup != tapapi.Group {
		t.Errorf("the CLI names role %s in group %s, the tap API %s in %s", manifests.TapClusterRoleName, tapAPIGroup, tapapi.ClusterRole, tapapi.Group)
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

// kubeStatus answers with a metav1.Status, as the API server and the tap API
// refuse.
func kubeStatus(code int, msg string) http.HandlerFunc {
	return answer(code, metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Code: int32(code), Message: msg})
}

func TestVizTapEnds(t *testing.T) {
	const apiServerDenial = `deployments.tap.mesh.dev "web" is forbidden: User "system:serviceaccount:shop:viewer" cannot watch resource "deployments/tap" in API group "tap.mesh.dev" in the namespace "shop"`
	const tapAPIDenial = `user "alice" may not tap deployments/web in namespace shop: it needs the "watch" verb on "deployments/tap" in group tap.mesh.dev. An admin grants it in namespace shop with: kubectl create rolebinding mesh-tap-alice -n shop --clusterrole=mesh-tap --user=alice`
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{{
		name: "stream closed",
		handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(`{"type":"error","error":"mesh-viz shutting down"}` + "\n"))
		},
		want: errTapEnded.Error(),
	}, {
		name:    "refused by viz",
		handler: answer(http.StatusNotFound, vizv1.Error{Error: "deploy/nope not found in namespace shop"}),
		want:    "viz: deploy/nope not found in namespace shop (HTTP 404)",
	}, {
		name:    "denied by the API server",
		handler: kubeStatus(http.StatusForbidden, apiServerDenial),
		want: "viz: " + apiServerDenial + ": tapping needs the watch verb on the tap resources of group tap.mesh.dev; " +
			"an admin grants it with kubectl create rolebinding NAME -n shop --clusterrole=mesh-tap --user=USER (or --serviceaccount=NAMESPACE:NAME) (HTTP 403)",
	}, {
		name:    "denied by the tap API",
		handler: kubeStatus(http.StatusForbidden, tapAPIDenial),
		want:    "viz: " + tapAPIDenial + " (HTTP 403)",
	}, {
		name:    "APIService unavailable",
		handler: kubeStatus(http.StatusServiceUnavailable, "service unavailable"),
		want:    "viz: the tap API (APIService v1alpha1.tap.mesh.dev) is not available (service unavailable): mesh-viz is not installed or not ready; run mesh check (HTTP 503)",
	}, {
		name:    "no APIService",
		handler: kubeStatus(http.StatusNotFound, "the server could not find the requested resource"),
		want:    "viz: the tap API (APIService v1alpha1.tap.mesh.dev) is not available (the server could not find the requested resource): mesh-viz",
	}, {
		name:    "not authenticated",
		handler: kubeStatus(http.StatusUnauthorized, "Unauthorized"),
		want:    "viz: Unauthorized: check the kubeconfig's credentials (kubectl auth whoami)",
	}, {
		name: "not a TapEvent",
		handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte("{}\nnot json\n"))
		},
		want: "viz: tap: line 2 of the stream is not a TapEvent",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			api := newTapStandIn(t)
			api.Handle("GET "+webTapPath, tc.handler)
			r := startTap(t, api, "viz", "tap", "deploy/web", "-n", "shop")
			if err := r.wait(t); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant %s", err, tc.want)
			}
		})
	}
}

// Without a kubeconfig, tap says where mesh looks for one.
func TestVizTapWithoutCluster(t *testing.T) {
	if _, _, err := run(t, "", "viz", "tap", "deploy/web", "-n", "shop"); !errors.Is(err, ErrNoKubeconfig) {
		t.Errorf("err = %v, want ErrNoKubeconfig", err)
	}
}

// The dashboard's page asks for tap as the viz API's PathTap; the
// dashboard asks the tap API with the user's credentials, streams the
// answer as it comes, and turns refusals into the viz API's Error, which
// the page shows.
func TestVizDashboardTap(t *testing.T) {
	api := newTapStandIn(t)
	next := make(chan struct{})
	api.HandleFunc("GET "+webTapPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+standInToken || r.URL.RawQuery != "method=GET" {
			http.Error(w, "want the kubeconfig's token and the filters only", http.StatusBadRequest)
			return
		}
		w.Write([]byte(`{"type":"request","id":"1"}` + "\n"))
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		w.Write([]byte(`{"type":"response","id":"1"}` + "\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	api.Handle("GET /apis/tap.mesh.dev/v1alpha1/watch/namespaces/shop/pods/web-1/tap", kubeStatus(http.StatusForbidden, "nope"))
	r := startTap(t, api, "viz", "dashboard", "--port", "0", "--no-browser")
	base := dashboardURL(t, r)
	c := httpClient(t)

	resp, err := c.Get(base + vizv1.PathTap + "?namespace=shop&resource=deploy/web&method=GET")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	if first, err := lines.ReadString('\n'); err != nil || !strings.Contains(first, `"request"`) {
		t.Fatalf("first line %q, %v; want the request, before the second is sent", first, err)
	}
	close(next)
	if second, err := lines.ReadString('\n'); err != nil || !strings.Contains(second, `"response"`) {
		t.Fatalf("second line %q, %v; want the response", second, err)
	}

	for _, tc := range []struct {
		query string
		code  int
		msg   string
	}{
		{"?namespace=shop&resource=pod/web-1", http.StatusForbidden, "nope: tapping needs the watch verb"},
		{"?resource=deploy/web", http.StatusBadRequest, "namespace is required for resource deploy/web"},
		{"?namespace=shop&resource=svc/web", http.StatusBadRequest, `kind "svc" is not one of`},
		{"?namespace=shop&resource=deploy/web&kind=x", http.StatusBadRequest, `unknown parameter "kind"`},
	} {
		resp, body := get(t, c, base+vizv1.PathTap+tc.query)
		var e vizv1.Error
		if resp.StatusCode != tc.code || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, tc.msg) {
			t.Errorf("GET %s = %d %s, want %d and an Error with %q", tc.query, resp.StatusCode, body, tc.code, tc.msg)
		}
	}
}

// Without a cluster for tap, the rest of the dashboard still works, and
// the page is told why tap does not.
func TestVizDashboardTapWithoutCluster(t *testing.T) {
	api := newVizStandIn(t)
	r := startViz(t, api, "viz", "dashboard", "--port", "0", "--no-browser")
	resp, body := get(t, httpClient(t), dashboardURL(t, r)+vizv1.PathTap+"?namespace=shop&resource=deploy/web")
	var e vizv1.Error
	if resp.StatusCode != http.StatusBadGateway || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, "cannot reach the tap API: no cluster configured") {
		t.Errorf("GET %s = %d %s, want 502 and why", vizv1.PathTap, resp.StatusCode, body)
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
	api := newTapStandIn(t)
	api.Handle("GET /apis/tap.mesh.dev/v1alpha1/watch/namespaces/shop/tap", streamLines(tapLines(t)))
	r := startTap(t, api, "viz", "top", "-n", "shop")
	// The busiest first; ties by source. Paths lose their query.
	frame := "" +
		"SOURCE    DESTINATION  METHOD  PATH         COUNT  BEST   WORST  LAST   SUCCESS\n" +
		"10.0.0.9  web-1        GET     /api/items   1      20ms   20ms   20ms   0.00%\n" +
		`web-1     deploy/db    POST    "/q\x1b[2J"  1      0.4ms  0.4ms  0.4ms  100.00%` + "\n"
	r.waitOut(t, func(s string) bool { return strings.Contains(s, frame) })
	if err := r.stop(t); err != nil {
		t.Errorf("interrupted top returned %v, want nil", err)
	}
	if got := api.requests()[0]; got.Path != "/apis/tap.mesh.dev/v1alpha1/watch/namespaces/shop/tap" || got.RawQuery != "" {
		t.Errorf("request %s, want the whole namespace's tap", got)
	}
	if !strings.Contains(r.errOut.String(), "tap: proxy web-2: no tap server") {
		t.Errorf("stderr = %q, want the error event", r.errOut.String())
	}
}

func TestVizTopEnds(t *testing.T) {
	api := newTapStandIn(t)
	api.Handle("GET "+webTapPath, kubeStatus(http.StatusForbidden, "no"))
	err := startTap(t, api, "viz", "top", "deploy/web", "-n", "shop").wait(t)
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
