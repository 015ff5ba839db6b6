package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/install/manifests"
)

// certWarnBefore: check warns about an identity certificate that expires
// sooner than this, while there is time to rotate it.
const certWarnBefore = 60 * 24 * time.Hour

// checkStatus is the outcome of one check.
type checkStatus string

const (
	statusOK   checkStatus = "ok"
	statusWarn checkStatus = "warning"
	statusFail checkStatus = "error"
)

// checkResult is one line of `mesh check`, and one item of its JSON.
type checkResult struct {
	Category string      `json:"category"`
	Name     string      `json:"name"`
	Status   checkStatus `json:"status"`
	// Detail is what was found, when it helps (a version, a count).
	Detail string `json:"detail,omitempty"`
	// Hint says what is wrong and what to do, for warnings and errors.
	Hint string `json:"hint,omitempty"`
}

// checkReport is `mesh check -o json`.
type checkReport struct {
	Success bool          `json:"success"`
	Checks  []checkResult `json:"checks"`
	// Skipped says why the checks after a fatal failure did not run.
	Skipped string `json:"skipped,omitempty"`
}

// warning is returned by a check that passed with a caveat.
type warning struct{ msg string }

func (w *warning) Error() string { return w.msg }

func warnf(format string, args ...any) error { return &warning{fmt.Sprintf(format, args...)} }

// check is one named test of the cluster. run returns a detail to show
// on success, a *warning, or an error whose text is the hint.
type check struct {
	category, name string
	// fatal checks stop the run on failure: the later ones need them.
	fatal bool
	run   func(ctx context.Context, c *checker) (string, error)
}

// checker carries what earlier checks found to later ones. Checks run one
// at a time, in order.
type checker struct {
	o   *Options
	k   *kube
	ns  string
	now time.Time
	// controlVersion is the controller Deployment's version label, once read.
	controlVersion string
}

// errChecksFailed is returned when any check failed, for the exit code.
var errChecksFailed = errors.New("checks failed")

type checkOptions struct {
	Pre    bool
	Output string
	// Proxy adds the checks that ask each meshed pod's proxy
	// (check_proxy.go), of Namespace only when it is set.
	Proxy     bool
	Namespace string
}

func newCheckCmd(o *Options) *cobra.Command {
	co := checkOptions{Output: "table"}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that the mesh works, or can be installed (--pre)",
		Long: "check runs a list of tests against the cluster and prints one line each:\n" +
			"√ passed, ‼ passed with a warning, × failed, with what to do below a failure.\n" +
			"It exits non-zero when a test failed. --pre checks that install can run.\n" +
			"--proxy also asks every running meshed pod's proxy (of -n NAMESPACE only, if given),\n" +
			"through a port-forward each, for its version, certificate, inbound policy and readiness.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(co.Output, "table", "json"); err != nil {
				return err
			}
			if co.Proxy && co.Pre {
				return errors.New("--proxy checks an installed mesh; --pre checks that it can be installed: pass one")
			}
			if co.Namespace != "" && !co.Proxy {
				return errors.New("--namespace selects the proxies of --proxy; pass --proxy too")
			}
			checks := checkList(co.Pre)
			if co.Proxy {
				checks = append(checks, proxyCheckList(co.Namespace, openForward)...)
			}
			report := runChecks(cmd.Context(), o, checks)
			if co.Output == "json" {
				if err := writeJSON(o.Out, report); err != nil {
					return err
				}
			} else {
				printChecks(o.Out, report)
			}
			if !report.Success {
				return errChecksFailed
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&co.Pre, "pre", false, "check that the cluster is ready for mesh install")
	cmd.Flags().StringVarP(&co.Output, "output", "o", co.Output, "output format: table or json")
	cmd.Flags().BoolVar(&co.Proxy, "proxy", false, "also check every meshed pod's proxy: version, certificate, inbound policy, readiness")
	cmd.Flags().StringVarP(&co.Namespace, "namespace", "n", "", "with --proxy: check only the proxies of this namespace")
	return cmd
}

// checkList returns the checks of `mesh check`, or of `mesh check --pre`.
func checkList(pre bool) []check {
	api := []check{
		{category: "kubernetes-api", name: "kubeconfig loads", fatal: true, run: checkKubeconfig},
		{category: "kubernetes-api", name: "can reach the Kubernetes API", fatal: true, run: checkAPI},
		{category: "kubernetes-api", name: fmt.Sprintf("Kubernetes is 1.%d or newer", minKubeMinor), run: checkKubeVersion},
	}
	if pre {
		return append(api,
			check{category: "pre-install", name: "you may install the control plane", run: checkInstallRights},
			check{category: "pre-install", name: "control-plane namespace is free", run: checkNamespaceFree},
		)
	}
	return append(api,
		check{category: "control-plane", name: "control-plane namespace exists", fatal: true, run: checkNamespaceExists},
		check{category: "control-plane", name: "controller deployment is available", run: checkControllerDeployment},
		check{category: "control-plane", name: "controller pods are ready", run: checkControllerPods},
		check{category: "control-plane", name: "control plane and CLI versions match", run: checkVersionsMatch},
		check{category: "control-plane", name: "mesh-viz deployment is available", run: checkVizDeployment},
		check{category: "control-plane", name: "tap API (APIService v1alpha1.tap.mesh.dev) is available", run: checkTapAPIService},
		check{category: "control-plane", name: "tap API caBundle verifies the serving certificate", run: checkTapCert},
		check{category: "identity", name: "trust anchors are valid", run: checkTrustAnchors},
		check{category: "identity", name: "issuer certificate is valid", run: checkIssuer},
		check{category: "policy", name: "policy.mesh.dev CRDs are installed and established", run: checkPolicyCRDs},
		check{category: "gateway-api", name: "Gateway API CRDs are installed and supported", run: checkGatewayAPICRDs},
		check{category: "proxy-injector", name: "webhook is registered", run: checkWebhookConfig},
		check{category: "proxy-injector", name: "webhook caBundle verifies the serving certificate", run: checkWebhookCert},
		check{category: "proxy-injector", name: "injector service has a ready endpoint", run: checkInjectorEndpoint},
		check{category: "proxy-injector", name: "injector adds the proxy to new pods", run: checkInjection},
		check{category: "data-plane", name: "data-plane proxies are ready", run: checkProxiesReady},
		check{category: "data-plane", name: "data-plane proxies run the control-plane version", run: checkProxyVersions},
		check{category: "data-plane", name: "data-plane proxies have received an inbound policy", run: checkProxyPolicies},
		check{category: "data-plane", name: "pods of meshed namespaces run a proxy", run: checkUnmeshedPods},
		check{category: "data-plane", name: "no mesh annotation was ignored lately", run: checkInvalidAnnotations},
		check{category: "data-plane", name: "proxy defaults of the install and namespaces are valid", run: checkProxyDefaults},
		check{category: "tracing", name: "Jaeger is available, if installed", run: checkJaeger},
		check{category: "cni", name: "CNI plugin is ready on every node, in CNI mode", run: checkCNIPlugin},
		check{category: "cni", name: "meshed pods are intercepted the way the install says", run: checkInterceptionMode},
	)
}

// runChecks runs checks in order, stopping after a failed fatal one.
func runChecks(ctx context.Context, o *Options, checks []check) checkReport {
	c := &checker{o: o, ns: o.ControlPlaneNamespace, now: o.now()}
	report := checkReport{Success: true, Checks: []checkResult{}}
	for i, ch := range checks {
		r := checkResult{Category: ch.category, Name: ch.name, Status: statusOK}
		detail, err := ch.run(ctx, c)
		var w *warning
		switch {
		case err == nil:
			r.Detail = detail
		case errors.As(err, &w):
			r.Status, r.Hint = statusWarn, w.msg
		default:
			r.Status, r.Hint = statusFail, err.Error()
			report.Success = false
		}
		report.Checks = append(report.Checks, r)
		if r.Status == statusFail && ch.fatal && i < len(checks)-1 {
			report.Skipped = fmt.Sprintf("the %d checks after %q need it to pass", len(checks)-1-i, ch.name)
			break
		}
	}
	return report
}

// printChecks writes the report as text, grouped by category.
func printChecks(w io.Writer, r checkReport) {
	category := ""
	failed, warned := 0, 0
	for _, c := range r.Checks {
		if c.Category != category {
			if category != "" {
				fmt.Fprintln(w)
			}
			category = c.Category
			fmt.Fprintf(w, "%s\n%s\n", category, strings.Repeat("-", len(category)))
		}
		mark := okMark
		switch c.Status {
		case statusWarn:
			mark = warnMark
			warned++
		case statusFail:
			mark = failMark
			failed++
		}
		line := mark + " " + c.Name
		if c.Detail != "" {
			line += " (" + c.Detail + ")"
		}
		fmt.Fprintln(w, line)
		if c.Hint != "" {
			fmt.Fprintf(w, "    %s\n", strings.ReplaceAll(c.Hint, "\n", "\n    "))
		}
	}
	if r.Skipped != "" {
		fmt.Fprintf(w, "\nSkipped the remaining checks: %s.\n", r.Skipped)
	}
	switch {
	case failed > 0:
		fmt.Fprintf(w, "\nStatus check results are %s: %d failed, %d %s\n", failMark, failed, warned, plural(warned, "warning", "warnings"))
	case warned > 0:
		fmt.Fprintf(w, "\nStatus check results are %s: %d %s\n", warnMark, warned, plural(warned, "warning", "warnings"))
	default:
		fmt.Fprintf(w, "\nStatus check results are %s\n", okMark)
	}
}

func checkKubeconfig(_ context.Context, c *checker) (string, error) {
	k, err := c.o.kube()
	if err != nil {
		return "", err
	}
	c.k = k
	return fmt.Sprintf("context %q", k.Context), nil
}

func checkAPI(ctx context.Context, c *checker) (string, error) {
	info, err := reachAPI(ctx, c.k)
	if err != nil {
		return "", err
	}
	return info.GitVersion + " at " + c.k.Server, nil
}

func checkKubeVersion(ctx context.Context, c *checker) (string, error) {
	info, err := c.k.discovery.ServerVersionWithContext(ctx)
	if err != nil {
		return "", err
	}
	if err := supportedVersion(info); err != nil {
		return "", fmt.Errorf("%w; upgrade the cluster", err)
	}
	return info.GitVersion, nil
}

func checkInstallRights(ctx context.Context, c *checker) (string, error) {
	opts := defaultInstallOptions()
	ms, err := manifests.Render(opts.values(c.ns))
	if err != nil {
		return "", err
	}
	acc, err := requiredForInstall(ctx, c.k, ms, c.ns)
	if err != nil {
		return "", err
	}
	n, err := acc.check(ctx, c.k)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d rights verified", n), nil
}

func checkNamespaceFree(ctx context.Context, c *checker) (string, error) {
	_, err := c.k.client.CoreV1().Namespaces().Get(ctx, c.ns, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return c.ns, nil
	case err != nil:
		return "", warnf("cannot tell: %s", firstLine(err.Error()))
	}
	return "", warnf("namespace %s exists: mesh install will upgrade what is there (mesh check without --pre checks it)", c.ns)
}
