package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/install/manifests"
)

// The namespaces of TestTap: a meshed echo with load, and an unmeshed pod
// that plays the attacker of issue 12, who tapped every workload through
// the controller.
const (
	tapNS         = "e2e-tap"
	tapOutsiderNS = "e2e-tap-outsider"
)

// viewerUser is viewerKubeconfig's user, as the API server names it.
const viewerUser = "system:serviceaccount:default:mesh-e2e-viewer"

// TestTap checks that tap answers only those the cluster's RBAC lets tap
// (issue 12): through the Kubernetes API server (APIService
// v1alpha1.tap.mesh.dev), an admin taps; a user with the "view" role is
// refused with who lacks which permission and how to grant it; the
// command of that message grants it for one namespace only; and a pod
// calling mesh-viz's tap port itself, without the API server's
// front-proxy certificate, gets 401 whatever user headers it forges.
func TestTap(t *testing.T) {
	needEnv(t)
	t.Parallel() // alongside the other tests that leave the mesh as they found it (main_test.go)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	outsider := demoApp{ns: tapOutsiderNS, name: "outsider", args: []string{"echo", "--admin-addr", ""}}
	mustRun(t, ctx, []byte(namespaceManifest(tapNS)+"---\n"+echoManifestIn(tapNS, "echo", "echo", 1)+"---\n"+
		plainNamespaceManifest(tapOutsiderNS)+"---\n"+outsider.manifest()), e2e.kubectl, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, tapNS)
		deleteNamespace(t, ctx, tapOutsiderNS)
	})
	waitDeployments(t, ctx, tapNS, 3*time.Minute)
	waitDeployments(t, ctx, tapOutsiderNS, 3*time.Minute)
	startLoadIn(t, ctx, tapNS, loadJobIn(tapNS, "tap-load", "echo", "/", "", 20, 8*time.Minute, -1), "tap-load", true)
	mustRun(t, ctx, nil, e2e.kubectl, "wait", "--for=condition=Available", "--timeout=3m", "apiservice/"+manifests.TapAPIServiceName)

	t.Run("discovery lists tap.mesh.dev", func(t *testing.T) { testTapDiscovery(t, ctx) })
	t.Run("an admin taps", func(t *testing.T) {
		evs, err := tapEvents(ctx, e2e.kubeconfig, 5, "deploy/echo", "-n", tapNS)
		if err != nil {
			t.Fatal(err)
		}
		checkEchoEvents(t, evs)
	})
	viewer := viewerKubeconfig(t, ctx)
	t.Run("a user without the permission is refused", func(t *testing.T) { testTapRefused(t, ctx, viewer) })
	t.Run("mesh-viz checks the user again", func(t *testing.T) { testTapReviewed(t, ctx, viewer) })
	t.Run("the grant of the message taps one namespace", func(t *testing.T) { testTapGranted(t, ctx, viewer) })
	t.Run("no pod reaches tap without the API server", func(t *testing.T) { testTapOutOfReach(t, ctx) })
}

// testTapDiscovery: the group is in discovery with its resources, and
// kubectl finds nothing missing (an APIService that does not answer makes
// every kubectl command warn).
func testTapDiscovery(t *testing.T, ctx context.Context) {
	r := mustRun(t, ctx, nil, e2e.kubectl, "api-resources", "--api-group=tap.mesh.dev", "-o", "name")
	if !strings.Contains(r.stdout, "deployments.tap.mesh.dev") || !strings.Contains(r.stdout, "namespaces.tap.mesh.dev") {
		t.Errorf("kubectl api-resources --api-group=tap.mesh.dev printed %q, want deployments and namespaces", r.stdout)
	}
	if strings.Contains(r.stderr, "unable to retrieve") {
		t.Errorf("kubectl's discovery is incomplete: %s", r.stderr)
	}
}

// tapEvents runs mesh viz tap with the kubeconfig and args (-o json), and
// returns its first n request events, or why it ended before.
func tapEvents(ctx context.Context, kubeconfig string, n int, args ...string) ([]vizv1.TapEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2e.mesh, append(append([]string{"viz", "tap"}, args...), "-o", "json")...)
	cmd.Env = append(cmd.Environ(), "KUBECONFIG="+kubeconfig)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()
	var evs []vizv1.TapEvent
	sc := bufio.NewScanner(out)
	for len(evs) < n && sc.Scan() {
		var ev vizv1.TapEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("tap printed %q: %v", sc.Text(), err)
		}
		if ev.Type == "request" {
			evs = append(evs, ev)
		}
	}
	if len(evs) < n {
		return evs, fmt.Errorf("mesh viz tap %s ended after %d request events, want %d: %v\nstderr: %s",
			strings.Join(args, " "), len(evs), n, sc.Err(), stderr.String())
	}
	return evs, nil
}

// checkEchoEvents: the events are the load's requests as echo's proxy
// saw them.
func checkEchoEvents(t *testing.T, evs []vizv1.TapEvent) {
	t.Helper()
	for _, ev := range evs {
		if ev.Namespace != tapNS || !strings.HasPrefix(ev.Pod, "echo-") || ev.Method != "GET" || ev.Direction != "inbound" {
			t.Errorf("event %+v, want GET inbound at an echo pod of %s", ev, tapNS)
		}
	}
}

// tapRefusal runs mesh viz tap, which must fail, and returns what it
// printed to stderr.
func tapRefusal(t *testing.T, ctx context.Context, kubeconfig string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	r := command(ctx, nil, []string{"KUBECONFIG=" + kubeconfig}, e2e.mesh, append([]string{"viz", "tap"}, args...)...)
	if r.err == nil || ctx.Err() != nil {
		t.Fatalf("mesh viz tap %s: %v, want a refusal and a non-zero exit\nstdout:\n%s", strings.Join(args, " "), r.err, r.stdout)
	}
	t.Logf("mesh viz tap %s as %s: %s", strings.Join(args, " "), viewerUser, strings.TrimSpace(r.stderr))
	return r.stderr
}

// testTapRefused: the API server refuses a user of the "view" role; the
// CLI prints who, which verb on what, and how to grant it.
func testTapRefused(t *testing.T, ctx context.Context, viewer string) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"deploy/echo", "-n", tapNS}, []string{
			`"` + viewerUser + `" cannot watch resource "deployments/tap" in API group "tap.mesh.dev" in the namespace "` + tapNS + `"`,
			"kubectl create rolebinding NAME -n " + tapNS + " --clusterrole=mesh-tap", "HTTP 403",
		}},
		{[]string{"ns/" + tapNS}, []string{
			`"` + viewerUser + `" cannot watch resource "tap" in API group "tap.mesh.dev"`, "--clusterrole=mesh-tap",
		}},
	} {
		stderr := tapRefusal(t, ctx, viewer, tc.args...)
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("mesh viz tap %s printed %q\nwant it to contain %q", strings.Join(tc.args, " "), stderr, w)
			}
		}
	}
}

// testTapReviewed: a Role that passes the API server's check of the path
// of a namespace's tap (resource "tap") but grants no namespaces/tap is
// refused by mesh-viz's own SubjectAccessReview, whose message names the
// command that grants the rest.
func testTapReviewed(t *testing.T, ctx context.Context, viewer string) {
	// Applied, not `kubectl create role`, which looks resources up in
	// discovery, where no "tap" is listed.
	role := fmt.Sprintf("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: tap-path-only, namespace: %s}\n"+
		"rules: [{apiGroups: [tap.mesh.dev], resources: [tap], verbs: [watch]}]\n", tapNS)
	mustRun(t, ctx, []byte(role), e2e.kubectl, "apply", "-f", "-")
	mustRun(t, ctx, nil, e2e.kubectl, "create", "rolebinding", "tap-path-only", "-n", tapNS,
		"--role=tap-path-only", "--serviceaccount=default:mesh-e2e-viewer")
	defer command(context.WithoutCancel(ctx), nil, nil, e2e.kubectl, "delete", "-n", tapNS, "rolebinding/tap-path-only", "role/tap-path-only")
	// RBAC takes effect within moments, not at once: until the API
	// server's authorizer sees the binding, it refuses the path itself.
	var stderr string
	poll(t, ctx, time.Minute, "the API server to let the path through to mesh-viz", func(ctx context.Context) (bool, string, error) {
		stderr = tapRefusal(t, ctx, viewer, "ns/"+tapNS)
		return !strings.Contains(stderr, "cannot watch resource"), "the API server still refuses the path", nil
	})
	for _, w := range []string{
		`user "` + viewerUser + `" may not tap namespaces/` + tapNS,
		`it needs the "watch" verb on "namespaces/tap" in group tap.mesh.dev`,
		"kubectl create rolebinding mesh-tap-default-mesh-e2e-viewer -n " + tapNS + " --clusterrole=mesh-tap --serviceaccount=default:mesh-e2e-viewer",
	} {
		if !strings.Contains(stderr, w) {
			t.Errorf("mesh viz tap ns/%s printed %q\nwant it to contain %q", tapNS, stderr, w)
		}
	}
}

// testTapGranted runs the command the refusal prints; then the user taps
// that namespace, and still no other.
func testTapGranted(t *testing.T, ctx context.Context, viewer string) {
	mustRun(t, ctx, nil, e2e.kubectl, "create", "rolebinding", "mesh-tap-default-mesh-e2e-viewer", "-n", tapNS,
		"--clusterrole=mesh-tap", "--serviceaccount=default:mesh-e2e-viewer")
	var evs []vizv1.TapEvent
	// RBAC takes effect within moments, not at once.
	poll(t, ctx, time.Minute, "the granted user taps", func(ctx context.Context) (bool, string, error) {
		var err error
		evs, err = tapEvents(ctx, viewer, 3, "deploy/echo", "-n", tapNS)
		return err == nil, fmt.Sprint(err), nil
	})
	checkEchoEvents(t, evs)
	if _, err := tapEvents(ctx, viewer, 1, "ns/"+tapNS); err != nil {
		t.Errorf("the granted user's tap of namespace %s: %v", tapNS, err)
	}
	stderr := tapRefusal(t, ctx, viewer, "deploy/outsider", "-n", tapOutsiderNS)
	if !strings.Contains(stderr, `cannot watch resource "deployments/tap" in API group "tap.mesh.dev" in the namespace "`+tapOutsiderNS+`"`) {
		t.Errorf("tap of another namespace printed %q, want the API server's refusal", stderr)
	}
}

// testTapOutOfReach: from an unmeshed pod of another namespace, mesh-viz's
// tap port and its Service answer 401 to a request without a client
// certificate, and to one with a forged front-proxy certificate, whatever
// user headers they carry; nothing is tapped.
func testTapOutOfReach(t *testing.T, ctx context.Context) {
	outsider := newPodClient(t, ctx, tapOutsiderNS, "outsider")
	vizPod := runningPods(t, ctx, manifests.DefaultNamespace, manifests.NameLabel+"=mesh-viz")[0]
	svc, err := e2e.client.CoreV1().Services(manifests.DefaultNamespace).Get(ctx, manifests.TapServiceName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	forged := forgedFrontProxyCert(t)
	path := "/apis/tap.mesh.dev/v1alpha1/watch/namespaces/" + tapNS + "/deployments/echo/tap"
	for _, addr := range []string{net.JoinHostPort(vizPod.Status.PodIP, "8089"), net.JoinHostPort(svc.Spec.ClusterIP, "443")} {
		for _, tc := range []struct {
			name string
			cert *tls.Certificate
			want string
		}{
			{"no certificate", nil, "no client certificate"},
			{"forged front-proxy certificate", &forged, "not the API server's front-proxy certificate"},
		} {
			code, body, err := outsider.tapDirect(ctx, addr, path, tc.cert)
			t.Logf("outsider -> %s, %s, as system:admin in system:masters: %d %s %v", addr, tc.name, code, strings.TrimSpace(body), err)
			if err != nil || code != http.StatusUnauthorized || !strings.Contains(body, tc.want) {
				t.Errorf("outsider -> %s with %s: %d %q %v; want 401 saying %q", addr, tc.name, code, body, err, tc.want)
			}
		}
	}
}

// tapDirect GETs path from mesh-viz's tap API at addr over TLS, not
// checking its certificate (an attacker need not), presenting cert when
// it is not nil, with the user headers the API server would set for an
// admin.
func (c *podClient) tapDirect(ctx context.Context, addr, path string, cert *tls.Certificate) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{DialContext: c.dial, TLSClientConfig: cfg, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("X-Remote-User", "system:admin")
	req.Header.Set("X-Remote-Group", "system:masters")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body), err
}

// forgedFrontProxyCert is a client certificate with the API server's
// front-proxy name, self-signed.
func forgedFrontProxyCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "front-proxy-client"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
