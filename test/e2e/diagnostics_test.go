package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The namespaces of TestDiagnostics: a meshed one with a server and a
// client that calls it (so the client's proxy has a destination to show),
// and one outside the mesh.
const (
	diagNS      = "e2e-diag"
	diagPlainNS = "e2e-diag-plain"
)

// TestDiagnostics is issue 15's `mesh diagnostics` against live proxies:
// each subcommand's -o json has the shape of the CLI's golden files
// (cli/testdata/diagnostics_*.json.golden) and says what this pod is;
// the tables print; a pod without a proxy gets the error that says so;
// and `mesh check --proxy -n` passes its proxy checks for the namespace.
func TestDiagnostics(t *testing.T) {
	needEnv(t)
	t.Parallel() // alongside the other tests that leave the mesh as they found it (main_test.go)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	server := demoApp{ns: diagNS, name: "echo", args: []string{"echo"}, port: 8080, portName: "http"}
	client := demoApp{ns: diagNS, name: "caller", args: []string{"loadgen", "--target", fmt.Sprintf("echo.%s.svc.cluster.local:8080", diagNS),
		"--path", "/", "--rps", "2", "--max-failures", "-1"}}
	plain := demoApp{ns: diagPlainNS, name: "plain", args: []string{"echo"}, port: 8080, portName: "http"}
	manifest := strings.Join([]string{
		namespaceManifest(diagNS), plainNamespaceManifest(diagPlainNS), server.manifest(), client.manifest(), plain.manifest(),
	}, "---\n")
	mustRun(t, ctx, []byte(manifest), e2e.kubectl, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		for _, ns := range []string{diagNS, diagPlainNS} {
			deleteNamespace(t, ctx, ns)
		}
	})
	for _, ns := range []string{diagNS, diagPlainNS} {
		waitDeployments(t, ctx, ns, 3*time.Minute)
	}
	echo := runningPods(t, ctx, diagNS, "app=echo")[0]
	caller := runningPods(t, ctx, diagNS, "app=caller")[0]
	unmeshed := runningPods(t, ctx, diagPlainNS, "app=plain")[0]

	diag := func(sub, pod string, args ...string) result {
		return command(ctx, nil, nil, e2e.mesh, append([]string{"diagnostics", sub, "-n", diagNS, pod}, args...)...)
	}
	diagJSON := func(t *testing.T, sub, pod string) map[string]any {
		t.Helper()
		r := diag(sub, pod, "-o", "json")
		if r.err != nil {
			t.Fatalf("mesh diagnostics %s %s -o json: %v\n%s", sub, pod, r.err, r.stderr)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("mesh diagnostics %s -o json: %v\n%s", sub, err, r.stdout)
		}
		checkShape(t, sub, got)
		if got["namespace"] != diagNS || got["pod"] != pod {
			t.Errorf("%s: namespace %v, pod %v; want %s/%s", sub, got["namespace"], got["pod"], diagNS, pod)
		}
		if strings.Contains(r.stdout, "PRIVATE KEY") {
			t.Errorf("%s printed a private key", sub)
		}
		return got
	}

	t.Run("proxy-metrics", func(t *testing.T) {
		got := diagJSON(t, "proxy-metrics", echo.Name)
		var families []string
		for _, f := range got["families"].([]any) {
			families = append(families, f.(map[string]any)["name"].(string))
		}
		for _, want := range []string{"mesh_proxy_inbound_policy_ready", "mesh_proxy_http_requests_total"} {
			if !slices.Contains(families, want) {
				t.Errorf("no family %s among %v", want, families)
			}
		}
		if r := diag("proxy-metrics", echo.Name); r.err != nil || !strings.Contains(r.stdout, "# TYPE mesh_proxy_inbound_policy_ready gauge") {
			t.Errorf("text output: %v\n%s", r.err, r.stdout)
		}
	})
	t.Run("endpoints", func(t *testing.T) {
		// The caller's proxy asks for echo's endpoints on its first request,
		// by the address the connection was going to: echo's Service's
		// cluster IP and port (a route's backend would be asked for by name).
		want := serviceAddr(t, ctx, diagNS, "echo")
		poll(t, ctx, time.Minute, "the caller's proxy to show echo's endpoint", func(context.Context) (bool, string, error) {
			got := diagJSON(t, "endpoints", caller.Name)
			for _, d := range got["destinations"].([]any) {
				d := d.(map[string]any)
				if d["authority"] != want {
					continue
				}
				for _, ep := range d["endpoints"].([]any) {
					ep := ep.(map[string]any)
					if strings.HasPrefix(ep["addr"].(string), echo.Status.PodIP+":") &&
						ep["identity"] == fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/default", diagNS) {
						return true, "", nil
					}
				}
				return false, fmt.Sprintf("%s has no endpoint %s with echo's identity: %v", want, echo.Status.PodIP, d["endpoints"]), nil
			}
			return false, "no destination " + want, nil
		})
		if r := diag("endpoints", caller.Name); r.err != nil || !strings.Contains(r.stdout, want) {
			t.Errorf("table: %v\n%s", r.err, r.stdout)
		}
	})
	t.Run("policy", func(t *testing.T) {
		got := diagJSON(t, "policy", echo.Name)
		pol, _ := got["policy"].(map[string]any)
		if got["received"] != true || pol == nil || pol["default_policy"] != "all-unauthenticated" {
			t.Errorf("policy %v, want one received with the install's default all-unauthenticated", got)
		}
		if r := diag("policy", echo.Name); r.err != nil || !strings.Contains(r.stdout, "default policy all-unauthenticated") {
			t.Errorf("table: %v\n%s", r.err, r.stdout)
		}
	})
	t.Run("identity", func(t *testing.T) {
		got := diagJSON(t, "identity", echo.Name)
		id := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/default", diagNS)
		chain, _ := got["chain"].([]any)
		anchors, _ := got["trust_anchors"].([]any)
		if got["spiffe_id"] != id || len(chain) < 2 || len(anchors) == 0 {
			t.Errorf("identity %v; want %s with its chain (leaf and issuer) and trust anchors", got, id)
		}
		if r := diag("identity", echo.Name); r.err != nil || !strings.Contains(r.stdout, id) {
			t.Errorf("table: %v\n%s", r.err, r.stdout)
		}
	})
	t.Run("not meshed", func(t *testing.T) {
		r := command(ctx, nil, nil, e2e.mesh, "diagnostics", "policy", "-n", diagPlainNS, unmeshed.Name)
		want := fmt.Sprintf("pod %s/%s has no mesh-proxy container; is it injected?", diagPlainNS, unmeshed.Name)
		if r.err == nil || !strings.Contains(r.stderr, want) {
			t.Errorf("mesh diagnostics policy of an unmeshed pod: %v\n%s\nwant %q", r.err, r.stderr, want)
		}
	})
	t.Run("check --proxy", func(t *testing.T) {
		// Other checks may fail for what tests running alongside do; the
		// proxy checks of this namespace must pass.
		r := command(ctx, nil, nil, e2e.mesh, "check", "--proxy", "-n", diagNS, "-o", "json")
		var report struct {
			Checks []struct {
				Category, Name, Status, Detail, Hint string
			}
		}
		if err := json.Unmarshal([]byte(r.stdout), &report); err != nil {
			t.Fatalf("mesh check --proxy -o json: %v (%v)\n%s%s", err, r.err, r.stdout, r.stderr)
		}
		n := 0
		for _, c := range report.Checks {
			if c.Category != "proxies" {
				continue
			}
			n++
			if c.Status != "ok" {
				t.Errorf("%s: %s (%s)\n%s", c.Name, c.Status, c.Detail, c.Hint)
			}
		}
		if n != 5 {
			t.Errorf("%d proxy checks ran, want 5:\n%s", n, r.stdout)
		}
	})
}

// checkShape compares the shape of a live -o json answer with the golden
// the CLI's unit tests hold for it: every key path both have must hold
// the same JSON type, and the paths the golden has at the top level must
// all be there. Values differ (another pod, another time); optional
// fields may be absent on either side.
func checkShape(t *testing.T, sub string, got map[string]any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e2e.root, "cli", "testdata", "diagnostics_"+sub+".json.golden"))
	if err != nil {
		t.Fatal(err)
	}
	var golden map[string]any
	if err := json.Unmarshal(b, &golden); err != nil {
		t.Fatalf("%s golden: %v", sub, err)
	}
	want, have := map[string]map[string]bool{}, map[string]map[string]bool{}
	shape("", golden, want)
	shape("", got, have)
	for path, types := range have {
		if wantTypes, ok := want[path]; ok && !subset(types, wantTypes) {
			t.Errorf("%s: %s is %v, the golden's %v", sub, path, keys(types), keys(wantTypes))
		}
	}
	for key := range golden {
		if _, ok := got[key]; !ok {
			t.Errorf("%s: no %q at the top level", sub, key)
		}
	}
}

// shape records the JSON type of every value under v by its path: object
// keys joined by ".", array items as "[]".
func shape(path string, v any, out map[string]map[string]bool) {
	typ := "null"
	switch v := v.(type) {
	case map[string]any:
		typ = "object"
		for k, e := range v {
			shape(path+"."+k, e, out)
		}
	case []any:
		typ = "array"
		for _, e := range v {
			shape(path+"[]", e, out)
		}
	case string:
		typ = "string"
	case float64:
		typ = "number"
	case bool:
		typ = "bool"
	}
	if out[path] == nil {
		out[path] = map[string]bool{}
	}
	out[path][typ] = true
}

func subset(a, b map[string]bool) bool {
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
