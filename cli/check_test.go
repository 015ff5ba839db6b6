package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

func TestCheckWithoutCluster(t *testing.T) {
	unreachable := unreachableKubeconfig(t)
	tests := []struct {
		name string
		args []string
		want []checkResult
	}{
		{
			name: "no kubeconfig",
			args: []string{"check", "-o", "json"},
			want: []checkResult{{Category: "kubernetes-api", Name: "kubeconfig loads", Status: statusFail}},
		},
		{
			name: "API server down",
			args: []string{"check", "--pre", "-o", "json", "--kubeconfig", unreachable},
			want: []checkResult{
				{Category: "kubernetes-api", Name: "kubeconfig loads", Status: statusOK},
				{Category: "kubernetes-api", Name: "can reach the Kubernetes API", Status: statusFail},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := run(t, "", tc.args...)
			if !errors.Is(err, errChecksFailed) {
				t.Fatalf("err = %v, want errChecksFailed (a non-zero exit)", err)
			}
			var report checkReport
			if err := json.Unmarshal([]byte(out), &report); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			if report.Success || report.Skipped == "" {
				t.Errorf("success %v, skipped %q: want a failure that skips the rest", report.Success, report.Skipped)
			}
			var got []checkResult
			for _, r := range report.Checks {
				if r.Status == statusFail && r.Hint == "" {
					t.Errorf("%q failed without a hint", r.Name)
				}
				got = append(got, checkResult{Category: r.Category, Name: r.Name, Status: r.Status})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("checks (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunChecksAndPrint(t *testing.T) {
	ok := func(detail string) func(context.Context, *checker) (string, error) {
		return func(context.Context, *checker) (string, error) { return detail, nil }
	}
	fail := func(msg string) func(context.Context, *checker) (string, error) {
		return func(context.Context, *checker) (string, error) { return "", errors.New(msg) }
	}
	warn := func(msg string) func(context.Context, *checker) (string, error) {
		return func(context.Context, *checker) (string, error) { return "", warnf("%s", msg) }
	}
	checks := []check{
		{category: "a", name: "first", run: ok("v1")},
		{category: "a", name: "second", run: warn("expires soon\nrotate it")},
		{category: "b", name: "third", run: fail("broken: fix it")},
		{category: "b", name: "fatal", fatal: true, run: fail("cannot go on")},
		{category: "c", name: "never run", run: ok("")},
	}
	report := runChecks(context.Background(), NewOptions(nil, nil, nil), checks)
	var b bytes.Buffer
	printChecks(&b, report)
	want := `a
-
√ first (v1)
‼ second
    expires soon
    rotate it

b
-
× third
    broken: fix it
× fatal
    cannot go on

Skipped the remaining checks: the 1 checks after "fatal" need it to pass.

Status check results are ×: 2 failed, 1 warning
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
	if report.Success {
		t.Error("report.Success with failures")
	}
}

func TestCheckOutputFlag(t *testing.T) {
	_, _, err := run(t, "", "check", "-o", "yaml")
	if err == nil || !strings.Contains(err.Error(), "want one of") {
		t.Fatalf("err = %v", err)
	}
}

// crd returns a CustomResourceDefinition of policy.mesh.dev serving
// v1alpha1, with conditions of type: status.
func crd(resource string, served bool, conditions ...map[string]any) *unstructured.Unstructured {
	conds := make([]any, len(conditions))
	for i, c := range conditions {
		conds[i] = c
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": resource + ".policy.mesh.dev"},
		"spec": map[string]any{
			"group":    "policy.mesh.dev",
			"versions": []any{map[string]any{"name": "v1alpha1", "served": served, "storage": true}},
		},
		"status": map[string]any{"conditions": conds},
	}}
}

func condition(typ, status, msg string) map[string]any {
	return map[string]any{"type": typ, "status": status, "message": msg}
}

func TestCheckPolicyCRDs(t *testing.T) {
	established := condition("Established", "True", "the initial names have been accepted")
	all := func(replace map[string]*unstructured.Unstructured) []runtime.Object {
		var objs []runtime.Object
		for _, r := range []string{"servers", "meshtlsauthentications", "networkauthentications", "authorizationpolicies", "httplocalratelimitpolicies", "httpfaults"} {
			c, ok := replace[r]
			if !ok {
				c = crd(r, true, established)
			}
			if c != nil {
				objs = append(objs, c)
			}
		}
		return objs
	}
	for _, tc := range []struct {
		name       string
		objs       []runtime.Object
		wantDetail string
		wantErr    []string
	}{
		{name: "all established", objs: all(nil), wantDetail: "6 established"},
		{
			name: "missing", objs: all(map[string]*unstructured.Unstructured{"servers": nil, "authorizationpolicies": nil}),
			wantErr: []string{"2 of 6 policy CRDs are missing: servers.policy.mesh.dev, authorizationpolicies.policy.mesh.dev; run mesh install"},
		},
		{
			name: "names not accepted",
			objs: all(map[string]*unstructured.Unstructured{"servers": crd("servers", true,
				condition("NamesAccepted", "False", `"srv" is already in use`), condition("Established", "False", "not all names are accepted"))}),
			wantErr: []string{`servers.policy.mesh.dev is not Established (NamesAccepted False: "srv" is already in use; Established False: not all names are accepted)`, "kubectl describe crd"},
		},
		{
			name:    "not served",
			objs:    all(map[string]*unstructured.Unstructured{"networkauthentications": crd("networkauthentications", false, established)}),
			wantErr: []string{"networkauthentications.policy.mesh.dev does not serve version v1alpha1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &checker{k: &kube{dynamic: dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), tc.objs...)}, ns: "mesh-system"}
			detail, err := checkPolicyCRDs(context.Background(), c)
			if len(tc.wantErr) == 0 {
				if err != nil || detail != tc.wantDetail {
					t.Errorf("got %q, %v; want %q", detail, err, tc.wantDetail)
				}
				return
			}
			if err == nil {
				t.Fatalf("passed with %q, want an error", detail)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v\nwant it to contain %q", err, want)
				}
			}
		})
	}
}

// metricsAnswer is a ProxyGet answer of the fake clientset.
type metricsAnswer struct {
	body []byte
	err  error
}

func (a metricsAnswer) DoRaw(context.Context) ([]byte, error) { return a.body, a.err }
func (a metricsAnswer) Stream(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(a.body)), a.err
}

// proxyMetrics is a proxy's exposition with the policy gauge at ready,
// or without it when ready is "".
func proxyMetrics(ready string) metricsAnswer {
	body := "# TYPE mesh_proxy_http_requests_total counter\nmesh_proxy_http_requests_total{direction=\"inbound\"} 3\n"
	if ready != "" {
		body += "# HELP mesh_proxy_inbound_policy_ready 1 once the proxy holds a policy from the controller.\n" +
			"# TYPE mesh_proxy_inbound_policy_ready gauge\nmesh_proxy_inbound_policy_ready " + ready + "\n"
	}
	return metricsAnswer{body: []byte(body)}
}

func TestCheckProxyPolicies(t *testing.T) {
	meshed := func(name string) *corev1.Pod {
		p := testPod("shop", name, true)
		p.Labels[names.LabelControlPlaneNamespace] = manifests.DefaultNamespace
		return p
	}
	pending := meshed("pending")
	pending.Status.Phase, pending.Status.PodIP = corev1.PodPending, ""
	for _, tc := range []struct {
		name       string
		answers    map[string]metricsAnswer // by pod name
		wantStatus checkStatus
		wantDetail string
		want       []string
	}{
		{
			name:       "all received",
			answers:    map[string]metricsAnswer{"web-1": proxyMetrics("1"), "web-2": proxyMetrics("1")},
			wantStatus: statusOK, wantDetail: "2 pods",
		},
		{
			name:       "one without",
			answers:    map[string]metricsAnswer{"web-1": proxyMetrics("1"), "web-2": proxyMetrics("0")},
			wantStatus: statusFail,
			want: []string{
				"1 of 2 meshed pods have no inbound policy: shop/web-2",
				"their proxies have not received an inbound policy from mesh-controller: check the controller's logs (kubectl -n mesh-system logs deployment/mesh-controller) and that the pods can reach it",
			},
		},
		{
			name:       "old proxy and unreachable",
			answers:    map[string]metricsAnswer{"web-1": proxyMetrics(""), "web-2": {err: errors.New("dial tcp 10.0.0.7:4191: connect: connection refused")}},
			wantStatus: statusWarn,
			want: []string{
				"1 proxy exports no mesh_proxy_inbound_policy_ready: shop/web-1; they watch no inbound policy",
				"cannot tell for 1 pod: shop/web-2 (GET :4191/metrics through the API server: dial tcp 10.0.0.7:4191: connect: connection refused)",
			},
		},
		{
			name:       "without, and not parsed",
			answers:    map[string]metricsAnswer{"web-1": proxyMetrics("0"), "web-2": {body: []byte("<html>not metrics")}},
			wantStatus: statusFail,
			want:       []string{"1 of 2 meshed pods have no inbound policy: shop/web-1", "cannot tell for 1 pod: shop/web-2 (the proxy's metrics do not parse"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(meshed("web-1"), meshed("web-2"), pending, testPod("shop", "unmeshed", false))
			var mu sync.Mutex
			var asked []string
			client.AddProxyReactor("pods", func(action k8stesting.Action) (bool, rest.ResponseWrapper, error) {
				get := action.(k8stesting.ProxyGetAction)
				mu.Lock()
				asked = append(asked, fmt.Sprintf("%s/%s %s:%s/%s", get.GetNamespace(), get.GetName(), get.GetScheme(), get.GetPort(), get.GetPath()))
				mu.Unlock()
				return true, tc.answers[get.GetName()], nil
			})
			c := &checker{k: &kube{client: client}, ns: manifests.DefaultNamespace}
			r := runChecks(context.Background(), NewOptions(nil, nil, nil), []check{{category: "data-plane", name: "policy", run: func(ctx context.Context, _ *checker) (string, error) {
				return checkProxyPolicies(ctx, c)
			}}})
			got := r.Checks[0]
			if got.Status != tc.wantStatus || got.Detail != tc.wantDetail {
				t.Errorf("status %s, detail %q; want %s, %q (hint: %s)", got.Status, got.Detail, tc.wantStatus, tc.wantDetail, got.Hint)
			}
			for _, want := range tc.want {
				if !strings.Contains(got.Hint, want) {
					t.Errorf("hint:\n%s\nwant it to contain %q", got.Hint, want)
				}
			}
			slices.Sort(asked)
			if diff := cmp.Diff([]string{"shop/web-1 http:4191/metrics", "shop/web-2 http:4191/metrics"}, asked); diff != "" {
				t.Errorf("proxies asked (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPolicyReady(t *testing.T) {
	for _, tc := range []struct {
		name         string
		body         string
		ready, found bool
		wantErr      bool
	}{
		{name: "ready", body: "mesh_proxy_inbound_policy_ready 1\n", ready: true, found: true},
		{name: "typed gauge", body: "# TYPE mesh_proxy_inbound_policy_ready gauge\nmesh_proxy_inbound_policy_ready 1\n", ready: true, found: true},
		{name: "not yet", body: "mesh_proxy_inbound_policy_ready 0\n", found: true},
		{name: "absent", body: "other_metric 1\n"},
		{name: "garbage", body: "{{{", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ready, found, err := policyReady([]byte(tc.body))
			if ready != tc.ready || found != tc.found || (err != nil) != tc.wantErr {
				t.Errorf("got %v, %v, %v; want %v, %v, error %v", ready, found, err, tc.ready, tc.found, tc.wantErr)
			}
		})
	}
}

// The policy checks belong to an installed mesh, not to --pre.
func TestCheckListPolicy(t *testing.T) {
	names := func(pre bool) []string {
		var out []string
		for _, c := range checkList(pre) {
			out = append(out, c.name)
		}
		return out
	}
	for _, name := range []string{"policy.mesh.dev CRDs are installed and established", "data-plane proxies have received an inbound policy"} {
		if !slices.Contains(names(false), name) {
			t.Errorf("mesh check lacks %q", name)
		}
		if slices.Contains(names(true), name) {
			t.Errorf("mesh check --pre runs %q", name)
		}
	}
}

func TestCheckUnmeshedPods(t *testing.T) {
	ns := func(name string, annotations, labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations, Labels: labels}}
	}
	enabled := map[string]string{names.AnnotationInject: names.Enabled}
	optedOut := testPod("shop", "opted-out", false)
	optedOut.Annotations = map[string]string{names.AnnotationInject: names.Disabled}
	hostNet := testPod("shop", "host", false)
	hostNet.Spec.HostNetwork = true
	done := testPod("shop", "done", false)
	done.Status.Phase = corev1.PodSucceeded
	for _, tc := range []struct {
		name       string
		objects    []runtime.Object
		wantStatus checkStatus
		wantDetail string
		want       string
	}{
		{
			name: "all meshed",
			objects: []runtime.Object{ns("shop", enabled, nil), testPod("shop", "web-1", true), optedOut, hostNet, done,
				ns("plain", nil, nil), testPod("plain", "db", false)},
			wantStatus: statusOK, wantDetail: "1 meshed namespace",
		},
		{
			name:       "one created while the injector was down",
			objects:    []runtime.Object{ns("shop", enabled, nil), testPod("shop", "web-1", true), testPod("shop", "web-2", false)},
			wantStatus: statusWarn,
			want:       "1 pod in namespaces annotated mesh.dev/inject=enabled has no proxy, so its traffic is neither encrypted nor authorized: shop/web-2",
		},
		{
			name: "terminating namespace",
			objects: []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mesh-check-x", Annotations: enabled},
				Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}}},
			wantStatus: statusOK, wantDetail: "0 meshed namespaces",
		},
		{
			name:       "webhook-ignored namespace",
			objects:    []runtime.Object{ns("shop", enabled, map[string]string{names.LabelWebhook: names.WebhookIgnore}), testPod("shop", "web-2", false)},
			wantStatus: statusOK, wantDetail: "0 meshed namespaces",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &checker{k: &kube{client: fake.NewClientset(tc.objects...)}, ns: manifests.DefaultNamespace}
			r := runChecks(context.Background(), NewOptions(nil, nil, nil), []check{{category: "data-plane", name: "unmeshed", run: func(ctx context.Context, _ *checker) (string, error) {
				return checkUnmeshedPods(ctx, c)
			}}})
			got := r.Checks[0]
			if got.Status != tc.wantStatus || got.Detail != tc.wantDetail || !strings.Contains(got.Hint, tc.want) {
				t.Errorf("status %s, detail %q, hint %q; want %s, %q, containing %q", got.Status, got.Detail, got.Hint, tc.wantStatus, tc.wantDetail, tc.want)
			}
		})
	}
}
