package cli

import (
	"bufio"
	"encoding/json"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/web/dashboard"
)

// dashboardURL waits for the dashboard to say where it serves, and
// returns that URL.
func dashboardURL(t testing.TB, r *vizRun) string {
	t.Helper()
	const prefix = "mesh viz dashboard: "
	out := r.waitOut(t, func(s string) bool { return strings.Contains(s, "\n") })
	line, _, _ := strings.Cut(out, "\n")
	u, ok := strings.CutPrefix(line, prefix)
	if !ok || !strings.HasPrefix(u, "http://127.0.0.1:") {
		t.Fatalf("first line %q, want %shttp://127.0.0.1:PORT", line, prefix)
	}
	return u
}

// httpClient is a client of its own, whose connections the test closes.
func httpClient(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func get(t testing.TB, c *http.Client, u string) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestVizDashboard(t *testing.T) {
	api := newVizStandIn(t)
	api.Handle("GET "+vizv1.PathStat, answer(http.StatusOK, statFixture))
	// The tap sends a line, then waits for the test to have read it
	// through the dashboard before it sends the next: the proxy must
	// flush each as it comes.
	next := make(chan struct{})
	api.HandleFunc("GET "+webTapPath, func(w http.ResponseWriter, r *http.Request) { // tap goes to the API server (viz_tap_test.go)
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
	r := startViz(t, api, "viz", "dashboard", "--port", "0", "--kubeconfig", standInKubeconfig(t, api))
	base := dashboardURL(t, r)
	c := httpClient(t)

	t.Run("page", func(t *testing.T) {
		want, err := fs.ReadFile(dashboard.Files(), "index.html")
		if err != nil {
			t.Fatal(err)
		}
		resp, body := get(t, c, base+"/")
		if resp.StatusCode != http.StatusOK || string(body) != string(want) {
			t.Errorf("GET / = %d, %d bytes; want 200 and index.html (%d bytes)", resp.StatusCode, len(body), len(want))
		}
	})
	t.Run("api", func(t *testing.T) {
		resp, body := get(t, c, base+vizv1.PathStat+"?kind=deploy&namespace=shop")
		var got vizv1.StatList
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil {
			t.Fatalf("GET %s = %d %s", vizv1.PathStat, resp.StatusCode, body)
		}
		if diff := cmp.Diff(statFixture, got); diff != "" {
			t.Errorf("StatList (-want +got):\n%s", diff)
		}
		var q []string
		for _, u := range api.requests() {
			if u.Path == vizv1.PathStat {
				q = append(q, u.RawQuery)
			}
		}
		if diff := cmp.Diff([]string{"kind=deploy&namespace=shop"}, q); diff != "" {
			t.Errorf("the API's stat queries (-want +got):\n%s", diff)
		}
	})
	t.Run("config without jaeger", func(t *testing.T) {
		// The stand-in API server has no Service mesh-jaeger: no link, and
		// nothing to complain about.
		resp, body := get(t, c, base+dashboardConfigPath)
		if resp.StatusCode != http.StatusOK || string(body) != "{}" {
			t.Errorf("GET %s = %d %s, want 200 {}", dashboardConfigPath, resp.StatusCode, body)
		}
		if e := r.errOut.String(); e != "" {
			t.Errorf("stderr %q, want nothing", e)
		}
	})
	t.Run("stream", func(t *testing.T) { checkDashboardStreams(t, c, base, next) })
	t.Run("refused", func(t *testing.T) { checkDashboardRefuses(t, c, base) })

	if err := r.stop(t); err != nil {
		t.Errorf("interrupted dashboard returned %v, want nil", err)
	}
	select {
	case u := <-r.opened:
		if u != base {
			t.Errorf("opened %s in a browser, want %s", u, base)
		}
	default:
		t.Errorf("the dashboard did not open a browser")
	}
	if _, err := net.Dial("tcp", strings.TrimPrefix(base, "http://")); err == nil {
		t.Errorf("the dashboard still listens after it stopped")
	}
}

// checkDashboardStreams reads the tap through the dashboard: each line
// must come through before the API sends the next, which it does when
// next is closed.
func checkDashboardStreams(t *testing.T, c *http.Client, base string, next chan struct{}) {
	t.Helper()
	resp, err := c.Get(base + vizv1.PathTap + "?namespace=shop&resource=deploy/web")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	first, err := lines.ReadString('\n')
	if err != nil || !strings.Contains(first, `"request"`) {
		t.Fatalf("first line %q, %v; want the request, before the second is sent", first, err)
	}
	close(next)
	second, err := lines.ReadString('\n')
	if err != nil || !strings.Contains(second, `"response"`) {
		t.Fatalf("second line %q, %v; want the response", second, err)
	}
}

// checkDashboardRefuses checks that the dashboard passes on reads only,
// and answers only requests addressed to itself.
func checkDashboardRefuses(t *testing.T, c *http.Client, base string) {
	t.Helper()
	resp, err := c.Post(base+vizv1.PathStat, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST %s = %d, want 405", vizv1.PathStat, resp.StatusCode)
	}
	// A page elsewhere that rebinds its name to 127.0.0.1.
	req, _ := http.NewRequest(http.MethodGet, base+vizv1.PathStat, nil)
	req.Host = "evil.example:" + base[strings.LastIndex(base, ":")+1:]
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET with Host %s = %d, want 403", req.Host, resp.StatusCode)
	}
}

// The page is told, in the API's own error body, when the controller
// cannot be reached.
func TestVizDashboardAPIDown(t *testing.T) {
	api := newVizStandIn(t)
	api.srv.Close()
	r := startViz(t, api, "viz", "dashboard", "--port", "0", "--no-browser")
	resp, body := get(t, httpClient(t), dashboardURL(t, r)+vizv1.PathEdges)
	var e vizv1.Error
	if resp.StatusCode != http.StatusBadGateway || json.Unmarshal(body, &e) != nil ||
		!strings.HasPrefix(e.Error, "mesh viz dashboard cannot reach mesh-viz's API: ") {
		t.Errorf("GET %s = %d %s, want 502 and an Error body", vizv1.PathEdges, resp.StatusCode, body)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestVizDashboardNoBrowser(t *testing.T) {
	for _, flag := range []string{"--show=false", "--no-browser"} {
		t.Run(flag, func(t *testing.T) {
			r := startViz(t, newVizStandIn(t), "viz", "dashboard", "--port", "0", flag)
			dashboardURL(t, r)
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			if len(r.opened) != 0 {
				t.Errorf("opened %s in a browser", <-r.opened)
			}
		})
	}
}

func TestVizDashboardPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	api := newVizStandIn(t)
	_, _, err = runViz(t, api, "viz", "dashboard", "--port", port)
	if want := "port " + port + " on 127.0.0.1 is in use"; err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--port") {
		t.Errorf("err = %v, want %q and a hint to pass --port", err, want)
	}
	if _, _, err := runViz(t, api, "viz", "dashboard", "--port", "70000"); err == nil || !strings.Contains(err.Error(), "--port 70000") {
		t.Errorf("err = %v, want --port 70000 refused", err)
	}
}

func TestBrowserCommand(t *testing.T) {
	env := func(vars ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(vars); i += 2 {
				if vars[i] == k {
					return vars[i+1]
				}
			}
			return ""
		}
	}
	const u = "http://127.0.0.1:50750"
	for _, tc := range []struct {
		name string
		goos string
		env  func(string) string
		want []string
	}{
		{"mac", "darwin", env(), []string{"open", u}},
		{"linux desktop", "linux", env("DISPLAY", ":0"), []string{"xdg-open", u}},
		{"wayland", "linux", env("WAYLAND_DISPLAY", "wayland-0"), []string{"xdg-open", u}},
		{"linux over ssh", "linux", env("SSH_TTY", "/dev/pts/0"), nil},
		{"windows", "windows", env(), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, browserCommand(tc.goos, tc.env, u)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestJaegerPod: the dashboard forwards to a ready pod of the Service
// mesh-jaeger of the control-plane namespace; without that Service there
// is nothing to forward to, and no error.
func TestJaegerPod(t *testing.T) {
	const ns = "mesh-system"
	selector := map[string]string{"app.kubernetes.io/name": manifests.JaegerName, "app.kubernetes.io/part-of": "mesh"}
	service := func(sel map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: manifests.JaegerName}, Spec: corev1.ServiceSpec{Selector: sel}}
	}
	pod := func(name string, ready corev1.ConditionStatus) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: selector},
			Status: corev1.PodStatus{Phase: corev1.PodRunning,
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}},
		}
	}
	for _, tc := range []struct {
		name    string
		objects []runtime.Object
		want    string
		wantErr string
	}{
		{name: "no jaeger", objects: []runtime.Object{pod("mesh-jaeger-1", corev1.ConditionTrue)}},
		{name: "ready", objects: []runtime.Object{service(selector), pod("mesh-jaeger-0", corev1.ConditionFalse), pod("mesh-jaeger-1", corev1.ConditionTrue)}, want: "mesh-jaeger-1"},
		{name: "not ready", objects: []runtime.Object{service(selector), pod("mesh-jaeger-0", corev1.ConditionFalse)}, wantErr: "no mesh-jaeger pod in namespace mesh-system is ready"},
		{name: "no selector", objects: []runtime.Object{service(nil)}, wantErr: "selects no pods"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := jaegerPod(t.Context(), &kube{client: fake.NewClientset(tc.objects...)}, ns)
			if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("jaegerPod = %q, %v; want %q and an error with %q", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestDashboardConfig: the page learns Jaeger's local URL, or that there
// is none, from the dashboard itself, under the same guard as the API.
func TestDashboardConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  dashboardConfig
		want string
	}{
		{"jaeger", dashboardConfig{JaegerURL: "http://127.0.0.1:41234"}, `{"jaegerUrl":"http://127.0.0.1:41234"}`},
		{"no jaeger", dashboardConfig{}, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const addr = "127.0.0.1:50750"
			h := dashboardHandler(dashboard.Files(), addr, dashboardBackends{config: tc.cfg})
			for _, host := range []string{addr, "localhost:50750"} {
				req := httptest.NewRequest(http.MethodGet, "http://"+host+dashboardConfigPath, nil)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK || rec.Body.String() != tc.want || rec.Header().Get("Content-Type") != "application/json" {
					t.Errorf("GET %s from %s = %d %q (%s), want 200 %s", dashboardConfigPath, host, rec.Code, rec.Body, rec.Header().Get("Content-Type"), tc.want)
				}
			}
			req := httptest.NewRequest(http.MethodGet, "http://evil.example:50750"+dashboardConfigPath, nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusForbidden {
				t.Errorf("GET %s with Host evil.example = %d, want 403", dashboardConfigPath, rec.Code)
			}
		})
	}
}
