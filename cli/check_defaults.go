package cli

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/install/inject"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

// checkProxyDefaults reports the proxy defaults in force: the install's,
// on the control-plane namespace, and those namespaces set for their own
// pods. A value the injector would ignore (it warns on each new pod) is a
// warning here, with its fix, before any pod is created.
func checkProxyDefaults(ctx context.Context, c *checker) (string, error) {
	nsList, err := c.k.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	var install string
	var own, problems []string
	for _, ns := range nsList.Items {
		isControlPlane := ns.Name == c.ns
		set := defaultsOf(ns.Annotations, isControlPlane)
		for _, w := range inject.CheckDefaults(ns.Annotations, ns.Name, isControlPlane) {
			problems = append(problems, w.Message)
		}
		switch {
		case isControlPlane:
			install = set
		case set != "":
			own = append(own, ns.Name+" ("+set+")")
		}
	}
	if install == "" {
		install = "built-in"
	}
	detail := "install: " + install
	if len(own) > 0 {
		detail += fmt.Sprintf("; %d %s set their own: %s", len(own), plural(len(own), "namespace", "namespaces"), summarize(own, 3))
	}
	if len(problems) > 0 {
		return "", warnf("%s\nthe injector ignores these, warning on every new pod:\n%s\n"+
			"fix them with kubectl annotate namespace NAME KEY=VALUE --overwrite (mesh install rewrites the install's: see mesh install --help)",
			detail, strings.Join(problems, "\n"))
	}
	return detail, nil
}

// defaultsOf lists the proxy default annotations of one namespace as
// "key=value" without the prefix, "" for none; the control-plane
// namespace's are the install's (not its default inbound policy, which
// is the controller's flag).
func defaultsOf(annotations map[string]string, controlPlane bool) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		if !slices.Contains(inject.DefaultAnnotations(), k) && (controlPlane || k != names.AnnotationDefaultInboundPolicy) {
			continue
		}
		out = append(out, strings.TrimPrefix(k, names.ConfigPrefix)+"="+annotations[k])
	}
	return strings.Join(out, ", ")
}

// checkJaeger: the Jaeger of --with-jaeger has rolled out. Without one
// the check passes, unless the install's collector is the address of
// one, which would drop every proxy's spans.
func checkJaeger(ctx context.Context, c *checker) (string, error) {
	d, err := c.k.client.AppsV1().Deployments(c.ns).Get(ctx, manifests.JaegerName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		ns, nsErr := c.k.client.CoreV1().Namespaces().Get(ctx, c.ns, metav1.GetOptions{})
		if nsErr == nil && ns.Annotations[names.AnnotationTracingCollector] == manifests.JaegerCollectorAddr(c.ns) {
			return "", fmt.Errorf("proxies send their spans to %s, but there is no deployment %s in namespace %s: "+
				"run mesh install --with-jaeger, or mesh install with another --tracing-collector",
				manifests.JaegerCollectorAddr(c.ns), manifests.JaegerName, c.ns)
		}
		return "not installed (mesh install --with-jaeger deploys one)", nil
	}
	if err != nil {
		return "", err
	}
	done, detail := rolloutDone(d)
	if done {
		return detail, nil
	}
	pods, err := c.k.client.CoreV1().Pods(c.ns).List(ctx, metav1.ListOptions{LabelSelector: jaegerSelector.String()})
	if err == nil {
		if problem := podProblem(pods.Items); problem != "" {
			detail += "; " + problem
		}
	}
	image := "its image"
	if cs := d.Spec.Template.Spec.Containers; len(cs) > 0 {
		image = cs[0].Image
	}
	return "", fmt.Errorf("%s; proxies' spans are dropped until it is ready.\n"+
		"see kubectl -n %s describe deployment %s; is %s on the nodes (make images)?",
		detail, c.ns, manifests.JaegerName, image)
}
