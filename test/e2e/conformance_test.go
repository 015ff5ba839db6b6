package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// TestConformance is issue 14's test 1: the Gateway API conformance suite
// of the CRDs' version, profiles MESH-HTTP and MESH-GRPC with the extended
// features mesh claims (test/conformance/options_test.go), against this
// cluster with mesh installed. The suite is a module of its own
// (test/conformance), so it runs as its own go test; it writes its report
// to docs/conformance/. Its namespaces are its own, so it runs beside the
// other tests.
func TestConformance(t *testing.T) {
	needEnv(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)

	dir := filepath.Join(e2e.root, "test", "conformance")
	report := filepath.Join(e2e.root, "docs", "conformance", "mesh-"+e2e.version+"-report.yaml")
	os.Remove(report) // a report left from another run proves nothing
	cmd := exec.CommandContext(ctx, "go", "test", "-tags", "conformance", "-count=1", "-v",
		"-run", "^TestConformance$", "-timeout", "15m", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e2e.kubeconfig)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	results := suiteResults(out.Bytes())
	t.Logf("conformance suite: %s in %s; mesh tests: %d passed, %d failed, %d skipped",
		exitOf(err), time.Since(start).Round(time.Second), len(results["PASS"]), len(results["FAIL"]), len(results["SKIP"]))
	for _, name := range results["PASS"] {
		t.Logf("  PASS %s", name)
	}
	if err != nil || len(results["FAIL"]) > 0 {
		t.Errorf("the conformance suite failed (%s); failed: %v; its output ends:\n%s", exitOf(err), results["FAIL"], tail(out.Bytes(), 120))
	}
	// A claimed feature's test that the suite skipped would pass unseen.
	if len(results["SKIP"]) > 0 {
		t.Errorf("mesh tests skipped: %v (a claimed feature's test must run)", results["SKIP"])
	}
	// The 22 mesh tests of v1.6.3 (docs/traffic.md 4.1).
	if n := len(results["PASS"]); n < 22 {
		t.Errorf("%d mesh tests passed, want the suite's 22", n)
	}
	checkReport(t, report)
}

// suiteResults are the suite's top-level Mesh* test names by result.
func suiteResults(out []byte) map[string][]string {
	re := regexp.MustCompile(`^\s+--- (PASS|FAIL|SKIP): TestConformance/(Mesh\w*) `)
	res := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			res[m[1]] = append(res[m[1]], m[2])
		}
	}
	return res
}

// checkReport reads the suite's ConformanceReport and wants every profile
// to have succeeded, core and extended, with nothing skipped.
func checkReport(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("the suite's report: %v", err)
		return
	}
	type result struct {
		Result     string         `json:"result"`
		Statistics map[string]int `json:"statistics"`
	}
	var r struct {
		GatewayAPIVersion string `json:"gatewayAPIVersion"`
		Profiles          []struct {
			Name     string  `json:"name"`
			Core     result  `json:"core"`
			Extended *result `json:"extended"`
		} `json:"profiles"`
	}
	if err := yaml.Unmarshal(b, &r); err != nil {
		t.Errorf("the suite's report %s: %v", path, err)
		return
	}
	seen := map[string]bool{}
	for _, p := range r.Profiles {
		seen[p.Name] = true
		results := []result{p.Core}
		if p.Extended != nil {
			results = append(results, *p.Extended)
		}
		for _, res := range results {
			if res.Result != "success" || res.Statistics["Failed"] > 0 || res.Statistics["Skipped"] > 0 {
				t.Errorf("report %s, profile %s: %s, %v", path, p.Name, res.Result, res.Statistics)
			}
		}
		t.Logf("report: Gateway API %s, profile %s: core %s %v", r.GatewayAPIVersion, p.Name, p.Core.Result, p.Core.Statistics)
	}
	for _, want := range []string{"MESH-HTTP", "MESH-GRPC"} {
		if !seen[want] {
			t.Errorf("report %s has no profile %s", path, want)
		}
	}
}

func exitOf(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// tail is the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
