package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/install/cni"
	"github.com/mesh-dev/mesh/install/cni/interception"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/proxy/origdst"
	"github.com/mesh-dev/mesh/test/netnstest"
)

// cniPrevResult is what the bridge plugin before mesh-cni in the chain
// hands on.
const cniPrevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],` +
	`"ips":[{"interface":0,"address":"10.244.0.7/24","gateway":"10.244.0.1"}],"dns":{"nameservers":["10.96.0.10"]}}`

// fakeAPIServer is a FAKE Kubernetes API server: this suite has no real
// kube-apiserver (the local cluster belongs to the end-to-end tier), and
// the plugin makes exactly one request, GET of one pod, so an httptest
// TLS server that answers that request for the pods it holds, and 404 with a
// Status otherwise, is all the plugin can tell apart.
type fakeAPIServer struct {
	*httptest.Server
	requests atomic.Int64
}

// newFakeAPIServer serves pods on ln, or on loopback when ln is nil.
func newFakeAPIServer(t testing.TB, ln net.Listener, pods ...*corev1.Pod) *fakeAPIServer {
	t.Helper()
	f := &fakeAPIServer{}
	byPath := map[string]*corev1.Pod{}
	for _, p := range pods {
		p.APIVersion, p.Kind = "v1", "Pod"
		byPath["/api/v1/namespaces/"+p.Namespace+"/pods/"+p.Name] = p
	}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		if r.Header.Get("Authorization") != "Bearer cni-token" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		pod, ok := byPath[r.URL.Path]
		if r.Method != http.MethodGet || !ok {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(metav1.Status{
				TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
				Status:   metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound,
			})
			return
		}
		json.NewEncoder(w).Encode(pod)
	}))
	if ln != nil {
		f.Listener.Close()
		f.Listener = ln
	}
	f.StartTLS()
	t.Cleanup(f.Close)
	return f
}

// cniRun runs the plugin binary as containerd runs a chained plugin: the
// CNI_* environment, the network configuration with prevResult on stdin,
// the result or a CNI error on stdout.
func cniRun(t testing.TB, bin, command, netns, podArgs string, conf []byte) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = []string{
		"CNI_COMMAND=" + command, "CNI_CONTAINERID=0123456789abcdef", "CNI_NETNS=" + netns,
		"CNI_IFNAME=eth0", "CNI_PATH=" + filepath.Dir(bin),
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=" + podArgs + ";K8S_POD_UID=u1",
		"PATH=" + os.Getenv("PATH"),
	}
	cmd.Stdin = bytes.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("mesh-cni %s for pod %s took %v", command, podArgs, time.Since(start).Round(time.Millisecond))
	if err != nil {
		return stdout.String(), fmt.Errorf("mesh-cni %s: %w\nstdout: %s\nstderr: %s", command, err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// TestCNIPlugin runs the real mesh-cni binary against real network
// namespaces and iptables: a pod that is not meshed keeps its network as
// it is, a meshed one gets mesh-proxy init's rules, once however often ADD
// runs, and then its application's connections reach the proxy's
// outbound port and connections to it the inbound port, while the proxy's
// own connections leave as they are.
func TestCNIPlugin(t *testing.T) {
	lab := netnstest.New(t)
	netnstestRequire(t, "iptables", "iptables-save", "setpriv", "curl")
	bin := buildCNI(t)
	meshed := meshedCNIPod()
	plain := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "plain"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web"}}},
	}
	api := newFakeAPIServer(t, nil, meshed, plain)
	kubeconfig := filepath.Join(t.TempDir(), "mesh-cni.kubeconfig")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})
	kc, err := cni.Kubeconfig{Server: api.URL, CA: ca, Token: "cni-token"}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := []byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"mesh-cni","kubeconfig":"` + kubeconfig +
		`","prevResult":` + cniPrevResult + `}`)

	app, server := lab.Pod("cniapp"), lab.Pod("cnisrv")
	checkPassThrough := func(t *testing.T, out string) {
		t.Helper()
		var want, got any
		json.Unmarshal([]byte(cniPrevResult), &want)
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("result %q: %v", out, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("result (-prevResult +got):\n%s", diff)
		}
	}

	if !t.Run("a pod that is not meshed keeps its network", func(t *testing.T) {
		out, err := cniRun(t, bin, "ADD", app.NSPath(), "plain", conf)
		if err != nil {
			t.Fatal(err)
		}
		checkPassThrough(t, out)
		if rules := natRules(t, app); strings.Contains(rules, "MESH_PROXY") {
			t.Errorf("rules installed in a pod that is not meshed:\n%s", rules)
		}
		if api.requests.Load() != 1 {
			t.Errorf("%d API requests, want 1", api.requests.Load())
		}
	}) {
		return
	}

	if !t.Run("a meshed pod gets the rules once however often ADD runs", func(t *testing.T) {
		for range 2 {
			out, err := cniRun(t, bin, "ADD", app.NSPath(), "web-1", conf)
			if err != nil {
				t.Fatal(err)
			}
			checkPassThrough(t, out)
		}
		rules := natRules(t, app)
		for _, want := range []string{
			"-A PREROUTING -p tcp -j MESH_PROXY_INBOUND",
			"-A OUTPUT -p tcp -j MESH_PROXY_OUTPUT",
			"-A MESH_PROXY_INBOUND -p tcp -m tcp --dport 9090 -j RETURN",
			"-A MESH_PROXY_INBOUND -p tcp -j REDIRECT --to-ports 4143",
			"-A MESH_PROXY_OUTPUT -m owner --uid-owner 2102 -j RETURN",
			"-A MESH_PROXY_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
		} {
			if n := strings.Count(rules, want+"\n"); n != 1 {
				t.Errorf("rule %q appears %d times, want once:\n%s", want, n, rules)
			}
		}
		if _, err := exec.LookPath("ip6tables-save"); err == nil {
			if rules6 := app.Run(t, "ip6tables-save", "-t", "nat"); !strings.Contains(rules6, "-A OUTPUT -p tcp -j MESH_PROXY_OUTPUT") {
				t.Errorf("no IPv6 rules:\n%s", rules6)
			}
		}
		if _, err := cniRun(t, bin, "CHECK", app.NSPath(), "web-1", conf); err != nil {
			t.Errorf("CHECK after ADD: %v", err)
		}
	}) {
		return
	}

	if !t.Run("traffic is redirected to the proxy's ports", func(t *testing.T) {
		serverLn, err := server.Listen(":8080")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, "the server itself")
		})}
		go srv.Serve(serverLn)
		t.Cleanup(func() { srv.Close() })
		outbound := fakeProxyPort(t, app, 4140)
		inbound := fakeProxyPort(t, app, 4143)

		// The application (root, not the proxy's UID) dials the server:
		// the proxy's outbound port answers, knowing where it was going.
		target := net.JoinHostPort(server.IP.String(), "8080")
		if got := dialAndRead(t, app, target); got != "port 4140, original destination "+target {
			t.Errorf("the application's connection reached %q, want the outbound port", got)
		}
		// The proxy's own connections leave as they are.
		out, err := app.CommandAs(context.Background(), proxyUID, "curl", "-sS", "--max-time", "10", "http://"+target+"/").CombinedOutput()
		if err != nil || string(out) != "the server itself" {
			t.Errorf("curl as the proxy's UID: %v: %q, want the server's answer", err, out)
		}
		// Connections to the pod arrive at the inbound port.
		appTarget := net.JoinHostPort(app.IP.String(), "8080")
		if got := dialAndRead(t, server, appTarget); got != "port 4143, original destination "+appTarget {
			t.Errorf("a connection to the pod reached %q, want the inbound port", got)
		}
		if outbound.Load() != 1 || inbound.Load() != 1 {
			t.Errorf("the proxy's ports took %d outbound and %d inbound connections, want 1 and 1", outbound.Load(), inbound.Load())
		}
	}) {
		return
	}

	t.Run("CHECK finds missing rules", func(t *testing.T) {
		app.Run(t, "iptables", "-w", "-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-j", "MESH_PROXY_OUTPUT")
		_, err := cniRun(t, bin, "CHECK", app.NSPath(), "web-1", conf)
		if err == nil || !strings.Contains(err.Error(), "delete the pod") {
			t.Errorf("CHECK without the OUTPUT jump: %v, want an error saying to delete the pod", err)
		}
	})

	t.Run("iptablesMode legacy programs the legacy backend", func(t *testing.T) {
		netnstestRequire(t, "iptables-legacy-save", "iptables-legacy-restore")
		legacyPod := lab.Pod("cnilegacy")
		legacy := []byte(strings.Replace(string(conf), `"type":"mesh-cni",`, `"type":"mesh-cni","iptablesMode":"legacy",`, 1))
		if _, err := cniRun(t, bin, "ADD", legacyPod.NSPath(), "web-1", legacy); err != nil {
			t.Fatal(err)
		}
		if rules := legacyPod.Run(t, "iptables-legacy-save", "-t", "nat"); !strings.Contains(rules, "-A OUTPUT -p tcp -j MESH_PROXY_OUTPUT") {
			t.Errorf("the legacy nat table lacks the jump:\n%s", rules)
		}
		if _, err := cniRun(t, bin, "CHECK", legacyPod.NSPath(), "web-1", legacy); err != nil {
			t.Errorf("CHECK in legacy mode: %v", err)
		}
	})

	t.Run("DEL succeeds", func(t *testing.T) {
		if _, err := cniRun(t, bin, "DEL", app.NSPath(), "web-1", conf); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a meshed pod fails when the API server is down", func(t *testing.T) {
		down := []byte(strings.Replace(string(conf), kubeconfig, kubeconfig+".down", 1))
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close() // its port now refuses connections
		kc, err := cni.Kubeconfig{Server: dead.URL, CA: ca, Token: "cni-token"}.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(kubeconfig+".down", kc, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := cniRun(t, bin, "ADD", server.NSPath(), "web-1", down)
		if err == nil {
			t.Fatalf("ADD succeeded without the API server: %s", out)
		}
		var cniErr struct {
			Code uint   `json:"code"`
			Msg  string `json:"msg"`
		}
		if json.Unmarshal([]byte(out), &cniErr) != nil || cniErr.Code == 0 || !strings.Contains(cniErr.Msg, "kubelet retries") {
			t.Errorf("want a CNI error saying kubelet retries, got %v", err)
		}
		if rules := natRules(t, server); strings.Contains(rules, "MESH_PROXY") {
			t.Errorf("rules installed after a failure:\n%s", rules)
		}
	})
}

// buildCNI builds mesh-cni from this tree.
func buildCNI(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), cni.PluginType)
	build := exec.Command("go", "build", "-o", bin, "github.com/mesh-dev/mesh/cmd/mesh-cni")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building mesh-cni: %v\n%s", err, out)
	}
	return bin
}

// meshedCNIPod is shop/web-1 as the injector leaves it in CNI mode.
func meshedCNIPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1",
			Annotations: map[string]string{interception.Annotation: `{"skipInboundPorts":"9090"}`}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: names.ProxyContainerName}},
			Containers:     []corev1.Container{{Name: "web"}},
		},
	}
}

// fakeProxyPort listens in pod on port as the proxy does, and answers each
// connection with the port and the connection's original destination.
// It counts the connections.
func fakeProxyPort(t testing.TB, pod *netnstest.Pod, port int) *atomic.Int64 {
	t.Helper()
	ln, err := pod.Listen(fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			dst, err := origdst.Lookup(c.(*net.TCPConn))
			if err != nil {
				fmt.Fprintf(c, "port %d, %v\n", port, err)
			} else {
				fmt.Fprintf(c, "port %d, original destination %s\n", port, dst)
			}
			c.Close()
		}
	}()
	return &n
}

// dialAndRead connects from pod to addr and returns the first line it reads.
func dialAndRead(t testing.TB, pod *netnstest.Pod, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pod.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dialing %s from pod %s: %v", addr, pod.Name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading from %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}
