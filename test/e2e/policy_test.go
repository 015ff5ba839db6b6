package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

// The namespaces of TestPolicy: the meshed one with the servers and
// clients, one outside the mesh, and two meshed ones whose default inbound
// policy is deny and audit.
const (
	policyNS      = "e2e-policy"
	policyPlainNS = "e2e-policy-plain"
	policyDenyNS  = "e2e-policy-deny"
	policyAuditNS = "e2e-policy-audit"
)

// The proxy metrics of authorization decisions, by Server, policy, client
// identity and decision (allow, deny, audit).
const (
	httpAuthzMetric   = "mesh_proxy_inbound_http_authz_total"
	tcpAuthzMetric    = "mesh_proxy_inbound_tcp_authz_total"
	policyReadyMetric = "mesh_proxy_inbound_policy_ready"
	// discoveryUnavailableMetric counts outbound requests (protocol=http)
	// and connections (tcp) failed because the controller could not say
	// whether their destination is meshed.
	discoveryUnavailableMetric = "mesh_proxy_outbound_discovery_unavailable_total"
)

var (
	clientID = "spiffe://cluster.local/ns/" + policyNS + "/sa/client"
	otherID  = "spiffe://cluster.local/ns/" + policyNS + "/sa/other"
)

// policyEnv is what the checks of TestPolicy share: the clients, and the
// servers' Service addresses and pods.
type policyEnv struct {
	// client has ServiceAccount client, which the policies allow; other
	// has ServiceAccount other, which they do not; outsider is outside the
	// mesh; denyClient is in the deny namespace, allowed on locked.
	// newcomer has ServiceAccount client and sends nothing until the
	// controller is down.
	client, other, outsider, denyClient, newcomer *podClient
	// ClusterIP:port of each Service.
	echo, payments, catalog, locked, closed, audited, watched string
	pods                                                      map[string]*corev1.Pod // the server pods, by app
}

// TestPolicy is issue 11's "tests that must pass" 1-7 on the real cluster:
// Servers, MeshTLSAuthentications and AuthorizationPolicies enforced by
// the proxies on HTTP, opaque TCP and gRPC ports; deny and audit as
// namespace defaults; a policy change under load; a client whose
// controller is gone; and bad objects refused by the API server.
//
// Every workload is created up front and waited for once. The clients are
// real ones (net/http, grpc-go, the payments line protocol) in the test
// process, whose sockets are opened inside a client pod's network
// namespace (see podClient): from a meshed pod they go through its proxy
// with its identity, from an unmeshed one in plain text.
//
// Checks that touch distinct objects run in parallel; the policy change
// and the controller's absence run last, alone, the latter because it
// stops the controller every other test relies on.
func TestPolicy(t *testing.T) {
	needEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	e := setupPolicy(t, ctx)

	t.Run("isolated", func(t *testing.T) {
		t.Run("1 HTTP and opaque TCP: only the allowed ServiceAccount reaches the app", func(t *testing.T) {
			t.Parallel()
			testPolicyHTTP(t, ctx, e)
			testPolicyOpaque(t, ctx, e)
		})
		t.Run("1b by pod IP, as through a headless Service: the allowed client is still authenticated", func(t *testing.T) {
			t.Parallel()
			testPolicyPodIP(t, ctx, e)
		})
		t.Run("2 gRPC: the denied client gets PERMISSION_DENIED", func(t *testing.T) {
			t.Parallel()
			testPolicyGRPC(t, ctx, e)
		})
		t.Run("3 deny as the namespace default: probes pass, unmatched traffic refused", func(t *testing.T) {
			t.Parallel()
			testPolicyDeny(t, ctx, e)
		})
		t.Run("4 audit: everything passes, would-be denials counted and logged", func(t *testing.T) {
			t.Parallel()
			testPolicyAudit(t, ctx, e)
		})
	})
	// 7 before 5: it needs echo-clients to hold only ServiceAccount
	// client, which 5 changes.
	t.Run("7 bad objects are refused naming the field; the last good policy stays", func(t *testing.T) {
		testPolicyBadObjects(t, ctx, e)
	})
	t.Run("5 a ServiceAccount added under load gets through within 2s", func(t *testing.T) {
		testPolicyChangeUnderLoad(t, ctx, e)
	})
	t.Run("6 controller down: a new client's first request fails fast, never in plain text", func(t *testing.T) {
		testPolicyControllerDown(t, ctx, e)
	})
}

// setupPolicy creates the namespaces, the policy of testdata/policy.yaml
// and the workloads, waits for them, and waits until every server's proxy
// has its policy.
func setupPolicy(t *testing.T, ctx context.Context) *policyEnv {
	t.Helper()
	echo := func(ns, name string, more ...string) demoApp {
		return demoApp{ns: ns, name: name, args: append([]string{"echo"}, more...), port: 8080, portName: "http"}
	}
	client := func(ns, name, sa string) demoApp {
		return demoApp{ns: ns, name: name, sa: sa, args: []string{"echo", "--admin-addr", ""}}
	}
	locked := echo(policyDenyNS, "locked")
	locked.liveness = true // on port 8080, which only deny-client may reach
	audited := echo(policyDenyNS, "audited")
	audited.annotations = map[string]string{names.AnnotationDefaultInboundPolicy: names.PolicyAudit}
	apps := []demoApp{
		echo(policyNS, "echo"),
		{ns: policyNS, name: "payments", args: []string{"payments"}, port: 7070, portName: "pay"},
		{ns: policyNS, name: "catalog", args: []string{"catalog"}, port: 9090, portName: "grpc"},
		client(policyNS, "client", "client"),
		client(policyNS, "other", "other"),
		client(policyNS, "newcomer", "client"),
		client(policyPlainNS, "outsider", ""),
		locked,
		echo(policyDenyNS, "closed"),
		audited,
		client(policyDenyNS, "deny-client", "deny-client"),
		echo(policyAuditNS, "watched"),
	}
	parts := []string{
		namespaceManifest(policyNS),
		plainNamespaceManifest(policyPlainNS),
		policyNamespaceManifest(policyDenyNS, names.PolicyDeny),
		policyNamespaceManifest(policyAuditNS, names.PolicyAudit),
		strings.TrimSuffix(serviceAccount(policyNS, "client")+serviceAccount(policyNS, "other")+
			serviceAccount(policyDenyNS, "deny-client"), "---\n"),
		policyFixture(t),
	}
	for _, a := range apps {
		parts = append(parts, a.manifest())
	}
	namespaces := []string{policyNS, policyPlainNS, policyDenyNS, policyAuditNS}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		for _, ns := range namespaces { // all at once, then wait for each
			e2e.client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		}
		for _, ns := range namespaces {
			deleteNamespace(t, ctx, ns)
		}
	})
	mustRun(t, ctx, []byte(strings.Join(parts, "---\n")), e2e.kubectl, "apply", "-f", "-")
	start := time.Now()
	for _, ns := range namespaces {
		waitDeployments(t, ctx, ns, 4*time.Minute)
	}
	t.Logf("%d deployments available after %s", len(apps), time.Since(start).Round(time.Second))

	e := &policyEnv{
		client:     newPodClient(t, ctx, policyNS, "client"),
		other:      newPodClient(t, ctx, policyNS, "other"),
		newcomer:   newPodClient(t, ctx, policyNS, "newcomer"),
		outsider:   newPodClient(t, ctx, policyPlainNS, "outsider"),
		denyClient: newPodClient(t, ctx, policyDenyNS, "deny-client"),
		echo:       serviceAddr(t, ctx, policyNS, "echo"),
		payments:   serviceAddr(t, ctx, policyNS, "payments"),
		catalog:    serviceAddr(t, ctx, policyNS, "catalog"),
		locked:     serviceAddr(t, ctx, policyDenyNS, "locked"),
		closed:     serviceAddr(t, ctx, policyDenyNS, "closed"),
		audited:    serviceAddr(t, ctx, policyDenyNS, "audited"),
		watched:    serviceAddr(t, ctx, policyAuditNS, "watched"),
		pods:       map[string]*corev1.Pod{},
	}
	for _, a := range apps {
		if a.port == 0 {
			continue
		}
		pod := runningPods(t, ctx, a.ns, "app="+a.name)[0]
		e.pods[a.name] = &pod
		poll(t, ctx, time.Minute, "the proxy of "+pod.Name+" has its policy", func(ctx context.Context) (bool, string, error) {
			m, err := scrape(ctx, &pod)
			if err != nil {
				return false, err.Error(), nil
			}
			v := m.Sum(policyReadyMetric)
			return v >= 1, fmt.Sprintf("%s = %v", policyReadyMetric, v), nil
		})
	}
	return e
}

// wantApp polls until c gets the app's own answer from addr: a fresh
// client proxy may first have to learn the destination.
func wantApp(t *testing.T, ctx context.Context, c *podClient, addr, host, path string) {
	t.Helper()
	var last answer
	poll(t, ctx, 30*time.Second, fmt.Sprintf("%s gets echo's answer from %s%s", c.pod.Name, host, path), func(ctx context.Context) (bool, string, error) {
		last = c.get(ctx, addr, host, path)
		return last.fromApp(), last.String(), nil
	})
	t.Logf("%s -> %s%s: %s", c.pod.Name, host, path, last)
}

// wantForbidden checks that c, a meshed client, gets 403 from the server's
// proxy and nothing of the app.
func wantForbidden(t *testing.T, ctx context.Context, c *podClient, addr, host, path string) {
	t.Helper()
	a := c.get(ctx, addr, host, path)
	t.Logf("%s -> %s%s: %s", c.pod.Name, host, path, a)
	if a.err != nil || a.status != http.StatusForbidden || strings.Contains(a.body, "echo from") {
		t.Errorf("%s -> %s%s: %s, want 403 from the server's proxy", c.pod.Name, host, path, a)
	}
}

// wantNoApp checks that c, outside the mesh, gets 403 or a closed
// connection: never the app's answer.
func wantNoApp(t *testing.T, ctx context.Context, c *podClient, addr, host, path string) {
	t.Helper()
	a := c.get(ctx, addr, host, path)
	t.Logf("%s (unmeshed) -> %s%s: %s", c.pod.Name, host, path, a)
	if a.err == nil && (a.status != http.StatusForbidden || strings.Contains(a.body, "echo from")) {
		t.Errorf("%s (unmeshed) -> %s%s: %s, want 403 or a closed connection", c.pod.Name, host, path, a)
	}
}

func testPolicyHTTP(t *testing.T, ctx context.Context, e *policyEnv) {
	wantApp(t, ctx, e.client, e.echo, "echo:8080", "/")
	wantForbidden(t, ctx, e.other, e.echo, "echo:8080", "/")
	wantNoApp(t, ctx, e.outsider, e.echo, "echo:8080", "/")

	m, err := scrape(ctx, e.pods["echo"])
	if err != nil {
		t.Fatal(err)
	}
	if n := m.Sum(httpAuthzMetric, "server", "echo-http", "authz", "echo-allow", "client_id", clientID, "decision", "allow"); n < 1 {
		t.Errorf(`%s{server="echo-http",authz="echo-allow",client_id=%q,decision="allow"} = %v, want >= 1`, httpAuthzMetric, clientID, n)
	}
	denied := m.Sum(httpAuthzMetric, "server", "echo-http", "decision", "deny")
	byOther := m.Sum(httpAuthzMetric, "server", "echo-http", "client_id", otherID, "decision", "deny")
	if byOther < 1 || denied-byOther < 1 {
		t.Errorf(`%s{server="echo-http",decision="deny"}: %v from %s and %v from others, want >= 1 each (other and the unmeshed client)`,
			httpAuthzMetric, byOther, otherID, denied-byOther)
	}
	// An unauthenticated client is one label value, not one per address.
	if fam := m[httpAuthzMetric]; fam != nil {
		for _, s := range fam.GetMetric() {
			for _, l := range s.GetLabel() {
				if strings.Contains(l.GetValue(), e.outsider.pod.Status.PodIP) {
					t.Errorf("%s has a label %s=%q naming the unmeshed client's address", httpAuthzMetric, l.GetName(), l.GetValue())
				}
			}
		}
	}
}

func testPolicyOpaque(t *testing.T, ctx context.Context, e *policyEnv) {
	var line string
	poll(t, ctx, 30*time.Second, "client pays through payments' opaque port", func(ctx context.Context) (bool, string, error) {
		l, took, err := e.client.pay(ctx, e.payments, "allowed-1")
		line = l
		return err == nil && strings.HasPrefix(l, "OK "), fmt.Sprintf("%q, %v after %s", l, err, took), nil
	})
	t.Logf("client -> payments: %q", strings.TrimSpace(line))
	for _, c := range []*podClient{e.other, e.outsider} {
		l, took, err := c.pay(ctx, e.payments, "denied-1")
		t.Logf("%s -> payments: %q, %v after %s", c.pod.Name, l, err, took.Round(time.Millisecond))
		if err == nil || l != "" {
			t.Errorf("%s -> payments: answer %q (%v), want the connection closed before any answer", c.pod.Name, l, err)
		}
	}
	m, err := scrape(ctx, e.pods["payments"])
	if err != nil {
		t.Fatal(err)
	}
	allowed := m.Sum(tcpAuthzMetric, "server", "payments-tcp", "client_id", clientID, "decision", "allow")
	denied := m.Sum(tcpAuthzMetric, "server", "payments-tcp", "client_id", otherID, "decision", "deny")
	if allowed < 1 || denied < 1 {
		t.Errorf(`%s{server="payments-tcp"}: allow for client %v, deny for other %v, want >= 1 each`, tcpAuthzMetric, allowed, denied)
	}
}

// testPolicyPodIP: a client that dials a meshed pod's own address (a
// headless Service, a StatefulSet peer) rather than a ClusterIP is as
// meshed as any other: the controller names the pod and its identity, so
// its proxy must speak mesh TLS, and the server's policy sees client's
// identity. A 403 "from unauthenticated clients" here means the request
// went out in plain text.
func testPolicyPodIP(t *testing.T, ctx context.Context, e *policyEnv) {
	echo := net.JoinHostPort(e.pods["echo"].Status.PodIP, "8080")
	a := e.client.get(ctx, echo, "echo:8080", "/")
	t.Logf("client -> echo's pod IP %s: %s", echo, a)
	if !a.fromApp() {
		t.Errorf("client -> echo's pod IP %s: %s, want echo's answer: the client is allowed, unless its proxy sent the request without mesh TLS", echo, a)
	}
	wantForbidden(t, ctx, e.other, echo, "echo:8080", "/")

	pay := net.JoinHostPort(e.pods["payments"].Status.PodIP, "7070")
	line, took, err := e.client.pay(ctx, pay, "pod-ip-1")
	t.Logf("client -> payments' pod IP %s: %q, %v after %s", pay, line, err, took.Round(time.Millisecond))
	if err != nil || !strings.HasPrefix(line, "OK ") {
		t.Errorf("client -> payments' pod IP %s: %q, %v; want OK", pay, line, err)
	}
}

func testPolicyGRPC(t *testing.T, ctx context.Context, e *policyEnv) {
	var n int
	poll(t, ctx, 30*time.Second, "client lists the catalog", func(ctx context.Context) (bool, string, error) {
		var err error
		n, err = e.client.listProducts(ctx, e.catalog)
		return err == nil && n > 0, fmt.Sprintf("%d products, %v", n, err), nil
	})
	t.Logf("client -> catalog: %d products", n)

	_, err := e.other.listProducts(ctx, e.catalog)
	t.Logf("other -> catalog: %v", err)
	if got := status.Code(err); got != codes.PermissionDenied {
		t.Errorf("other -> catalog: code %s (%v), want PermissionDenied (7)", got, err)
	}
	n, err = e.outsider.listProducts(ctx, e.catalog)
	t.Logf("outsider (unmeshed) -> catalog: %d products, %v", n, err)
	if got := status.Code(err); got != codes.PermissionDenied && got != codes.Unavailable {
		t.Errorf("outsider -> catalog: code %s, %d products (%v), want PermissionDenied or a closed connection (Unavailable)", got, n, err)
	}

	m, err := scrape(ctx, e.pods["catalog"])
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Sum(httpAuthzMetric, "server", "catalog-grpc", "client_id", otherID, "decision", "deny"); got < 1 {
		t.Errorf(`%s{server="catalog-grpc",client_id=%q,decision="deny"} = %v, want >= 1`, httpAuthzMetric, otherID, got)
	}
}

// testPolicyDeny: in a namespace whose default is deny, locked's port 8080
// has a Server that lets deny-client in; its admin port and every port of
// closed have none; audited overrides the default with its own
// annotation. locked's liveness probe is on port 8080 and every server's
// readiness probe on its admin port: both must pass.
func testPolicyDeny(t *testing.T, ctx context.Context, e *policyEnv) {
	wantApp(t, ctx, e.denyClient, e.locked, "locked:8080", "/")
	wantForbidden(t, ctx, e.other, e.locked, "locked:8080", "/")
	wantNoApp(t, ctx, e.outsider, e.locked, "locked:8080", "/")
	wantForbidden(t, ctx, e.denyClient, e.closed, "closed:8080", "/")
	wantNoApp(t, ctx, e.outsider, e.closed, "closed:8080", "/")
	// /fault is on the admin port, like the /ready probe, but is no probe.
	admin := net.JoinHostPort(e.pods["locked"].Status.PodIP, "9900")
	if a := e.denyClient.get(ctx, admin, admin, "/fault"); a.err != nil || a.status != http.StatusForbidden {
		t.Errorf("deny-client -> locked's admin port /fault: %s, want 403", a)
	}
	// The pod's annotation wins over the namespace's.
	wantApp(t, ctx, e.denyClient, e.audited, "audited:8080", "/")
	wantApp(t, ctx, e.outsider, e.audited, "audited:8080", "/")

	// Give the liveness probe time to fail thrice if the proxy refused it.
	lockedPod := e.pods["locked"]
	if started := appStarted(lockedPod); !started.IsZero() {
		time.Sleep(time.Until(started.Add(10 * time.Second)))
	}
	pods, err := e2e.client.CoreV1().Pods(policyDenyNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if !podReady(&p) {
			t.Errorf("pod %s is not Ready under the deny default", p.Name)
		}
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			if cs.RestartCount != 0 {
				t.Errorf("pod %s: container %s restarted %d times under the deny default (a refused liveness probe?)", p.Name, cs.Name, cs.RestartCount)
			}
		}
	}
}

func appStarted(p *corev1.Pod) time.Time {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == "app" && cs.State.Running != nil {
			return cs.State.Running.StartedAt.Time
		}
	}
	return time.Time{}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// testPolicyAudit: in a namespace whose default is audit, watched's port
// 8080 has a Server that allows only client; other and the unmeshed
// outsider get through anyway, counted and logged as would-be denials, as
// does a request to the admin port, which no Server selects.
func testPolicyAudit(t *testing.T, ctx context.Context, e *policyEnv) {
	wantApp(t, ctx, e.client, e.watched, "watched:8080", "/")
	wantApp(t, ctx, e.other, e.watched, "watched:8080", "/")
	wantApp(t, ctx, e.outsider, e.watched, "watched:8080", "/")
	pod := e.pods["watched"]
	admin := net.JoinHostPort(pod.Status.PodIP, "9900")
	if a := e.other.get(ctx, admin, admin, "/fault"); a.err != nil || a.status != http.StatusOK {
		t.Errorf("other -> watched's admin port /fault: %s, want 200 (audit lets it through)", a)
	}

	m, err := scrape(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		what   string
		labels []string
		want   func(float64) bool
	}{
		{"client's requests allowed", []string{"server", "watched-http", "client_id", clientID, "decision", "allow"}, func(v float64) bool { return v >= 1 }},
		{"client's requests not audited", []string{"client_id", clientID, "decision", "audit"}, func(v float64) bool { return v == 0 }},
		{"other's requests on 8080 audited", []string{"server", "watched-http", "client_id", otherID, "decision", "audit"}, func(v float64) bool { return v >= 1 }},
		{"other's and the outsider's requests audited", []string{"decision", "audit"}, func(v float64) bool { return v >= 3 }},
		{"nothing denied", []string{"decision", "deny"}, func(v float64) bool { return v == 0 }},
	}
	for _, c := range checks {
		if v := m.Sum(httpAuthzMetric, c.labels...); !c.want(v) {
			t.Errorf("%s: %s%v = %v", c.what, httpAuthzMetric, c.labels, v)
		}
	}
	var audits []string
	for _, line := range strings.Split(proxyLogs(t, ctx, pod), "\n") {
		if strings.Contains(line, "audit") {
			audits = append(audits, line)
		}
	}
	t.Logf("watched's proxy logged %d lines about audit; the last: %s", len(audits), lastLines(strings.Join(audits, "\n"), 2))
	if !strings.Contains(strings.Join(audits, "\n"), otherID) {
		t.Errorf("watched's proxy logged no audit line naming %s", otherID)
	}
}

// testPolicyBadObjects updates existing, working objects with bad specs:
// the API server must refuse each, naming the field, and the proxies keep
// enforcing what was there (one of the bad updates would let other in).
func testPolicyBadObjects(t *testing.T, ctx context.Context, e *policyEnv) {
	const header = "apiVersion: policy.mesh.dev/v1alpha1\nkind: %s\nmetadata: {name: %s, namespace: " + policyNS + "}\n"
	tests := []struct {
		name, kind, object, spec, field string
	}{
		{"an unknown proxyProtocol", "Server", "echo-http",
			"spec:\n  podSelector: {matchLabels: {app: echo}}\n  port: http\n  proxyProtocol: HTTP/3\n", "spec.proxyProtocol"},
		{"a bad CIDR", "NetworkAuthentication", "pod-network",
			"spec:\n  networks:\n    - {cidr: 10.244.0.0/33}\n", "spec.networks[0].cidr"},
		{"a targetRef to an unknown kind", "AuthorizationPolicy", "echo-allow",
			"spec:\n  targetRef: {group: \"\", kind: Service, name: echo}\n  requiredAuthenticationRefs:\n" +
				"    - {group: policy.mesh.dev, kind: MeshTLSAuthentication, name: echo-clients}\n", "spec.targetRef"},
		{"a malformed SPIFFE ID", "MeshTLSAuthentication", "echo-clients",
			"spec:\n  identities: [\"spiffe:/cluster.local/ns/" + policyNS + "/sa/other\"]\n  identityRefs:\n" +
				"    - {kind: ServiceAccount, name: client}\n", "spec.identities[0]"},
	}
	for _, tc := range tests {
		manifest := fmt.Sprintf(header, tc.kind, tc.object) + tc.spec
		r := command(ctx, []byte(manifest), nil, e2e.kubectl, "apply", "-f", "-")
		t.Logf("%s: kubectl apply: %v: %s", tc.name, r.err, strings.TrimSpace(r.stderr))
		if r.err == nil {
			t.Errorf("%s: kubectl apply accepted\n%s", tc.name, manifest)
			continue
		}
		if !strings.Contains(r.stderr, tc.field) {
			t.Errorf("%s: kubectl apply said %q, want it to name %s", tc.name, r.stderr, tc.field)
		}
	}
	r := mustRun(t, ctx, nil, e2e.kubectl, "get", "-n", policyNS, "server/echo-http", "-o", "jsonpath={.spec.proxyProtocol}")
	if r.stdout != "HTTP/1" {
		t.Errorf("Server echo-http has proxyProtocol %q after the refused update, want HTTP/1", r.stdout)
	}
	// Long enough for an accepted change to have reached the proxies.
	time.Sleep(2 * time.Second)
	if a := e.client.get(ctx, e.echo, "echo:8080", "/"); !a.fromApp() {
		t.Errorf("client -> echo after the refused updates: %s, want echo's answer", a)
	}
	wantForbidden(t, ctx, e.other, e.echo, "echo:8080", "/")
	if l, _, err := e.client.pay(ctx, e.payments, "after-bad-objects"); err != nil || !strings.HasPrefix(l, "OK ") {
		t.Errorf("client -> payments after the refused updates: %q, %v; want OK", l, err)
	}
}

// testPolicyChangeUnderLoad: client loads echo through a Job that fails on
// its first failed request; other, refused so far, is added to the
// MeshTLSAuthentication and must get through within 2 s of the apply,
// with no proxy restarted and the load's Job completing.
func testPolicyChangeUnderLoad(t *testing.T, ctx context.Context, e *policyEnv) {
	const job = "load-authz"
	manifest := strings.Replace(loadJobIn(policyNS, job, "echo", "/", "", 50, 30*time.Second, 0),
		"      restartPolicy: Never\n", "      serviceAccountName: client\n      restartPolicy: Never\n", 1)
	loadPod := startLoadIn(t, ctx, policyNS, manifest, job, true)
	allowedNow := func(ctx context.Context) (float64, error) {
		m, err := scrape(ctx, e.pods["echo"])
		if err != nil {
			return 0, err
		}
		return m.Sum(httpAuthzMetric, "server", "echo-http", "client_id", clientID, "decision", "allow"), nil
	}
	base, err := allowedNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, time.Minute, "the load reaches echo", func(ctx context.Context) (bool, string, error) {
		n, err := allowedNow(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		return n-base >= 50, fmt.Sprintf("%.0f requests of %s allowed so far", n-base, loadPod.Name), nil
	})
	wantForbidden(t, ctx, e.other, e.echo, "echo:8080", "/")
	before := restartCounts(t, ctx, policyNS)

	update := "apiVersion: policy.mesh.dev/v1alpha1\nkind: MeshTLSAuthentication\n" +
		"metadata: {name: echo-clients, namespace: " + policyNS + "}\nspec:\n  identityRefs:\n" +
		"    - {kind: ServiceAccount, name: client}\n    - {kind: ServiceAccount, name: other}\n"
	start := time.Now()
	applied := make(chan result, 1)
	go func() { applied <- command(ctx, []byte(update), nil, e2e.kubectl, "apply", "-f", "-") }()
	var first time.Duration
	var last answer
	tries := 0
	for time.Since(start) < 10*time.Second {
		tries++
		if last = e.other.get(ctx, e.echo, "echo:8080", "/"); last.fromApp() {
			first = time.Since(start)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := <-applied
	if r.err != nil {
		t.Fatalf("kubectl apply: %v\n%s", r.err, r.stderr)
	}
	if first == 0 {
		t.Fatalf("other still refused 10s after the apply (%d tries); last: %s", tries, last)
	}
	t.Logf("other got through %s after the apply began (%d tries, every 50ms)", first.Round(time.Millisecond), tries)
	if first > 2*time.Second {
		t.Errorf("other got through %s after the apply, want within 2s", first.Round(time.Millisecond))
	}

	waitJobIn(t, ctx, policyNS, job, 2*time.Minute)
	after := restartCounts(t, ctx, policyNS)
	for c, n := range before {
		if after[c] != n {
			t.Errorf("%s restarted: %d restarts before the change, %d after", c, n, after[c])
		}
	}
}

// testPolicyControllerDown stops the controller, then makes newcomer's
// first requests to echo (HTTP) and payments (opaque TCP), Services inside
// the cluster networks that newcomer's proxy never resolved: they must fail
// fast, HTTP with 503 and TCP with a reset, and a capture on the node must
// not find their marker in plain text. Once the controller is back the
// same requests succeed.
func testPolicyControllerDown(t *testing.T, ctx context.Context, e *policyEnv) {
	marker := "mesh-policy-marker-" + randomHex(t)
	capture := startCaptureFilter(t, ctx, "tcp port 8080 or tcp port 7070")

	ns, deploy := manifests.DefaultNamespace, manifests.ControllerName
	d, err := e2e.client.AppsV1().Deployments(ns).Get(ctx, deploy, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	replicas := int32(1)
	if d.Spec.Replicas != nil && *d.Spec.Replicas > 0 {
		replicas = *d.Spec.Replicas
	}
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		// Its own context: the controller comes back even when the
		// test's has run out.
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		mustRun(t, ctx, nil, e2e.kubectl, "scale", "-n", ns, "deployment/"+deploy, fmt.Sprintf("--replicas=%d", replicas))
		mustRun(t, ctx, nil, e2e.kubectl, "rollout", "status", "-n", ns, "deployment/"+deploy, "--timeout=3m")
	}
	defer restore()
	mustRun(t, ctx, nil, e2e.kubectl, "scale", "-n", ns, "deployment/"+deploy, "--replicas=0")
	poll(t, ctx, 2*time.Minute, "controller pods gone", func(ctx context.Context) (bool, string, error) {
		pods, err := e2e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + deploy})
		if err != nil {
			return false, err.Error(), nil
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d left", len(pods.Items)), nil
	})

	path := "/" + marker
	a := e.newcomer.get(ctx, e.echo, "echo:8080", path)
	t.Logf("controller down: newcomer -> echo%s: %s", path, a)
	if a.err != nil || a.status != http.StatusServiceUnavailable || a.elapsed > 3*time.Second {
		t.Errorf("controller down: newcomer -> echo: %s, want 503 within 3s (the connect timeout is 1s)", a)
	}
	line, took, err := e.newcomer.pay(ctx, e.payments, marker)
	t.Logf("controller down: newcomer -> payments: %q, %v after %s", line, err, took.Round(time.Millisecond))
	if err == nil || line != "" || took > 3*time.Second {
		t.Errorf("controller down: newcomer -> payments: %q, %v after %s; want the connection reset within 3s", line, err, took)
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("controller down: newcomer -> payments failed with %v, want a reset (ECONNRESET)", err)
	}
	// Proxies that lost the controller keep the last policy they had
	// (client and other know payments already, from test 1).
	if l, _, err := e.client.pay(ctx, e.payments, "controller-down-1"); err != nil || !strings.HasPrefix(l, "OK ") {
		t.Errorf("controller down: client -> payments: %q, %v; want OK under the last policy", l, err)
	}
	if l, _, err := e.other.pay(ctx, e.payments, "controller-down-2"); err == nil || l != "" {
		t.Errorf("controller down: other -> payments: %q, %v; want the connection closed under the last policy", l, err)
	}
	// The issue: such failures are counted.
	if m, err := scrape(ctx, e.newcomer.pod); err != nil {
		t.Error(err)
	} else {
		for _, proto := range []string{"http", "tcp"} {
			if n := m.Sum(discoveryUnavailableMetric, "protocol", proto); n < 1 {
				t.Errorf(`%s{protocol=%q} = %v on newcomer's proxy, want >= 1`, discoveryUnavailableMetric, proto, n)
			}
		}
	}

	restore()
	start := time.Now()
	// The controller's Service is headless, and the cluster's DNS (CoreDNS
	// with `cache 30`, as kubeadm sets it up) may go on answering "no such
	// name" for up to 30s after its pod is Ready again, as it answered
	// while the controller was away; the proxy asks again at most 5s after
	// a failed connection (dnsresolve's MinResolveInterval), and its
	// streams wait for the connection rather than back off on their own.
	const back = 30*time.Second + 5*time.Second + 10*time.Second // the last for connecting and asking
	var last answer
	poll(t, ctx, back, fmt.Sprintf("newcomer gets echo's answer from echo:8080%s once the controller is back", path), func(ctx context.Context) (bool, string, error) {
		last = e.newcomer.get(ctx, e.echo, "echo:8080", path)
		return last.fromApp(), last.String(), nil
	})
	t.Logf("%s -> echo:8080%s: %s", e.newcomer.pod.Name, path, last)
	poll(t, ctx, 30*time.Second, "newcomer pays once the controller is back", func(ctx context.Context) (bool, string, error) {
		l, _, err := e.newcomer.pay(ctx, e.payments, marker)
		return err == nil && strings.HasPrefix(l, "OK "), fmt.Sprintf("%q, %v", l, err), nil
	})
	t.Logf("the same requests succeeded %s after the controller was Ready again", time.Since(start).Round(100*time.Millisecond))

	seen, lines := capture.stop(t, marker)
	out := capture.out.String()
	mine := strings.Count(out, e.newcomer.pod.Status.PodIP+".") // tcpdump -nn prints IP.port
	t.Logf("captured %d lines on ports 8080 and 7070, %d naming newcomer's address; marker seen: %v", lines, mine, seen)
	if mine == 0 {
		t.Error("the capture saw none of newcomer's packets: it would prove nothing")
	}
	if seen {
		t.Errorf("marker %s went over the wire in plain text", marker)
	}
}
