package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

const demoNS = "demo"

// TestMesh walks the user's path in order: install without rights, install,
// check, the demo with traffic through the proxies, a Job, an opted-out pod,
// a malformed annotation, uninstall. Each step needs the ones before it, so
// the first failure stops the walk.
func TestMesh(t *testing.T) {
	needEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// A reused cluster may hold a mesh (`make demo`): start from nothing.
	deleteNamespace(t, ctx, demoNS)
	if r := command(ctx, nil, nil, e2e.mesh, "uninstall"); r.err != nil {
		t.Fatalf("mesh uninstall, to start from nothing: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	t.Cleanup(func() {
		// Leave the cluster as found, whatever failed.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, demoNS)
		if r := command(ctx, nil, nil, e2e.mesh, "uninstall"); r.err != nil {
			t.Errorf("cleanup: mesh uninstall: %v\n%s%s", r.err, r.stdout, r.stderr)
		}
	})
	steps := []struct {
		name string
		run  func(*testing.T, context.Context)
	}{
		{"install without rights names what is missing", testInstallWithoutRights},
		{"install and check", testInstall},
		{"demo pods carry the proxy", testDemoInjected},
		{"traffic crosses both proxies", testTrafficCrossesProxies},
		{"job completes", testJobCompletes},
		{"disabled pod has no proxy", testDisabledPod},
		{"malformed annotation warns and the pod starts", testMalformedAnnotation},
		{"uninstall leaves nothing", testUninstall},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.run(t, ctx) }) {
			t.Fatalf("step %q failed; the later steps need it", s.name)
		}
	}
}

// testInstallWithoutRights runs `mesh install` as a ServiceAccount bound to
// the built-in "view" role, through a kubeconfig holding its token: the
// install must name the permissions it lacks and change nothing.
func testInstallWithoutRights(t *testing.T, ctx context.Context) {
	kubeconfig := viewerKubeconfig(t, ctx)
	r := command(ctx, nil, []string{"KUBECONFIG=" + kubeconfig}, e2e.mesh, "install")
	if r.err == nil {
		t.Fatalf("mesh install as a viewer succeeded:\n%s%s", r.stdout, r.stderr)
	}
	t.Logf("mesh install as a viewer:\n%s", r.stderr)
	for _, want := range []string{
		"needs rights you do not have",
		"cannot create, patch namespaces",
		"create, patch clusterroles.rbac.authorization.k8s.io",
		"mutatingwebhookconfigurations.admissionregistration.k8s.io",
		"kubectl auth can-i",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("mesh install's error does not say %q", want)
		}
	}
	_, err := e2e.client.CoreV1().Namespaces().Get(ctx, manifests.DefaultNamespace, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("namespace %s after a refused install: err=%v, want NotFound", manifests.DefaultNamespace, err)
	}
}

// viewerKubeconfig makes a ServiceAccount with the "view" ClusterRole and
// writes a kubeconfig that authenticates as it with a short-lived token.
func viewerKubeconfig(t *testing.T, ctx context.Context) string {
	t.Helper()
	const name, ns = "mesh-e2e-viewer", "default"
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := e2e.client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
	}
	if _, err := e2e.client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = e2e.client.RbacV1().ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{})
		_ = e2e.client.CoreV1().ServiceAccounts(ns).Delete(ctx, name, metav1.DeleteOptions{})
	})
	ttl := int64(600)
	tok, err := e2e.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca := e2e.rest.CAData
	if len(ca) == 0 && e2e.rest.CAFile != "" {
		if ca, err = os.ReadFile(e2e.rest.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: e2e.rest.Host, CertificateAuthorityData: ca}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: "local", AuthInfo: name}
	cfg.CurrentContext = name
	path := filepath.Join(t.TempDir(), "viewer.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// testInstall installs from nothing, prints how long it took (the goal is
// under 60 s with the images loaded; a figure, not an assertion: the
// machine is shared), then `mesh check` must pass.
func testInstall(t *testing.T, ctx context.Context) {
	start := time.Now()
	r := mustRun(t, ctx, nil, e2e.mesh, "install")
	took := time.Since(start)
	t.Logf("mesh install output:\n%s%s", r.stdout, r.stderr)
	t.Logf("mesh install took %.1fs from nothing to ready (goal: under 60s)", took.Seconds())
	r = mustRun(t, ctx, nil, e2e.mesh, "check")
	t.Logf("mesh check:\n%s", r.stdout)
	if !strings.Contains(r.stdout, "gateway-api") {
		t.Errorf("mesh check says nothing of the Gateway API CRDs")
	}
	for _, crd := range gatewayAPICRDs {
		if got, want := gatewayAPICRD(t, ctx, crd), manifests.PartOf+" "+manifests.GatewayAPIBundleVersion+" True"; got != want {
			t.Errorf("CRD %s after install: part-of, bundle version, Established = %q, want %q", crd, got, want)
		}
	}
}

// gatewayAPICRDs are the Gateway API CRDs mesh install applies.
var gatewayAPICRDs = []string{"httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io"}

// gatewayAPICRD returns crd's part-of label, bundle version and Established
// condition, space separated, or "absent".
func gatewayAPICRD(t *testing.T, ctx context.Context, crd string) string {
	t.Helper()
	r := command(ctx, nil, nil, e2e.kubectl, "get", "customresourcedefinition", crd, "--ignore-not-found", "-o",
		`jsonpath={.metadata.labels.app\.kubernetes\.io/part-of} {.metadata.annotations.gateway\.networking\.k8s\.io/bundle-version} {.status.conditions[?(@.type=="Established")].status}`)
	if r.err != nil {
		t.Fatalf("kubectl get customresourcedefinition %s: %v\n%s", crd, r.err, r.stderr)
	}
	if strings.TrimSpace(r.stdout) == "" {
		return "absent"
	}
	return r.stdout
}

// testDemoInjected deploys the demo shop into its annotated namespace and
// checks that every pod got the init container and the native sidecar.
func testDemoInjected(t *testing.T, ctx context.Context) {
	mustRun(t, ctx, demoManifest(t, "demo.yaml"), e2e.kubectl, "apply", "-f", "-")
	waitDeployments(t, ctx, demoNS, 4*time.Minute)
	pods := demoPods(t, ctx)
	for _, app := range []string{"web", "catalog", "orders", "payments", "loadgen"} {
		pod, ok := pods[app]
		if !ok {
			t.Errorf("no running pod of %s", app)
			continue
		}
		if initC, proxy := sidecars(pod); !initC || !proxy {
			t.Errorf("pod %s: %s=%v, %s as a native sidecar=%v; want both", pod.Name,
				names.InitContainerName, initC, names.ProxyContainerName, proxy)
		}
	}
}

// demoPods returns the running demo pod of each app, by app name.
func demoPods(t *testing.T, ctx context.Context) map[string]*corev1.Pod {
	t.Helper()
	list, err := e2e.client.CoreV1().Pods(demoNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=mesh-demo"})
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]*corev1.Pod{}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.OwnerReferences[0].Kind == "ReplicaSet" {
			pods[p.Labels["app.kubernetes.io/name"]] = p
		}
	}
	return pods
}

// edge is a hop of the demo that must show on the client's outbound side
// and on the server's inbound side.
type edge struct {
	from, to string
	port     int
	// metric counts the hop: HTTP requests, or TCP connections for the
	// opaque payments protocol.
	metric string
}

// testTrafficCrossesProxies waits until loadgen's traffic has gone through
// every hop of the demo: the client proxy counts it outbound to the
// Service's ClusterIP (the address the app dialled), the server proxy
// counts it inbound to the pod's own address.
func testTrafficCrossesProxies(t *testing.T, ctx context.Context) {
	pods := demoPods(t, ctx)
	edges := []edge{
		{"loadgen", "web", 8080, "mesh_proxy_http_requests_total"},
		{"web", "catalog", 9090, "mesh_proxy_http_requests_total"},
		{"web", "orders", 8081, "mesh_proxy_http_requests_total"},
		{"orders", "payments", 7070, "mesh_proxy_tcp_open_total"},
	}
	poll(t, ctx, 90*time.Second, "traffic on every hop", func(ctx context.Context) (bool, string, error) {
		var missing []string
		for _, e := range edges {
			if why := e.crossed(ctx, pods); why != "" {
				missing = append(missing, why)
			}
		}
		return len(missing) == 0, strings.Join(missing, "; "), nil
	})
	// The protocols the proxies detected, hop by hop.
	orders, err := scrape(ctx, pods["orders"])
	if err != nil {
		t.Fatal(err)
	}
	if orders.Sum("mesh_proxy_protocol_detections_total", "direction", "outbound", "protocol", "opaque") < 1 {
		t.Errorf("orders' proxy detected no opaque outbound connection (payments)")
	}
	if orders.Sum("mesh_proxy_protocol_detections_total", "direction", "inbound", "protocol", "h2") < 1 {
		t.Errorf("orders' proxy detected no inbound HTTP/2")
	}
	// loadgen speaks HTTP/1.1 to web; between the two proxies it rides
	// pooled HTTP/1.1 connections in mesh TLS, and web's proxy names
	// loadgen's identity.
	web, err := scrape(ctx, pods["web"])
	if err != nil {
		t.Fatal(err)
	}
	if web.Sum("mesh_proxy_protocol_detections_total", "direction", "inbound", "protocol", "mesh-tls") < 1 ||
		web.Sum("mesh_proxy_protocol_detections_total", "direction", "inbound", "protocol", "http/1") < 1 {
		t.Errorf("web's proxy saw no HTTP/1 inside mesh TLS inbound: loadgen's HTTP/1.1 did not cross between the proxies in mesh TLS")
	}
	loadgenID := "spiffe://cluster.local/ns/" + demoNS + "/sa/default"
	if web.Sum("mesh_proxy_http_requests_total", "direction", "inbound", "client_id", loadgenID) < 1 {
		t.Errorf("web's proxy counted no request from client_id %s", loadgenID)
	}
	for _, e := range edges {
		t.Logf("%s -> %s:%d crossed %s's outbound and %s's inbound proxy", e.from, e.to, e.port, e.from, e.to)
	}
}

// crossed says what is missing for e to count as crossed, "" if nothing.
func (e edge) crossed(ctx context.Context, pods map[string]*corev1.Pod) string {
	svc, err := e2e.client.CoreV1().Services(demoNS).Get(ctx, e.to, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	from, to := pods[e.from], pods[e.to]
	if from == nil || to == nil {
		return fmt.Sprintf("no pod for %s or %s", e.from, e.to)
	}
	out, err := scrape(ctx, from)
	if err != nil {
		return err.Error()
	}
	in, err := scrape(ctx, to)
	if err != nil {
		return err.Error()
	}
	svcAddr := net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(e.port))
	podAddr := net.JoinHostPort(to.Status.PodIP, fmt.Sprint(e.port))
	var missing []string
	if out.Sum(e.metric, "direction", "outbound", "target_addr", svcAddr) < 1 {
		missing = append(missing, fmt.Sprintf("%s outbound to %s", e.from, svcAddr))
	}
	if in.Sum(e.metric, "direction", "inbound", "target_addr", podAddr) < 1 {
		missing = append(missing, fmt.Sprintf("%s inbound to %s", e.to, podAddr))
	}
	if len(missing) == 0 {
		return ""
	}
	return e.metric + ": nothing yet on " + strings.Join(missing, " and ")
}

// testJobCompletes runs the demo's one-shot Job: with the proxy as a native
// sidecar the Job completes when its container exits.
func testJobCompletes(t *testing.T, ctx context.Context) {
	mustRun(t, ctx, demoManifest(t, "job.yaml"), e2e.kubectl, "apply", "-f", "-")
	defer func() {
		if t.Failed() {
			dumpNamespace(t, demoNS)
		}
	}()
	poll(t, ctx, 3*time.Minute, "job loadgen-once complete", func(ctx context.Context) (bool, string, error) {
		job, err := e2e.client.BatchV1().Jobs(demoNS).Get(ctx, "loadgen-once", metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		for _, c := range job.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				continue
			}
			switch c.Type {
			case batchv1.JobComplete:
				return true, "", nil
			case batchv1.JobFailed:
				return false, "", fmt.Errorf("job failed: %s: %s", c.Reason, c.Message)
			}
		}
		return false, fmt.Sprintf("active=%d succeeded=%d failed=%d", job.Status.Active, job.Status.Succeeded, job.Status.Failed), nil
	})
	pods, err := e2e.client.CoreV1().Pods(demoNS).List(ctx, metav1.ListOptions{LabelSelector: "job-name=loadgen-once"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) == 0 {
		t.Fatal("the job left no pod")
	}
	for i := range pods.Items {
		if _, proxy := sidecars(&pods.Items[i]); !proxy {
			t.Errorf("job pod %s ran without the proxy: completing proves nothing", pods.Items[i].Name)
		}
	}
}

// testPod is a pod of the demo image with the given annotations, running
// the payments server (it has a readiness probe, so Ready means it runs).
func testPod(name string, annotations map[string]string) string {
	var ann strings.Builder
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		fmt.Fprintf(&ann, "    %s: %q\n", k, annotations[k])
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
  annotations:
%s
spec:
  containers:
    - name: app
      image: ghcr.io/mesh-dev/mesh-demo:%s
      imagePullPolicy: IfNotPresent
      args: ["payments"]
      readinessProbe:
        httpGet: {path: /ready, port: 9900}
        periodSeconds: 2
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
`, name, demoNS, ann.String(), e2e.version)
}

// testDisabledPod: a pod annotated mesh.dev/inject=disabled in an enabled
// namespace runs without the proxy.
func testDisabledPod(t *testing.T, ctx context.Context) {
	const name = "e2e-disabled"
	manifest := testPod(name, map[string]string{names.AnnotationInject: names.Disabled})
	mustRun(t, ctx, []byte(manifest), e2e.kubectl, "apply", "-f", "-")
	pod := waitPodReady(t, ctx, demoNS, name)
	if initC, proxy := sidecars(pod); initC || proxy {
		t.Errorf("pod %s annotated disabled got %s=%v %s=%v", name, names.InitContainerName, initC, names.ProxyContainerName, proxy)
	}
	if len(pod.Spec.InitContainers) != 0 || len(pod.Spec.Containers) != 1 {
		t.Errorf("pod %s: %d init containers and %d containers, want 0 and 1", name, len(pod.Spec.InitContainers), len(pod.Spec.Containers))
	}
}

// testMalformedAnnotation: a malformed config.mesh.dev value must not stop
// the pod. kubectl shows the admission warning and a Warning event names
// the annotation.
func testMalformedAnnotation(t *testing.T, ctx context.Context) {
	const name = "e2e-malformed"
	annotation := names.AnnotationSkipInboundPorts
	manifest := testPod(name, map[string]string{annotation: "not-a-port"})
	r := mustRun(t, ctx, []byte(manifest), e2e.kubectl, "apply", "-f", "-")
	if !strings.Contains(r.stderr, "Warning:") || !strings.Contains(r.stderr, annotation) {
		t.Errorf("kubectl apply printed no warning naming %s; stderr:\n%s", annotation, r.stderr)
	}
	pod := waitPodReady(t, ctx, demoNS, name)
	if _, proxy := sidecars(pod); !proxy {
		t.Errorf("pod %s: the malformed annotation cost it the proxy; only the bad value should be ignored", name)
	}
	poll(t, ctx, 30*time.Second, "InvalidAnnotation event", func(ctx context.Context) (bool, string, error) {
		events, err := e2e.client.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "reason=InvalidAnnotation"})
		if err != nil {
			return false, err.Error(), nil
		}
		for _, ev := range events.Items {
			msg := ev.Message
			if ev.Type == corev1.EventTypeWarning && strings.Contains(msg, name) && strings.Contains(msg, annotation) {
				t.Logf("event on %s/%s: %s", ev.InvolvedObject.Kind, ev.InvolvedObject.Name, msg)
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%d InvalidAnnotation events, none about %s and %s", len(events.Items), name, annotation), nil
	})
}

// testUninstall removes the control plane and then looks through every
// listable resource type for an object labelled part of the mesh.
//
// A user's HTTPRoute keeps the Gateway API CRDs in place (deleting a CRD
// deletes its objects); once it is gone, a second uninstall removes them.
func testUninstall(t *testing.T, ctx context.Context) {
	deleteNamespace(t, ctx, demoNS)
	const routeNS = "e2e-route-kept"
	route := plainNamespaceManifest(routeNS) + `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: users-route
  namespace: ` + routeNS + `
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: users
    port: 80
  rules:
  - backendRefs:
    - name: users
      port: 80
`
	mustRun(t, ctx, []byte(route), e2e.kubectl, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, routeNS)
	})
	r := mustRun(t, ctx, nil, e2e.mesh, "uninstall")
	t.Logf("mesh uninstall with an HTTPRoute in the cluster:\n%s%s", r.stdout, r.stderr)
	for _, crd := range gatewayAPICRDs {
		if got := gatewayAPICRD(t, ctx, crd); got == "absent" {
			t.Errorf("CRD %s deleted while the HTTPRoute %s/users-route existed", crd, routeNS)
		}
	}
	if !strings.Contains(r.stdout+r.stderr, routeNS+"/users-route") {
		t.Errorf("mesh uninstall kept the Gateway API CRDs without naming the route that keeps them")
	}
	deleteNamespace(t, ctx, routeNS)
	r = mustRun(t, ctx, nil, e2e.mesh, "uninstall")
	t.Logf("mesh uninstall once the route is gone:\n%s%s", r.stdout, r.stderr)
	for _, crd := range gatewayAPICRDs {
		if got := gatewayAPICRD(t, ctx, crd); got != "absent" {
			t.Errorf("CRD %s after uninstall with no route left: %q, want it deleted", crd, got)
		}
	}
	if _, err := e2e.client.CoreV1().Namespaces().Get(ctx, manifests.DefaultNamespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace %s after uninstall: err=%v, want NotFound", manifests.DefaultNamespace, err)
	}
	left, err := labelledObjects(ctx, "app.kubernetes.io/part-of=mesh")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("left after uninstall: %s", strings.Join(left, ", "))
	}
	// The webhook configuration is cluster-scoped and would keep calling
	// a controller that is gone.
	hooks, err := e2e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks.Items {
		if strings.Contains(h.Name, "mesh") {
			t.Errorf("webhook configuration %s left after uninstall", h.Name)
		}
	}
}

// labelledObjects lists every object of every listable resource type that
// matches selector, as "resource/namespace/name".
func labelledObjects(ctx context.Context, selector string) ([]string, error) {
	// Listing everything touches deprecated types (v1 Endpoints,
	// ComponentStatus); their warnings are noise here.
	cfg := rest.CopyConfig(e2e.rest)
	cfg.WarningHandler = rest.NoWarnings{}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	lists, err := disco.ServerPreferredResources()
	if err != nil && len(lists) == 0 {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	var found []string
	for _, list := range lists {
		for _, res := range list.APIResources {
			if !slices.Contains(res.Verbs, "list") || strings.Contains(res.Name, "/") {
				continue
			}
			gv, err := schema.ParseGroupVersion(list.GroupVersion)
			if err != nil {
				return nil, err
			}
			gvr := gv.WithResource(res.Name)
			objs, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{LabelSelector: selector})
			if err != nil {
				if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
					continue
				}
				return nil, fmt.Errorf("list %s: %w", gvr, err)
			}
			for _, o := range objs.Items {
				found = append(found, res.Name+"/"+o.GetNamespace()+"/"+o.GetName())
			}
		}
	}
	return found, nil
}
