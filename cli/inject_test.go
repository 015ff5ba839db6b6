package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/mesh-dev/mesh/install/inject"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/version"
)

const deploymentYAML = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        resources:
          requests: {cpu: "0.5"}
`

const serviceYAML = `# The web service: comments in untouched documents survive.
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - port: 80   # http
`

// injectAnnotationAt returns the mesh.dev/inject annotation at path of
// the decoded object, and whether it is there.
func injectAnnotationAt(obj map[string]any, path ...string) (string, bool) {
	v, ok, _ := unstructured.NestedString(obj, append(path, "metadata", "annotations", names.AnnotationInject)...)
	return v, ok
}

func TestInjectAnnotates(t *testing.T) {
	tmpl := []string{"spec", "template"}
	tests := []struct {
		name  string
		input string
		// want is, per output document, the template path that must carry
		// mesh.dev/inject=enabled; nil means the document must come out
		// byte for byte as it went in.
		want       [][]string
		wantReport []string
	}{
		{
			name:       "deployment and service",
			input:      deploymentYAML + "---\n" + serviceYAML,
			want:       [][]string{tmpl, nil},
			wantReport: []string{"deployment/web annotated"},
		},
		{
			name:  "every workload kind",
			input: workloads(),
			want: [][]string{
				{}, tmpl, tmpl, tmpl, tmpl, tmpl, tmpl,
				{"spec", "jobTemplate", "spec", "template"},
			},
			wantReport: []string{
				"pod/p annotated", "replicationcontroller/rc annotated", "deployment/d annotated", "statefulset/ss annotated",
				"daemonset/ds annotated", "replicaset/rs annotated", "job/j annotated", "cronjob/cj annotated",
			},
		},
		{
			name:       "leading separator, empty documents, comments only",
			input:      "---\n---\n# nothing here\n---\n" + deploymentYAML + "\n---\n",
			want:       [][]string{nil, tmpl},
			wantReport: []string{"deployment/web annotated"},
		},
		{
			name:       "pod opted out",
			input:      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    mesh.dev/inject: disabled\nspec:\n  containers: [{name: c, image: i}]\n",
			want:       [][]string{nil},
			wantReport: []string{"pod/p skipped: annotated mesh.dev/inject=disabled"},
		},
		{
			name:       "host network",
			input:      "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: i}]\n",
			want:       [][]string{nil},
			wantReport: []string{"pod/p skipped: uses hostNetwork, which the proxy cannot intercept"},
		},
		{
			name:       "already annotated",
			input:      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {mesh.dev/inject: enabled}\nspec:\n  containers: [{name: c, image: i}]\n",
			want:       [][]string{nil},
			wantReport: []string{"pod/p already annotated"},
		},
		{
			name:       "kind List",
			input:      "apiVersion: v1\nkind: List\nitems:\n- " + indentYAML(deploymentYAML, "  ")[2:] + "- " + indentYAML(serviceYAML, "  ")[2:],
			want:       [][]string{{"items"}},
			wantReport: []string{"deployment/web annotated"},
		},
		{
			name:       "JSON",
			input:      `{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}}}}`,
			want:       [][]string{tmpl},
			wantReport: []string{"job/j annotated"},
		},
		{
			name:  "custom resource of kind Deployment",
			input: "apiVersion: example.com/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template: {}\n",
			want:  [][]string{nil},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, report, err := run(t, tc.input, "inject")
			if err != nil {
				t.Fatal(err)
			}
			inDocs := nonEmptyDocs(tc.input)
			outDocs := nonEmptyDocs(out)
			if len(outDocs) != len(tc.want) {
				t.Fatalf("%d documents out, want %d:\n%s", len(outDocs), len(tc.want), out)
			}
			for i, path := range tc.want {
				if path == nil {
					if strings.TrimSpace(outDocs[i]) != strings.TrimSpace(inDocs[i]) {
						t.Errorf("document %d changed:\n%s\nwant:\n%s", i+1, outDocs[i], inDocs[i])
					}
					continue
				}
				obj := decodeDocs(t, []byte(outDocs[i]))[0]
				if len(path) > 0 && path[0] == "items" {
					items, _, _ := unstructured.NestedSlice(obj, "items")
					obj = items[0].(map[string]any)
					path = tmpl
				}
				if v, ok := injectAnnotationAt(obj, path...); !ok || v != names.Enabled {
					t.Errorf("document %d: %s=%q at %v, want enabled", i+1, names.AnnotationInject, v, path)
				}
			}
			if diff := cmp.Diff(tc.wantReport, nonEmptyLines(report)); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
		})
	}
}

// TestInjectKeepsFields: only the annotation is added; fields the user
// wrote in another form (a CPU of "0.5") stay as written.
func TestInjectKeepsFields(t *testing.T) {
	out, _, err := run(t, deploymentYAML, "inject")
	if err != nil {
		t.Fatal(err)
	}
	obj := decodeDocs(t, []byte(out))[0]
	cpu, _, _ := unstructured.NestedSlice(obj, "spec", "template", "spec", "containers")
	got := cpu[0].(map[string]any)["resources"].(map[string]any)["requests"].(map[string]any)["cpu"]
	if got != "0.5" {
		t.Errorf("cpu request rewritten to %v", got)
	}
	if _, ok, _ := unstructured.NestedFieldNoCopy(obj, "spec", "template", "metadata", "creationTimestamp"); ok {
		t.Error("creationTimestamp added to the template")
	}
}

func TestInjectErrors(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  string
	}{
		{name: "bad YAML", input: deploymentYAML + "---\nkind: [unclosed\n", want: "stdin: document 2"},
		{name: "workload without template", input: "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n", want: "deployment/d has no spec.template"},
		{name: "bad pod spec", input: "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: 3\n", want: "pod/p: pod template"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := run(t, tc.input, "inject")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if out != "" {
				t.Errorf("wrote output despite the error:\n%s", out)
			}
		})
	}
}

func TestInjectFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.yaml"), []byte(deploymentYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.yml"), []byte(serviceYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a manifest"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, deploymentYAML, "inject", "-f", dir, "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	if docs := nonEmptyDocs(out); len(docs) != 3 {
		t.Fatalf("%d documents, want a.yaml, b.yml and stdin's:\n%s", len(docs), out)
	}
	if _, _, err := run(t, "", "inject", "-f", filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("no error for a missing file")
	}
}

// TestInjectManual: --manual writes the pod exactly as the injector's
// package does for the same template.
func TestInjectManual(t *testing.T) {
	out, report, err := run(t, deploymentYAML+"---\n"+serviceYAML, "inject", "--manual", "--registry", "localhost:5000/m", "--version", "v9.9.9")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"deployment/web injected"}, nonEmptyLines(report)); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	docs := decodeDocs(t, []byte(out))
	var got corev1.PodTemplateSpec
	tmpl, _, _ := unstructured.NestedMap(docs[0], "spec", "template")
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, &got); err != nil {
		t.Fatal(err)
	}

	var want corev1.PodTemplateSpec
	in := decodeDocs(t, []byte(deploymentYAML))[0]
	tmpl, _, _ = unstructured.NestedMap(in, "spec", "template")
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, &want); err != nil {
		t.Fatal(err)
	}
	want.Annotations = map[string]string{names.AnnotationInject: names.Enabled}
	ns := &corev1.Namespace{}
	ns.Name = "shop"
	if _, err := inject.PodTemplate(&want.ObjectMeta, &want.Spec, ns, inject.Config{
		ProxyImage: "localhost:5000/m/mesh-proxy:v9.9.9", Version: "v9.9.9", ControlPlaneNamespace: "mesh-system",
	}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pod template (-injector +mesh inject --manual):\n%s", diff)
	}
	if got.Annotations[names.AnnotationProxyVersion] != "v9.9.9" || len(got.Spec.InitContainers) == 0 {
		t.Errorf("not injected: %+v", got.ObjectMeta)
	}
}

func TestInjectImageFlagsNeedManual(t *testing.T) {
	_, _, err := run(t, deploymentYAML, "inject", "--version", "v2")
	if err == nil || !strings.Contains(err.Error(), "go with --manual") {
		t.Fatalf("err = %v", err)
	}
}

func TestInjectFlags(t *testing.T) {
	got := defaultInjectOptions()
	cmd := newInjectCmd(NewOptions(nil, nil, nil))
	if err := cmd.ParseFlags([]string{"-f", "a.yaml", "--filename", "b.yaml", "--manual", "--registry", "r", "--version", "v2"}); err != nil {
		t.Fatal(err)
	}
	fs := cmd.Flags()
	got.Files, _ = fs.GetStringSlice("filename")
	got.Manual, _ = fs.GetBool("manual")
	got.Registry, _ = fs.GetString("registry")
	got.Version, _ = fs.GetString("version")
	want := injectOptions{Files: []string{"a.yaml", "b.yaml"}, Manual: true, Registry: "r", Version: "v2"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if d := defaultInjectOptions(); d.Version != version.Version {
		t.Errorf("default version %q", d.Version)
	}
}

func workloads() string {
	pod := "spec:\n  containers: [{name: c, image: i}]\n"
	tmpl := "spec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: c, image: i}]\n"
	docs := []string{
		"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n" + pod,
		"apiVersion: v1\nkind: ReplicationController\nmetadata: {name: rc}\n" + tmpl,
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n" + tmpl,
		"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: ss}\n" + tmpl,
		"apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: ds}\n" + tmpl,
		"apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs}\n" + tmpl,
		"apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\n" + tmpl,
		"apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: cj}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers: [{name: c, image: i}]\n",
	}
	return strings.Join(docs, "---\n")
}

// nonEmptyDocs splits on document separators, dropping blank documents.
func nonEmptyDocs(s string) []string {
	var out []string
	for _, d := range strings.Split("\n"+s, "\n---") {
		if strings.TrimSpace(d) != "" {
			out = append(out, strings.TrimPrefix(d, "\n"))
		}
	}
	return out
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

func indentYAML(s, pad string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = pad + l
	}
	return strings.Join(lines, "\n") + "\n"
}

// FuzzInjectDocument feeds `mesh inject` arbitrary documents: it must not
// panic, and what it writes must come through a second pass unchanged
// (annotating is idempotent).
func FuzzInjectDocument(f *testing.F) {
	f.Add([]byte(deploymentYAML))                                      // a workload
	f.Add([]byte(serviceYAML))                                         // passes through
	f.Add([]byte("apiVersion: v1\nkind: List\nitems:\n- kind: Pod\n")) // a List of a broken Pod
	f.Add([]byte(`{"apiVersion": "batch/v1", "kind": "CronJob", "spec": {"jobTemplate": 3}}`))
	f.Add([]byte("kind: [unclosed\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		first, err := injectDocument(doc, annotate)
		if err != nil {
			return
		}
		second, err := injectDocument(first.doc, annotate)
		if err != nil {
			t.Fatalf("the output of the first pass does not inject again: %v\n%s", err, first.doc)
		}
		if string(second.doc) != string(first.doc) {
			t.Fatalf("second pass changed the document:\n%s\nto:\n%s", first.doc, second.doc)
		}
	})
}
