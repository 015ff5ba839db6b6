package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/identity/pki"
	"github.com/mesh-dev/mesh/install/certs"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/version"
)

// The checks of an installed mesh, run in checkList's order by one
// goroutine; each may use what the ones before it stored in the checker.

func checkNamespaceExists(ctx context.Context, c *checker) (string, error) {
	_, err := c.k.client.CoreV1().Namespaces().Get(ctx, c.ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("namespace %s does not exist: run mesh install (or pass --control-plane-namespace)", c.ns)
	}
	if err != nil {
		return "", err
	}
	return c.ns, nil
}

func checkControllerDeployment(ctx context.Context, c *checker) (string, error) {
	d, err := c.k.client.AppsV1().Deployments(c.ns).Get(ctx, manifests.ControllerName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("no deployment %s in namespace %s: run mesh install", manifests.ControllerName, c.ns)
	}
	if err != nil {
		return "", err
	}
	c.controlVersion = d.Labels[manifests.VersionLabel]
	done, detail := rolloutDone(d)
	if !done {
		return "", fmt.Errorf("%s; see kubectl -n %s describe deployment %s", detail, c.ns, manifests.ControllerName)
	}
	return strings.TrimSpace(c.controlVersion + ", " + detail), nil
}

func checkControllerPods(ctx context.Context, c *checker) (string, error) {
	pods, err := c.k.client.CoreV1().Pods(c.ns).List(ctx, metav1.ListOptions{LabelSelector: controllerSelector})
	if err != nil {
		return "", err
	}
	if len(pods.Items) == 0 {
		return "", fmt.Errorf("no controller pods in namespace %s; see kubectl -n %s describe deployment %s", c.ns, c.ns, manifests.ControllerName)
	}
	if problem := podProblem(pods.Items); problem != "" {
		return "", errors.New(problem)
	}
	restarts := int32(0)
	for _, p := range pods.Items {
		if !podReady(&p) {
			return "", fmt.Errorf("pod %s is not ready (phase %s); see kubectl -n %s describe pod %s", p.Name, p.Status.Phase, c.ns, p.Name)
		}
		for _, cs := range p.Status.ContainerStatuses {
			restarts += cs.RestartCount
		}
	}
	detail := fmt.Sprintf("%d ready", len(pods.Items))
	if restarts > 0 {
		detail += fmt.Sprintf(", %d %s", restarts, plural(int(restarts), "restart", "restarts"))
	}
	return detail, nil
}

func checkVersionsMatch(_ context.Context, c *checker) (string, error) {
	switch c.controlVersion {
	case "":
		return "", warnf("the control plane's version is unknown (see the controller deployment check)")
	case version.Version:
		return version.Version, nil
	}
	return "", warnf("the control plane runs %s and this mesh binary is %s: run mesh install to upgrade the control plane, or use a mesh binary of its version",
		c.controlVersion, version.Version)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// expiryWarning warns about certificates expiring within certWarnBefore.
func expiryWarning(what string, cs []*x509.Certificate, now time.Time, fix string) error {
	for _, c := range cs {
		if pki.ExpiresWithin(c, now, certWarnBefore) {
			return warnf("%s %q expires on %s; %s", what, c.Subject.CommonName, day(c.NotAfter), fix)
		}
	}
	return nil
}

func checkTrustAnchors(ctx context.Context, c *checker) (string, error) {
	cm, err := c.k.client.CoreV1().ConfigMaps(c.ns).Get(ctx, manifests.TrustRootsConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("no configmap %s in namespace %s: run mesh install", manifests.TrustRootsConfigMapName, c.ns)
	}
	if err != nil {
		return "", err
	}
	anchors, err := pki.ParseCerts([]byte(cm.Data[manifests.TrustRootsKey]))
	if err != nil {
		return "", fmt.Errorf("configmap %s key %s: %w", manifests.TrustRootsConfigMapName, manifests.TrustRootsKey, err)
	}
	for _, a := range anchors {
		if c.now.After(a.NotAfter) {
			return "", fmt.Errorf("trust anchor %q expired on %s: install a new trust anchor and issuer with mesh install --identity-* flags", a.Subject.CommonName, day(a.NotAfter))
		}
	}
	if err := expiryWarning("trust anchor", anchors, c.now, "add a new one to the bundle now: mesh install --identity-trust-anchors-file"); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d, valid until %s", len(anchors), day(anchors[0].NotAfter)), nil
}

func checkIssuer(ctx context.Context, c *checker) (string, error) {
	secret, err := c.k.client.CoreV1().Secrets(c.ns).Get(ctx, manifests.IssuerSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("no secret %s in namespace %s: run mesh install", manifests.IssuerSecretName, c.ns)
	}
	if err != nil {
		return "", err
	}
	tdName := secret.Annotations[manifests.TrustDomainAnnotation]
	if tdName == "" {
		tdName = pki.DefaultTrustDomain
	}
	td, err := pki.ParseTrustDomain(tdName)
	if err != nil {
		return "", fmt.Errorf("secret %s: %w", manifests.IssuerSecretName, err)
	}
	anchors := secret.Data["ca.crt"]
	if cm, err := c.k.client.CoreV1().ConfigMaps(c.ns).Get(ctx, manifests.TrustRootsConfigMapName, metav1.GetOptions{}); err == nil && cm.Data[manifests.TrustRootsKey] != "" {
		anchors = []byte(cm.Data[manifests.TrustRootsKey])
	}
	id, err := pki.ParseIdentity(td, anchors, secret.Data["tls.crt"], secret.Data["tls.key"])
	if err == nil {
		err = id.Validate(c.now)
	}
	if err != nil {
		return "", fmt.Errorf("%w\nrun mesh install to replace it (or pass new --identity-* files)", err)
	}
	issuer := id.Issuer()
	if err := expiryWarning("issuer", []*x509.Certificate{issuer}, c.now,
		"rotate it: mesh install --identity-trust-anchors-file ... --identity-issuer-certificate-file ... --identity-issuer-key-file ..."); err != nil {
		return "", err
	}
	return fmt.Sprintf("trust domain %s, valid until %s", td.Name(), day(issuer.NotAfter)), nil
}

// injectorWebhook returns the mesh webhook of the configuration.
func injectorWebhook(ctx context.Context, c *checker) (*admissionregistrationv1.MutatingWebhook, error) {
	cfg, err := c.k.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, manifests.WebhookConfigName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("no mutatingwebhookconfiguration %s: run mesh install (it registers the webhook once the controller is ready)", manifests.WebhookConfigName)
	}
	if err != nil {
		return nil, err
	}
	for i, w := range cfg.Webhooks {
		if w.Name == manifests.WebhookName {
			return &cfg.Webhooks[i], nil
		}
	}
	return nil, fmt.Errorf("mutatingwebhookconfiguration %s has no webhook %s: run mesh install", manifests.WebhookConfigName, manifests.WebhookName)
}

func checkWebhookConfig(ctx context.Context, c *checker) (string, error) {
	w, err := injectorWebhook(ctx, c)
	if err != nil {
		return "", err
	}
	svc := w.ClientConfig.Service
	if svc == nil || svc.Namespace != c.ns || svc.Name != manifests.InjectorServiceName {
		return "", fmt.Errorf("webhook %s does not call service %s/%s: run mesh install", manifests.WebhookName, c.ns, manifests.InjectorServiceName)
	}
	if len(w.ClientConfig.CABundle) == 0 {
		return "", fmt.Errorf("webhook %s has no caBundle: run mesh install", manifests.WebhookName)
	}
	policy := ""
	if w.FailurePolicy != nil {
		policy = "failurePolicy " + string(*w.FailurePolicy)
	}
	return policy, nil
}

func checkWebhookCert(ctx context.Context, c *checker) (string, error) {
	w, err := injectorWebhook(ctx, c)
	if err != nil {
		return "", err
	}
	secret, err := c.k.client.CoreV1().Secrets(c.ns).Get(ctx, manifests.InjectorTLSSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("no secret %s in namespace %s: run mesh install", manifests.InjectorTLSSecretName, c.ns)
	}
	if err != nil {
		return "", err
	}
	dnsName := certs.ServiceDNSNames(manifests.InjectorServiceName, c.ns)[0]
	s, err := certs.ParseServing(w.ClientConfig.CABundle, secret.Data["tls.crt"], secret.Data["tls.key"])
	if err == nil {
		err = s.Validate(dnsName, c.now)
	}
	if err != nil {
		return "", fmt.Errorf("the API server would refuse the injector's certificate: %w\nrun mesh install to issue a new one", err)
	}
	if pki.ExpiresWithin(s.Cert, c.now, servingRenewBefore) {
		return "", warnf("the serving certificate expires on %s: run mesh install to renew it", day(s.Cert.NotAfter))
	}
	return "valid until " + day(s.Cert.NotAfter), nil
}

func checkInjectorEndpoint(ctx context.Context, c *checker) (string, error) {
	n, err := readyEndpoints(ctx, c.k, c.ns, manifests.InjectorServiceName)
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "", fmt.Errorf("service %s/%s has no ready endpoint: the API server cannot reach the injector; see the controller checks above", c.ns, manifests.InjectorServiceName)
	}
	return fmt.Sprintf("%d %s", n, plural(n, "endpoint", "endpoints")), nil
}

// checkNamespacePrefix starts the names of checkInjection's namespaces.
const checkNamespacePrefix = "mesh-check-"

// checkInjection asks the API server to create, in dry-run mode, a pod in
// a temporary namespace annotated for injection, and looks for the proxy
// in what the admission chain returns. Namespaces cannot be created in
// dry-run mode and then used, so this one is real and deleted afterwards;
// it carries the mesh label, so uninstall finds it if check is interrupted.
func checkInjection(ctx context.Context, c *checker) (string, error) {
	name := checkNamespacePrefix + strings.ToLower(rand.Text()[:6])
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:        name,
		Labels:      map[string]string{manifests.PartOfLabel: manifests.PartOf},
		Annotations: map[string]string{names.AnnotationInject: names.Enabled},
	}}
	namespaces := c.k.client.CoreV1().Namespaces()
	if _, err := namespaces.Create(ctx, nsObj, metav1.CreateOptions{}); err != nil {
		if apierrors.IsForbidden(err) {
			return "", warnf("not tested: you may not create the temporary namespace %s (%s)", name, firstLine(err.Error()))
		}
		return "", fmt.Errorf("create temporary namespace %s: %w", name, err)
	}
	defer func() {
		// Clean up even when ctx was cancelled (Ctrl-C), but not forever.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = namespaces.Delete(dctx, name, metav1.DeleteOptions{})
	}()

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh-check"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "app",
			Image: "registry.k8s.io/pause:3.10",
		}}},
	}
	var created *corev1.Pod
	// The namespace's default ServiceAccount appears a moment after it; the
	// ServiceAccount admission plugin refuses pods until then.
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := poll(pctx, func(string) {}, func(ctx context.Context) (bool, string, error) {
		var err error
		created, err = c.k.client.CoreV1().Pods(name).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		switch {
		case err == nil:
			return true, "", nil
		case strings.Contains(err.Error(), "service account"):
			return false, err.Error(), nil
		default:
			return false, "", err
		}
	})
	if err != nil {
		return "", fmt.Errorf("dry-run pod create in %s failed: %s\nif the webhook failed: kubectl -n %s logs deployment/%s", name, firstLine(err.Error()), c.ns, manifests.ControllerName)
	}
	for _, ct := range slices.Concat(created.Spec.InitContainers, created.Spec.Containers) {
		if ct.Name == names.ProxyContainerName {
			return ct.Image, nil
		}
	}
	return "", fmt.Errorf("a pod created in a namespace annotated %s=%s came back without the %s container: the API server did not reach the injector, or it declined; see kubectl -n %s logs deployment/%s",
		names.AnnotationInject, names.Enabled, names.ProxyContainerName, c.ns, manifests.ControllerName)
}

// meshedPods lists the pods injected by this control plane.
func meshedPods(ctx context.Context, c *checker) ([]corev1.Pod, error) {
	pods, err := c.k.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: names.LabelControlPlaneNamespace + "=" + c.ns})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			out = append(out, p)
		}
	}
	return out, nil
}

func checkProxiesReady(ctx context.Context, c *checker) (string, error) {
	pods, err := meshedPods(ctx, c)
	if err != nil {
		return "", err
	}
	if len(pods) == 0 {
		return "no meshed pods yet", nil
	}
	var notReady []string
	var first *corev1.Pod
	for i, p := range pods {
		if !proxyReady(&p) {
			notReady = append(notReady, p.Namespace+"/"+p.Name)
			if first == nil {
				first = &pods[i]
			}
		}
	}
	if len(notReady) > 0 {
		return "", fmt.Errorf("%d of %d meshed pods have no ready %s: %s; see kubectl -n %s describe pod %s",
			len(notReady), len(pods), names.ProxyContainerName, summarize(notReady, 5), first.Namespace, first.Name)
	}
	return fmt.Sprintf("%d %s", len(pods), plural(len(pods), "pod", "pods")), nil
}

// proxyReady reports whether the pod's mesh-proxy container, a native
// sidecar among the init containers or a plain container, is ready.
func proxyReady(p *corev1.Pod) bool {
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if cs.Name == names.ProxyContainerName {
			return cs.Ready
		}
	}
	return false
}

func checkProxyVersions(ctx context.Context, c *checker) (string, error) {
	if c.controlVersion == "" {
		return "", warnf("the control plane's version is unknown (see the controller deployment check)")
	}
	pods, err := meshedPods(ctx, c)
	if err != nil {
		return "", err
	}
	var stale []string
	for _, p := range pods {
		if v := p.Annotations[names.AnnotationProxyVersion]; v != c.controlVersion {
			stale = append(stale, fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, v))
		}
	}
	if len(stale) > 0 {
		return "", warnf("%d of %d meshed pods run another proxy version than the control plane's %s: %s; restart them: kubectl rollout restart deployment -n NAMESPACE",
			len(stale), len(pods), c.controlVersion, summarize(stale, 5))
	}
	return c.controlVersion, nil
}

// checkUnmeshedPods finds the pods that should carry a proxy and do not:
// in a namespace annotated for injection, not opted out, yet created
// without the injector (it was down, or the webhook ignored them while its
// failurePolicy is Ignore). Their traffic is neither encrypted nor subject
// to policy, and nothing else would say so.
func checkUnmeshedPods(ctx context.Context, c *checker) (string, error) {
	nss, err := c.k.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	var missing []string
	var first *corev1.Pod
	enabled := 0
	for _, ns := range nss.Items {
		// A terminating namespace (mesh check's own injection probe among
		// them) runs nothing new.
		if ns.Name == c.ns || ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating ||
			ns.Annotations[names.AnnotationInject] != names.Enabled || ns.Labels[names.LabelWebhook] == names.WebhookIgnore {
			continue
		}
		enabled++
		pods, err := c.k.client.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{})
		if err != nil {
			return "", err
		}
		for i, p := range pods.Items {
			if !wantsProxy(&p) || hasProxy(&p) {
				continue
			}
			missing = append(missing, p.Namespace+"/"+p.Name)
			if first == nil {
				first = &pods.Items[i]
			}
		}
	}
	if len(missing) > 0 {
		return "", warnf("%d %s in namespaces annotated %s=%s %s no proxy, so %s traffic is neither encrypted nor authorized: %s; they were created while the injector was down or unreachable; restart them (kubectl -n %s rollout restart deployment, or delete the pod) once mesh check passes",
			len(missing), plural(len(missing), "pod", "pods"), names.AnnotationInject, names.Enabled, plural(len(missing), "has", "have"),
			plural(len(missing), "its", "their"), summarize(missing, 5), first.Namespace)
	}
	return fmt.Sprintf("%d meshed %s", enabled, plural(enabled, "namespace", "namespaces")), nil
}

// wantsProxy reports whether the injector would give a running pod of an
// enabled namespace a proxy: not opted out, not on the host's network.
func wantsProxy(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed &&
		p.Annotations[names.AnnotationInject] != names.Disabled && !p.Spec.HostNetwork
}

// summarize joins at most n items, saying how many more there are.
func summarize(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:n], ", ") + fmt.Sprintf(" and %d more", len(items)-n)
}

// crdResource is the resource of CustomResourceDefinitions, read with the
// dynamic client: the apiextensions types are not worth a dependency for
// two fields of their status.
var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// policyResources are the policy.mesh.dev kinds the controller watches
// and mesh authz explains; their CRDs are named RESOURCE.GROUP.
var policyResources = policyv1alpha1.Resources

func checkPolicyCRDs(ctx context.Context, c *checker) (string, error) {
	var missing, problems []string
	for _, r := range policyResources {
		name := r.Resource + "." + r.Group
		crd, err := c.k.dynamic.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			missing = append(missing, name)
			continue
		case apierrors.IsForbidden(err):
			return "", warnf("cannot tell: you may not read customresourcedefinitions (%s)", firstLine(err.Error()))
		case err != nil:
			return "", fmt.Errorf("get customresourcedefinition %s: %w", name, err)
		}
		if p := crdProblem(crd, r.Version); p != "" {
			problems = append(problems, name+" "+p)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%d of %d policy CRDs are missing: %s; run mesh install (it installs them): without them the controller cannot serve inbound policies",
			len(missing), len(policyResources), strings.Join(missing, ", "))
	}
	if len(problems) > 0 {
		return "", fmt.Errorf("%s\nsee kubectl describe crd %s; mesh install updates the CRDs",
			strings.Join(problems, "\n"), policyResources[0].Resource+"."+policyResources[0].Group)
	}
	return fmt.Sprintf("%d established", len(policyResources)), nil
}

// crdProblem says what keeps a CRD from serving version, "" when it is
// Established and serves it.
func crdProblem(crd *unstructured.Unstructured, version string) string {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	established := false
	var why []string
	for _, raw := range conds {
		cond, _ := raw.(map[string]any)
		typ, _ := cond["type"].(string)
		status, _ := cond["status"].(string)
		switch {
		case typ == "Established" && status == "True":
			established = true
		case (typ == "Established" || typ == "NamesAccepted") && status != "True":
			msg, _ := cond["message"].(string)
			why = append(why, strings.TrimSpace(typ+" "+status+": "+msg))
		}
	}
	if !established {
		if len(why) == 0 {
			return "is not Established yet"
		}
		return "is not Established (" + strings.Join(why, "; ") + ")"
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, raw := range versions {
		v, _ := raw.(map[string]any)
		if name, _ := v["name"].(string); name == version {
			if served, _ := v["served"].(bool); served {
				return ""
			}
		}
	}
	return "does not serve version " + version + ", the one this mesh binary and the controller use"
}

// Reading the proxies' metrics for checkProxyPolicies: at most
// policyScrapeConcurrency requests through the API server at a time, each
// within policyScrapeTimeout, so a cluster of many pods or a hung proxy
// makes the check slower, not endless.
const (
	policyScrapeConcurrency = 8
	policyScrapeTimeout     = 5 * time.Second
	// metricPolicyReady is the proxy's gauge, 1 once it holds a policy
	// from the controller (docs/metrics.md).
	metricPolicyReady = "mesh_proxy_inbound_policy_ready"
)

// policyState is what a proxy's metrics say of its inbound policy.
type policyState int

const (
	policyReceived   policyState = iota
	policyMissing                // the gauge is 0
	policyUnknown                // the proxy does not export the gauge
	policyUnreadable             // its metrics could not be read
)

func checkProxyPolicies(ctx context.Context, c *checker) (string, error) {
	pods, err := meshedPods(ctx, c)
	if err != nil {
		return "", err
	}
	// A pod that is not running has no proxy to ask; the proxies-ready
	// check above names it.
	pods = slices.DeleteFunc(pods, func(p corev1.Pod) bool { return p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" })
	if len(pods) == 0 {
		return "no running meshed pods", nil
	}
	states, errs := proxyPolicyStates(ctx, c.k.client, pods)
	var missing, unknown, unreadable []string
	for i, p := range pods {
		ref := p.Namespace + "/" + p.Name
		switch states[i] {
		case policyMissing:
			missing = append(missing, ref)
		case policyUnknown:
			unknown = append(unknown, ref)
		case policyUnreadable:
			unreadable = append(unreadable, fmt.Sprintf("%s (%v)", ref, errs[i]))
		}
	}
	var notes []string
	if len(unknown) > 0 {
		notes = append(notes, fmt.Sprintf("%d %s no %s: %s; they watch no inbound policy (a proxy older than authorization policy, or one injected without its pod name or the controller's address): restart them to get the current proxy (kubectl rollout restart)",
			len(unknown), plural(len(unknown), "proxy exports", "proxies export"), metricPolicyReady, summarize(unknown, 5)))
	}
	if len(unreadable) > 0 {
		notes = append(notes, fmt.Sprintf("cannot tell for %d %s: %s", len(unreadable), plural(len(unreadable), "pod", "pods"), summarize(unreadable, 3)))
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("%d of %d meshed pods have no inbound policy: %s\n"+
			"their proxies have not received an inbound policy from %s: check the controller's logs (kubectl -n %s logs deployment/%s) and that the pods can reach it (service %s/%s, port %d); until they do, they refuse connections on ports whose policy they do not know",
			len(missing), len(pods), summarize(missing, 5), manifests.ControllerName, c.ns, manifests.ControllerName, c.ns, manifests.ControllerName, controllerGRPCPort)
		return "", errors.New(strings.Join(append([]string{msg}, notes...), "\n"))
	}
	if len(notes) > 0 {
		return "", warnf("%s", strings.Join(notes, "\n"))
	}
	return fmt.Sprintf("%d %s", len(pods), plural(len(pods), "pod", "pods")), nil
}

// proxyPolicyStates reads the metrics of each pod's proxy through the API
// server's pod proxy, policyScrapeConcurrency at a time, and returns what
// they say, with the error of each pod whose metrics could not be read.
func proxyPolicyStates(ctx context.Context, client kubernetes.Interface, pods []corev1.Pod) ([]policyState, []error) {
	states := make([]policyState, len(pods))
	errs := make([]error, len(pods))
	sem := make(chan struct{}, policyScrapeConcurrency)
	var wg sync.WaitGroup
	for i := range pods {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			states[i], errs[i] = policyUnreadable, ctx.Err()
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			states[i], errs[i] = proxyPolicyState(ctx, client, &pods[i])
		})
	}
	wg.Wait()
	return states, errs
}

// proxyPolicyState reads one proxy's mesh_proxy_inbound_policy_ready.
func proxyPolicyState(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod) (policyState, error) {
	ctx, cancel := context.WithTimeout(ctx, policyScrapeTimeout)
	defer cancel()
	body, err := client.CoreV1().Pods(pod.Namespace).
		ProxyGet("http", pod.Name, strconv.Itoa(names.AdminPort), "metrics", nil).DoRaw(ctx)
	if err != nil {
		if apierrors.IsForbidden(err) {
			return policyUnreadable, fmt.Errorf("you may not get pods/proxy in namespace %s", pod.Namespace)
		}
		return policyUnreadable, fmt.Errorf("GET :%d/metrics through the API server: %s", names.AdminPort, firstLine(err.Error()))
	}
	ready, found, err := policyReady(body)
	switch {
	case err != nil:
		return policyUnreadable, err
	case !found:
		return policyUnknown, nil
	case !ready:
		return policyMissing, nil
	}
	return policyReceived, nil
}

// policyReady reads metricPolicyReady from a Prometheus text exposition:
// found when the proxy exports it, ready when every sample of it is 1.
func policyReady(body []byte) (ready, found bool, err error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return false, false, fmt.Errorf("the proxy's metrics do not parse: %w", err)
	}
	ms := families[metricPolicyReady].GetMetric()
	if len(ms) == 0 {
		return false, false, nil
	}
	for _, m := range ms {
		v := m.GetGauge().GetValue()
		if m.Untyped != nil {
			v = m.GetUntyped().GetValue()
		}
		if v != 1 {
			return false, true, nil
		}
	}
	return true, true, nil
}
