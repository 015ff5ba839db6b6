package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/mesh-dev/mesh/install/inject"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/version"
)

// injectOptions are the flags of `mesh inject`.
type injectOptions struct {
	// Files are read in order; "-" is standard input. None means stdin.
	Files []string
	// Manual adds the proxy containers instead of the annotation.
	Manual bool
	// Registry and Version make the proxy image of --manual.
	Registry string
	Version  string
}

func defaultInjectOptions() injectOptions {
	return injectOptions{Registry: manifests.DefaultRegistry, Version: version.Version}
}

func (opts *injectOptions) addFlags(f *pflag.FlagSet) {
	f.StringSliceVarP(&opts.Files, "filename", "f", nil, "file or directory of manifests to inject; - is standard input (default)")
	f.BoolVar(&opts.Manual, "manual", false, "add the proxy containers to the pod templates instead of the "+names.AnnotationInject+" annotation")
	f.StringVar(&opts.Registry, "registry", opts.Registry, "with --manual: registry of the mesh-proxy image")
	f.StringVar(&opts.Version, "version", opts.Version, "with --manual: version (tag) of the mesh-proxy image")
}

func newInjectCmd(o *Options) *cobra.Command {
	opts := defaultInjectOptions()
	cmd := &cobra.Command{
		Use:   "inject [-f FILE|-]",
		Short: "Add the mesh to the workloads of Kubernetes manifests",
		Long: "inject reads manifests (YAML or JSON, several documents, kind: List) and writes them\n" +
			"back with " + names.AnnotationInject + ": " + names.Enabled + " on the pod template of every Pod, Deployment,\n" +
			"StatefulSet, DaemonSet, ReplicaSet, Job and CronJob, so the injector adds the proxy\n" +
			"when they are applied. Other objects pass through unchanged. With --manual it adds\n" +
			"the proxy containers itself, exactly as the injector would. What it did to each\n" +
			"workload is reported on standard error.",
		Example: "  mesh inject -f app.yaml | kubectl apply -f -\n" +
			"  kubectl get deploy -n shop -o yaml | mesh inject | kubectl apply -f -",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !opts.Manual && (cmd.Flags().Changed("registry") || cmd.Flags().Changed("version")) {
				return errors.New("--registry and --version go with --manual")
			}
			t, err := opts.transformer(o.ControlPlaneNamespace)
			if err != nil {
				return err
			}
			files := opts.Files
			if len(files) == 0 {
				files = []string{"-"}
			}
			for _, f := range files {
				if err := injectFile(f, o, t); err != nil {
					return err
				}
			}
			return nil
		},
	}
	opts.addFlags(cmd.Flags())
	return cmd
}

// podTransform changes one pod template in place, given the namespace the
// workload is in, and says what it did for the report.
type podTransform func(tmpl *corev1.PodTemplateSpec, namespace string) (string, error)

func (opts *injectOptions) transformer(controlPlaneNS string) (podTransform, error) {
	if !opts.Manual {
		return annotate, nil
	}
	cfg := inject.Config{
		ProxyImage:            manifests.Values{Registry: strings.TrimSuffix(opts.Registry, "/"), Version: opts.Version}.ProxyImage(),
		Version:               opts.Version,
		ControlPlaneNamespace: controlPlaneNS,
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return func(tmpl *corev1.PodTemplateSpec, namespace string) (string, error) {
		// The annotation makes the pod opt in whatever its namespace says.
		tmpl.Annotations = withAnnotation(tmpl.Annotations, names.AnnotationInject, names.Enabled)
		ns := &corev1.Namespace{}
		ns.Name = namespace
		res, err := inject.PodTemplate(&tmpl.ObjectMeta, &tmpl.Spec, ns, cfg)
		if err != nil {
			return "", err
		}
		msg := "injected"
		if !res.Injected {
			msg = "skipped: " + res.Reason
		}
		if len(res.Warnings) > 0 {
			msg += " (warning: " + strings.Join(res.Warnings, "; ") + ")"
		}
		return msg, nil
	}, nil
}

// annotate opts the pod template in, unless it opted out or cannot be
// injected.
func annotate(tmpl *corev1.PodTemplateSpec, _ string) (string, error) {
	switch {
	case tmpl.Annotations[names.AnnotationInject] == names.Disabled:
		return "skipped: annotated " + names.AnnotationInject + "=" + names.Disabled, nil
	case tmpl.Spec.HostNetwork:
		return "skipped: uses hostNetwork, which the proxy cannot intercept", nil
	case tmpl.Annotations[names.AnnotationInject] == names.Enabled:
		return "already annotated", nil
	}
	tmpl.Annotations = withAnnotation(tmpl.Annotations, names.AnnotationInject, names.Enabled)
	return "annotated", nil
}

func withAnnotation(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

// injectFile transforms one file, a directory's manifest files, or stdin.
func injectFile(path string, o *Options, t podTransform) error {
	if path == "-" {
		if f, ok := o.In.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return errors.New("no manifests: pass -f FILE, or pipe them in (kubectl get deploy -o yaml | mesh inject)")
		}
		return injectStream("stdin", o.In, o.Out, o.Err, t)
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	paths := []string{path}
	if info.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		paths = nil
		for _, e := range entries {
			if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
				paths = append(paths, filepath.Join(path, e.Name()))
			}
		}
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = injectStream(p, f, o.Out, o.Err, t)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// injectStream transforms the documents of r into w, reporting each
// workload on report. A document that changes is written back as YAML;
// one that does not is copied byte for byte, comments included. A
// document that is not valid YAML stops everything: nothing is dropped.
func injectStream(name string, r io.Reader, w, report io.Writer, t podTransform) error {
	docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var out bytes.Buffer
	for n := 1; ; n++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", name, n, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		res, err := injectDocument(doc, t)
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", name, n, err)
		}
		for _, line := range res.report {
			fmt.Fprintln(report, line)
		}
		out.WriteString("---\n")
		out.Write(res.doc)
		if !bytes.HasSuffix(res.doc, []byte("\n")) {
			out.WriteByte('\n')
		}
	}
	_, err := w.Write(out.Bytes())
	return err
}

// docResult is one transformed document and its report lines.
type docResult struct {
	doc    []byte
	report []string
}

// injectDocument transforms one YAML or JSON document.
func injectDocument(doc []byte, t podTransform) (docResult, error) {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return docResult{}, err
	}
	var obj map[string]any
	if err := yaml.Unmarshal(j, &obj); err != nil || obj == nil {
		return docResult{doc: doc}, nil // a comment-only document or a scalar: not ours to judge
	}
	var report []string
	changed, err := injectObject(obj, t, &report)
	if err != nil || !changed {
		return docResult{doc: doc, report: report}, err
	}
	b, err := yaml.Marshal(obj)
	return docResult{doc: b, report: report}, err
}

// templatePaths are where the pod template of each workload kind lives;
// nil means the object is itself the pod.
var templatePaths = map[schema.GroupKind][]string{
	{Group: "", Kind: "Pod"}:                   nil,
	{Group: "", Kind: "ReplicationController"}: {"spec", "template"},
	{Group: "apps", Kind: "Deployment"}:        {"spec", "template"},
	{Group: "apps", Kind: "StatefulSet"}:       {"spec", "template"},
	{Group: "apps", Kind: "DaemonSet"}:         {"spec", "template"},
	{Group: "apps", Kind: "ReplicaSet"}:        {"spec", "template"},
	{Group: "batch", Kind: "Job"}:              {"spec", "template"},
	{Group: "batch", Kind: "CronJob"}:          {"spec", "jobTemplate", "spec", "template"},
}

// injectObject transforms obj in place, recursing into the items of a
// List, and reports whether anything changed.
func injectObject(obj map[string]any, t podTransform, report *[]string) (bool, error) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return false, nil // not a Kubernetes object: pass it through
	}
	if strings.HasSuffix(kind, "List") {
		items, _ := obj["items"].([]any)
		changed := false
		for i, item := range items {
			m, ok := item.(map[string]any)
			if !ok {
				continue
			}
			c, err := injectObject(m, t, report)
			if err != nil {
				return false, fmt.Errorf("item %d: %w", i+1, err)
			}
			changed = changed || c
		}
		return changed, nil
	}
	path, ok := templatePaths[schema.GroupKind{Group: gv.Group, Kind: kind}]
	if !ok && gv.Group == "extensions" { // pre-apps/v1 manifests
		path, ok = templatePaths[schema.GroupKind{Group: "apps", Kind: kind}]
	}
	if !ok {
		return false, nil
	}
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	namespace, _ := meta["namespace"].(string)
	label := strings.ToLower(kind) + "/" + name

	tmpl := obj
	for _, p := range path {
		next, ok := tmpl[p].(map[string]any)
		if !ok {
			return false, fmt.Errorf("%s has no %s", label, strings.Join(path, "."))
		}
		tmpl = next
	}
	changed, msg, err := transformTemplate(tmpl, namespace, t)
	if err != nil {
		return false, fmt.Errorf("%s: %w", label, err)
	}
	*report = append(*report, label+" "+msg)
	return changed, nil
}

// transformTemplate runs t on a pod template given as a map (a Pod's own
// metadata and spec, or a workload's template) and writes back only the
// metadata and spec fields that changed, so everything else stays as the
// user wrote it.
func transformTemplate(tmpl map[string]any, namespace string, t podTransform) (bool, string, error) {
	view := map[string]any{"metadata": tmpl["metadata"], "spec": tmpl["spec"]}
	var typed corev1.PodTemplateSpec
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(view, &typed); err != nil {
		return false, "", fmt.Errorf("pod template: %w", err)
	}
	before, err := runtime.DefaultUnstructuredConverter.ToUnstructured(typed.DeepCopy())
	if err != nil {
		return false, "", err
	}
	msg, err := t(&typed, namespace)
	if err != nil {
		return false, "", err
	}
	after, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&typed)
	if err != nil {
		return false, "", err
	}
	changed := false
	for _, section := range []string{"metadata", "spec"} {
		b, _ := before[section].(map[string]any)
		a, _ := after[section].(map[string]any)
		orig, _ := tmpl[section].(map[string]any)
		for _, k := range unionKeys(a, b) {
			if reflect.DeepEqual(a[k], b[k]) {
				continue
			}
			if orig == nil {
				orig = map[string]any{}
				tmpl[section] = orig
			}
			if v, ok := a[k]; ok {
				orig[k] = v
			} else {
				delete(orig, k)
			}
			changed = true
		}
	}
	return changed, msg, nil
}

func unionKeys(a, b map[string]any) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
